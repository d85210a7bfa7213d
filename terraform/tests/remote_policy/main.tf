# The per-remote IAM policies, evaluated offline. terraform/check asserts
# what they allow: nothing outside the remote, no delete, conditional writes.
module "prod" {
  source = "../../s3_remote_policy"

  bucket = "example-bucket"
  prefix = "npcnix/fleet"
  remote = "prod"
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
