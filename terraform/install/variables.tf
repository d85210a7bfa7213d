variable "remote_url" {
  description = "URL of the remote the host follows (remote_s3's `url` output)."
  type        = string

  validation {
    condition     = can(regex("^(s3|file|https?)://[A-Za-z0-9._~:/?#@!$&()*+,;=%-]+$", var.remote_url))
    error_message = "The remote URL must be s3://, file://, http:// or https:// followed by URL characters only."
  }
}

variable "configuration" {
  description = "The nixosConfigurations attribute of the released flake this host activates."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.configuration))
    error_message = "The configuration name must be 1-128 characters from A-Z a-z 0-9 _ . - (not starting with . or -)."
  }
}

variable "trusted_keys" {
  description = "minisign public keys (RW... strings) the host pins for this remote on first boot. Required and non-empty: a first boot without pinned keys would trust whatever the store serves. Later rotations happen through the host's own (signed) NixOS configuration."
  type        = list(string)

  validation {
    condition     = length(var.trusted_keys) > 0
    error_message = "At least one trusted key is required: no unpinned first boot."
  }

  validation {
    condition     = alltrue([for k in var.trusted_keys : can(regex("^RW[A-Za-z0-9+/]{54}$", k))])
    error_message = "Every trusted key must be a minisign public key: \"RW\" followed by 54 base64 characters (the second line of a .pub file)."
  }

  validation {
    condition     = length(distinct(var.trusted_keys)) == length(var.trusted_keys)
    error_message = "Each trusted key may be listed once."
  }
}

variable "threshold" {
  description = "Distinct trusted keys that must have signed the first release (--threshold), e.g. 2 for a 2-of-3 prod setup."
  type        = number
  default     = 1

  validation {
    condition     = var.threshold >= 1 && floor(var.threshold) == var.threshold
    error_message = "threshold must be a whole number, at least 1."
  }
}

variable "remote_region" {
  description = "S3 region of the remote (--remote-region). null: the SDK's default chain (on EC2: the instance's region)."
  type        = string
  default     = null

  validation {
    condition     = var.remote_region == null || can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]+$", var.remote_region))
    error_message = "The region must look like eu-central-1."
  }
}

variable "npcnix_url" {
  description = "Where the first-boot script downloads a static npcnix binary (https only; scripts/build-static builds it, or the flake's packages.<system>.npcnix-static), e.g. an object next to the store served over HTTPS. The location need not be trusted: the script refuses to run a download whose SHA-256 is not npcnix_sha256. Set together with npcnix_sha256; alternative to npcnix_flake (no Rust compile on the host)."
  type        = string
  default     = null

  validation {
    condition     = var.npcnix_url == null || can(regex("^https://[A-Za-z0-9._~:/?#@!$&()*+,;=%-]+$", var.npcnix_url))
    error_message = "npcnix_url must be an https:// URL."
  }
}

variable "npcnix_sha256" {
  description = "SHA-256 (hex) of the binary at npcnix_url. The script refuses to run a binary with another hash."
  type        = string
  default     = null

  validation {
    condition     = var.npcnix_sha256 == null || can(regex("^[0-9a-f]{64}$", var.npcnix_sha256))
    error_message = "npcnix_sha256 must be 64 lowercase hex digits."
  }
}

