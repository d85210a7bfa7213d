# The per-remote policies of an SSE-KMS store: the KMS grants are added,
# via S3 only, and nothing else changes.
module "prod" {
  source = "../../s3_remote_policy"

  bucket      = "example-bucket"
  prefix      = "npcnix/fleet"
  remote      = "prod"
  host_id     = "web1"
  kms_key_arn = "arn:aws:kms:eu-central-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
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
