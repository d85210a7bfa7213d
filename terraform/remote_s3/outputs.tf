output "name" {
  description = "Name of the remote."
  value       = var.name
}

output "url" {
  description = "Remote URL for npcnix: s3://<bucket>/<prefix>/remotes/<name>."
  value       = module.policy.url
}

output "key_prefix" {
  description = "Key prefix of the remote inside the bucket."
  value       = module.policy.key_prefix
}

output "read_policy_json" {
  description = "IAM policy document (JSON) for hosts following this remote: GetObject under the remote, ListBucket restricted to it."
  value       = module.policy.read_policy_json
}

output "write_policy_json" {
  description = "IAM policy document (JSON) for publishers of this remote: PutObject on archives/*, releases/* (If-None-Match required) and latest (If-Match or If-None-Match required), GetObject under the remote, ListBucket; no DeleteObject."
  value       = module.policy.write_policy_json
}

output "read_policy_arn" {
  description = "ARN of the IAM policy created from read_policy_json (null when create_policies = false)."
  value       = one(aws_iam_policy.read[*].arn)
}

output "write_policy_arn" {
  description = "ARN of the IAM policy created from write_policy_json (null when create_policies = false)."
  value       = one(aws_iam_policy.write[*].arn)
}

output "hosts_prefix" {
  description = "Key prefix of this remote's host receipts: <prefix>/remotes/<name>/hosts/."
  value       = module.policy.hosts_prefix
}

output "fleet_status_policy_json" {
  description = "IAM policy document (JSON) for operators running `npcnix fleet status`: ListBucket restricted to <remote>/hosts/, GetObject on <remote>/hosts/*; no write. Publishers' write policy already allows both."
  value       = module.policy.fleet_status_policy_json
}

output "fleet_status_policy_arn" {
  description = "ARN of the IAM policy created from fleet_status_policy_json (null when create_policies = false)."
  value       = one(aws_iam_policy.fleet_status[*].arn)
}

output "shared_receipt_policy_json" {
  description = "IAM policy document (JSON) for hosts sharing one role: PutObject on any <remote>/hosts/<id>.json, nothing below hosts/, nothing else. Weaker than a per-host grant: a host can overwrite (not forge) another host's receipt."
  value       = module.policy.shared_receipt_policy_json
}

output "shared_receipt_policy_arn" {
  description = "ARN of the IAM policy created from shared_receipt_policy_json (null unless create_policies and create_shared_receipt_policy)."
  value       = one(aws_iam_policy.shared_receipt[*].arn)
}
