output "bucket" {
  description = "Name of the store bucket."
  value       = aws_s3_bucket.store.id
}

output "bucket_arn" {
  description = "ARN of the store bucket."
  value       = aws_s3_bucket.store.arn
}

output "prefix" {
  description = "Key prefix of the store inside the bucket."
  value       = var.prefix
}

output "region" {
  description = "Region of the bucket (pass it to hosts and publishers as --remote-region)."
  value       = aws_s3_bucket.store.region
}

output "store_url" {
  description = "URL of the store root: s3://<bucket>/<prefix>."
  value       = "s3://${aws_s3_bucket.store.id}/${var.prefix}"
}

output "host_read_policy_json" {
  description = "IAM policy document (JSON): GetObject on <prefix>/*, ListBucket restricted to <prefix>/ (and kms:Decrypt via S3 with kms_key_arn). Read access to every remote of the store: a host holding it can read prod as well as dev. Prefer remote_s3's per-remote read policy."
  value       = jsonencode(local.host_read_policy)
}

output "host_read_policy_arn" {
  description = "ARN of the IAM policy created from host_read_policy_json; null unless create_host_read_policy = true."
  value       = one(aws_iam_policy.host_read[*].arn)
}

output "remote_write_policy_json" {
  description = "Map remote name => IAM policy document (JSON) allowing to publish to exactly that remote (create-only archives and releases, compare-and-swap latest, no delete), for each name in writer_remotes."
  value       = { for name, m in module.writer_policy : name => m.write_policy_json }
}

output "object_lock" {
  description = "The Object Lock default retention in force (null: none)."
  value       = var.object_lock
}

output "kms_key_arn" {
  description = "The KMS key objects are encrypted with (SSE-KMS), or null for SSE-S3. Per-remote policies (remote_s3) need it as kms_key_arn."
  value       = var.kms_key_arn
}
