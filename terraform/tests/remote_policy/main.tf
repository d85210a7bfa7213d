# The per-remote IAM policies, evaluated offline. terraform/check asserts
# what they allow: nothing outside the remote, no delete, conditional writes.
module "prod" {
  source = "../../s3_remote_policy"

  bucket = "example-bucket"
  prefix = "npcnix/fleet"
  remote = "prod"

  # The receipt policy of one host (the instance module passes its host_id).
  host_id = "web1"
}

output "url" {
  value = module.prod.url
}

output "read_policy_json" {
  value = module.prod.read_policy_json
}

output "write_policy_json" {
  value = module.prod.write_policy_json
}

output "host_receipt_policy_json" {
  value = module.prod.host_receipt_policy_json
}

output "shared_receipt_policy_json" {
  value = module.prod.shared_receipt_policy_json
}

output "fleet_status_policy_json" {
  value = module.prod.fleet_status_policy_json
}

output "receipt_key" {
  value = module.prod.receipt_key
}

output "hosts_prefix" {
  value = module.prod.hosts_prefix
}

output "timestamp_policy_json" {
  value = module.prod.timestamp_policy_json
}

output "rollout_policy_json" {
  value = module.prod.rollout_policy_json
}
