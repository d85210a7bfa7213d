variable "remote_url" {
  description = "URL of the remote to publish to (remote_s3's `url` output, or a file:// remote)."
  type        = string

  validation {
    condition     = can(regex("^(s3|file)://[^\\s]+$", var.remote_url))
    error_message = "The remote URL must be s3://... or file://... (publishing needs a writable store)."
  }
}

variable "src" {
  description = "Directory of the flake to publish (the directory holding flake.nix). In a git work tree only the files git tracks are packed."
  type        = string

  validation {
    condition     = length(trimspace(var.src)) > 0
    error_message = "src must name a directory."
  }
}

variable "key_file" {
  description = "Path of the minisign secret key that signs the release; its public key must be trusted for this remote by the hosts. Use a key scoped to this remote only (e.g. a CI key for dev). For an encrypted key, set NPCNIX_PASSPHRASE in Terraform's environment; never pass a passphrase as a variable (it would be stored in the state)."
  type        = string

  validation {
    condition     = length(trimspace(var.key_file)) > 0
    error_message = "key_file must name the secret key file."
  }
}

variable "npcnix" {
  description = "The npcnix executable (name on PATH or path)."
  type        = string
  default     = "npcnix"
}

variable "remote_region" {
  description = "S3 region of the remote (passed as --remote-region). null: the SDK's default chain."
  type        = string
  default     = null
}

variable "endpoint" {
  description = "Custom S3 endpoint (passed as --endpoint). null: AWS."
  type        = string
  default     = null
}

variable "expires" {
  description = "Release lifetime passed as --expires (e.g. \"30d\"): hosts refuse the release afterwards, so a stale store is noticed. null: no expiry."
  type        = string
  default     = null

  validation {
    condition     = var.expires == null || can(regex("^[0-9]+[smhdw]$", var.expires))
    error_message = "expires must look like 3600s, 90m, 12h, 30d or 4w."
  }
}

variable "comment" {
  description = "One-line comment recorded in the release statement (shown by `npcnix log`). null: none."
  type        = string
  default     = null

  validation {
    condition     = var.comment == null || !can(regex("[\\r\\n]", var.comment))
    error_message = "The comment must be a single line."
  }
}

variable "all_files" {
  description = "Pack every file under src, not only those git tracks (--all-files)."
  type        = bool
  default     = false
}

variable "triggers" {
  description = "Extra values that force a new publish when they change (the archive hash and the remote URL always do)."
  type        = map(string)
  default     = {}
}
