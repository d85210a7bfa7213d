output "user_data" {
  description = "The rendered first-boot script (a #! script, which NixOS's amazon-init runs as is). Pass it to aws_instance.user_data (the instance module does)."
  value       = local.user_data

  # Checks that combine several variables (cross-variable validation blocks
  # need Terraform 1.9; output preconditions work from 1.2).
  precondition {
    condition     = (var.npcnix_url != null) != (var.npcnix_flake != null)
    error_message = "Set exactly one of npcnix_url (with npcnix_sha256) or npcnix_flake."
  }

  precondition {
    condition     = var.threshold <= length(var.trusted_keys)
    error_message = "threshold is larger than the number of trusted keys: the first release could never be accepted."
  }

  precondition {
    condition     = (var.npcnix_url == null) == (var.npcnix_sha256 == null)
    error_message = "npcnix_url and npcnix_sha256 go together: a downloaded binary is always checked against a pinned hash."
  }
}

output "user_data_sha256" {
  description = "SHA-256 of the rendered script, for change tracking."
  value       = sha256(local.user_data)
}

output "host_id" {
  description = "The host ID passed to `npcnix install --host-id` (null: derived from /etc/machine-id on the host). Pass it to the instance module's receipts.host_id so the receipt grant names the same key."
  value       = var.host_id
}
