output "blake3" {
  description = "BLAKE3 of the deterministic archive of src (what the release signs)."
  value       = data.external.pack.result.blake3
}

output "size" {
  description = "Size in bytes of the archive."
  value       = tonumber(data.external.pack.result.size)
}

output "publish_id" {
  description = "ID of the publish resource; changes on every new release (use it in depends_on / triggers)."
  value       = terraform_data.publish.id
}