variable "npcnix_flake" {
  description = "Flake reference the first-boot script builds npcnix from with `nix build` (for NixOS images), pinned: github:OWNER/npcnix/<40-hex commit>, git+https://...?rev=<40-hex commit>, or any reference with ?narHash=sha256-.... Alternative to npcnix_url."
  type        = string
  default     = null

  validation {
    condition     = var.npcnix_flake == null || can(regex("^[A-Za-z0-9+.:/_?=&~#-]+$", var.npcnix_flake))
    error_message = "npcnix_flake contains characters that do not belong in a flake reference."
  }

  validation {
    # Immutable forms only: a github: reference whose third path segment is
    # the commit, a git+ reference with a `rev=` query parameter (git checks
    # the commit it fetches), or a narHash (Nix checks the tree it
    # unpacks). `rev=` on anything else (a tarball URL) pins nothing: Nix
    # 2.8 unpacked whatever the server served under the same reference
    # (issue 30). A 40-hex string elsewhere (`?ref=<hex>`, a tarball URL
    # ending in hex) names something the server may serve differently
    # tomorrow.
    condition = var.npcnix_flake == null || (
      can(regex("^github:[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+/[0-9a-f]{40}(#[A-Za-z0-9_.-]+)?$", var.npcnix_flake)) ||
      can(regex("^git\\+(https|ssh|file)://[^?#]+\\?([^#]*&)?rev=[0-9a-f]{40}([&#]|$)", var.npcnix_flake)) ||
      can(regex("^[^?#]+\\?([^#]*&)?narHash=sha256-[A-Za-z0-9+/]{43}=([&#]|$)", var.npcnix_flake))
    )
    error_message = "npcnix_flake must be pinned by an immutable form: github:OWNER/REPO/<40-hex commit>, git+https://...?rev=<40-hex commit> (rev= only for git+ references), or ...?narHash=sha256-..., so every first boot runs the same, reviewed npcnix."
  }
}

variable "install_attempts" {
  description = "How many times the script retries `npcnix install` (30 s apart) while the network, the store or the first release is not there yet."
  type        = number
  default     = 60

  validation {
    condition     = var.install_attempts >= 1 && floor(var.install_attempts) == var.install_attempts
    error_message = "install_attempts must be a whole number, at least 1."
  }
}

variable "min_version" {
  description = "Refuse releases below this version on first contact. null: pin the version of the remote's head, verified with the trusted keys at install time, so a store writer cannot replay an old release to a new host."
  type        = number
  default     = null

  validation {
    condition     = var.min_version == null || (var.min_version >= 0 && floor(var.min_version) == var.min_version)
    error_message = "min_version must be a non-negative integer."
  }
}

variable "require_expiry" {
  description = "Refuse releases that carry no expiry time (freeze-attack defence)."
  type        = bool
  default     = false
}

variable "max_version_jump" {
  description = "Refuse a release more than this many versions past the highest one seen (on first contact: past min_version). null: no cap."
  type        = number
  default     = null

  validation {
    condition     = var.max_version_jump == null || (var.max_version_jump >= 1 && floor(var.max_version_jump) == var.max_version_jump)
    error_message = "max_version_jump must be a positive integer."
  }
}

variable "extra_substituters" {
  description = "Binary caches (https URLs) the first boot may use, e.g. one that has the npcnix_flake build and your systems' closures: exported as NIX_CONFIG extra-substituters for the whole script, so both the npcnix build and the first activation use them. Only caches whose keys are in extra_trusted_public_keys (or already trusted) are used."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for s in var.extra_substituters : can(regex("^https://[A-Za-z0-9._~:/?#@!$&()*+,;=%-]+$", s))])
    error_message = "extra_substituters must be https:// URLs."
  }
}

variable "extra_trusted_public_keys" {
  description = "Signing keys (name:base64) of extra_substituters, exported as NIX_CONFIG extra-trusted-public-keys for the script."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for k in var.extra_trusted_public_keys : can(regex("^[A-Za-z0-9._-]+:[A-Za-z0-9+/]+=*$", k))])
    error_message = "extra_trusted_public_keys must look like name:base64 (a Nix binary cache key)."
  }
}

variable "host_id" {
  description = "This host's ID (`npcnix install --host-id`): the name of its receipt, <remote>/hosts/<host_id>.json, and its place in rollout waves. Pass the same value as the instance module's receipts.host_id, and set the same `services.npcnix.hostId` in the host's NixOS configuration (which writes the host config from then on). 1-64 characters from a-z 0-9 - _ ., starting with a letter or digit. null: npcnix derives one from /etc/machine-id."
  type        = string
  default     = null

  validation {
    condition     = var.host_id == null || can(regex("^[a-z0-9][a-z0-9._-]{0,63}$", var.host_id))
    error_message = "host_id must be 1-64 characters from a-z 0-9 - _ ., starting with a letter or digit (the rule npcnix applies to host IDs)."
  }
}
