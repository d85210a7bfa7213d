variable "bucket" {
  description = "Name of the store bucket (store_s3's `bucket` output)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket))
    error_message = "The bucket must be a valid S3 bucket name (3-63 characters from a-z 0-9 . -)."
  }
}

variable "prefix" {
  description = "Key prefix of the store (store_s3's `prefix` output). The remote lives under <prefix>/remotes/<name>."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$", var.prefix))
    error_message = "The prefix must be non-empty, without leading/trailing slashes or empty segments, using A-Z a-z 0-9 _ . - and /."
  }
}

variable "name" {
  description = "Name of the remote, e.g. \"prod\" or \"dev\". It is signed into every release, and hosts pin keys per remote name."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9._-]{0,63}$", var.name))
    error_message = "The remote name must be 1-64 characters from a-z 0-9 . _ -, starting with a letter or digit (the rule npcnix applies)."
  }
}

variable "create_policies" {
  description = "Create IAM policies (aws_iam_policy) from the read, write and fleet-status policy documents (and the shared receipt policy with create_shared_receipt_policy)."
  type        = bool
  default     = true
}

variable "policy_name_prefix" {
  description = "Prefix of the names of IAM policies this module creates."
  type        = string
  default     = "npcnix"

  validation {
    condition     = can(regex("^[A-Za-z0-9+=,.@_-]{1,48}$", var.policy_name_prefix))
    error_message = "The policy name prefix must be 1-48 characters valid in IAM names."
  }
}

variable "tags" {
  description = "Tags for the resources this module creates."
  type        = map(string)
  default     = {}
}

variable "kms_key_arn" {
  description = "KMS key of an SSE-KMS store (store_s3's kms_key_arn output); the read and write policies then include the KMS grants they need. null: SSE-S3."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:[a-z-]+:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+$", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN (arn:<partition>:kms:<region>:<account>:key/<key-id>)."
  }
}

variable "create_shared_receipt_policy" {
  description = "Also create an IAM policy from shared_receipt_policy_json (with create_policies), for hosts that share one role: they may write any receipt of this remote, so one host can overwrite (never forge) another's. Off by default: give each host its own role and receipt grant (the instance module's `receipts`)."
  type        = bool
  default     = false
}
