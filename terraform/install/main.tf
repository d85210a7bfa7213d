# Renders the first-boot script (EC2 user data) that installs npcnix and runs
# `npcnix install`: pin the trusted keys, fetch and verify the latest
# release, and activate it. The activated configuration is expected to
# enable services.npcnix, which takes over from there.
#
# Everything in the script is public (URLs, public keys, hashes): user data
# is readable by any process on the instance through the metadata service.

locals {
  # POSIX shell single-quoting, for every value spliced into the script:
  # 'a'\''b' for a'b. Validation already restricts the characters; this
  # keeps the script correct even if a validation is relaxed later.
  q = {
    for k, v in {
      remote_url    = var.remote_url
      configuration = var.configuration
      remote_region = var.remote_region == null ? "" : var.remote_region
      npcnix_url    = var.npcnix_url == null ? "" : var.npcnix_url
      npcnix_sha256 = var.npcnix_sha256 == null ? "" : var.npcnix_sha256
      npcnix_flake  = var.npcnix_flake == null ? "" : var.npcnix_flake
      host_id       = var.host_id == null ? "" : var.host_id
    } : k => "'${replace(v, "'", "'\\''")}'"
  }

  trusted_keys_quoted = [for k in var.trusted_keys : "'${replace(k, "'", "'\\''")}'"]

  # nix.conf lines for the whole first boot (the npcnix build and the first
  # activation), as one single-quoted NIX_CONFIG value.
  nix_config_lines = concat(
    length(var.extra_substituters) == 0 ? [] : ["extra-substituters = ${join(" ", var.extra_substituters)}"],
    length(var.extra_trusted_public_keys) == 0 ? [] : ["extra-trusted-public-keys = ${join(" ", var.extra_trusted_public_keys)}"],
  )
  nix_config = length(local.nix_config_lines) == 0 ? "" : "'${replace(join("\n", local.nix_config_lines), "'", "'\\''")}'"

  method = var.npcnix_url != null ? "url" : "flake"

  user_data = templatefile("${path.module}/install.sh.tftpl", {
    method           = local.method
    q                = local.q
    trusted_keys     = local.trusted_keys_quoted
    threshold        = var.threshold
    has_region       = var.remote_region != null
    has_host_id      = var.host_id != null
    install_attempts = var.install_attempts
    min_version      = var.min_version == null ? "" : tostring(var.min_version)
    require_expiry   = var.require_expiry
    max_version_jump = var.max_version_jump == null ? "" : tostring(var.max_version_jump)
    nix_config       = local.nix_config
  })
}
