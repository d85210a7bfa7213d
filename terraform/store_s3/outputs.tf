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
  value       = data.aws_region.current.name
}

output "store_url" {
  description = "URL of the store root: s3://<bucket>/<prefix>."
  value       = "s3://${aws_s3_bucket.store.id}/${var.prefix}"
}

output "host_read_policy_json" {
  description = "IAM policy document (JSON): GetObject on <prefix>/*, ListBucket restricted to <prefix>/. Read access to every remote of the store."
  value       = jsonencode(local.host_read_policy)
}

output "host_read_policy_arn" {
  description = "ARN of the IAM policy created from host_read_policy_json (null when create_host_read_policy = false)."
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
