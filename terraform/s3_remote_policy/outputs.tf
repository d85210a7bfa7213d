output "key_prefix" {
  description = "Key prefix of the remote inside the bucket: <prefix>/remotes/<remote>."
  value       = local.key_prefix
}

output "url" {
  description = "Remote URL for npcnix (s3://<bucket>/<prefix>/remotes/<remote>)."
  value       = "s3://${var.bucket}/${local.key_prefix}"
}

output "read_policy_json" {
  description = "IAM policy document (JSON) for hosts following this remote: GetObject on the remote, ListBucket restricted to its prefix."
  value       = jsonencode(local.read_policy)
}

output "write_policy_json" {
  description = "IAM policy document (JSON) for publishers of this remote: create-only archives/releases, compare-and-swap latest, no delete."
  value       = jsonencode(local.write_policy)
}
