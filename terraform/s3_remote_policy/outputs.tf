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

output "hosts_prefix" {
  description = "Key prefix of the host receipts of this remote: <prefix>/remotes/<remote>/hosts/ (what `npcnix fleet status` lists)."
  value       = local.hosts_prefix
}

output "receipt_key" {
  description = "Key of host_id's receipt: <prefix>/remotes/<remote>/hosts/<host_id>.json (null without host_id)."
  value       = var.host_id == null ? null : "${local.hosts_prefix}${var.host_id}.json"
}

output "host_receipt_policy_json" {
  description = "IAM policy document (JSON) for the host host_id, next to read_policy_json: PutObject on exactly <remote>/hosts/<host_id>.json (plain PUT, create or overwrite); no other key, no delete, no list. null without host_id."
  value       = var.host_id == null ? null : jsonencode(local.host_receipt_policy)
}

output "shared_receipt_policy_json" {
  description = "IAM policy document (JSON) for hosts that share one role: PutObject on any <remote>/hosts/<id>.json (none below hosts/). Weaker than host_receipt_policy_json: a host holding it can overwrite (not forge: receipts are signed) another host's receipt. Prefer one role per host."
  value       = jsonencode(local.shared_receipt_policy)
}

output "fleet_status_policy_json" {
  description = "IAM policy document (JSON) for operators running `npcnix fleet status`: ListBucket restricted to <remote>/hosts/, GetObject on <remote>/hosts/*; no write. (The write policy already allows both.)"
  value       = jsonencode(local.fleet_status_policy)
}

output "timestamp_policy_json" {
  description = "IAM policy document (JSON) for the scheduled freshness refresh (`npcnix timestamp`, an online timestamp key): GetObject on the remote, ListBucket, PutObject on exactly <remote>/latest with If-Match (compare-and-swap); no archive, release or delete; GetSecretValue on timestamp_key_secret_arn when set."
  value       = jsonencode(local.timestamp_policy)
}

output "rollout_policy_json" {
  description = "IAM policy document (JSON) for gated rollouts (`npcnix release promote` / `halt`, a key with role \"rollout\"): GetObject on the remote, ListBucket, PutObject on <remote>/rollouts/* only; no latest, release, archive or delete."
  value       = jsonencode(local.rollout_policy)
}
