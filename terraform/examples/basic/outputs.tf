output "dev_remote_url" {
  description = "URL of the dev remote."
  value       = module.remote_dev.url
}

output "prod_remote_url" {
  description = "URL of the prod remote (publish to it from the offline workflow)."
  value       = module.remote_prod.url
}

output "dev_publish_policy_arn" {
  description = "Attach to the CI role that publishes dev releases."
  value       = module.remote_dev.write_policy_arn
}

output "prod_publish_policy_arn" {
  description = "Attach to the (human, MFA-protected) role that uploads offline-signed prod releases."
  value       = module.remote_prod.write_policy_arn
}

output "dev_release_blake3" {
  description = "BLAKE3 of the archive last published to dev."
  value       = module.upload_dev.blake3
}

output "dev_fleet_status_policy_arn" {
  description = "Attach to operators who run `npcnix fleet status` on dev (list and read host receipts only)."
  value       = module.remote_dev.fleet_status_policy_arn
}

output "web1_instance_id" {
  description = "Instance ID of web1."
  value       = module.web1.instance_id
}
