variable "bucket" {
  description = "Name of the S3 bucket holding the npcnix store."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket))
    error_message = "The bucket must be a valid S3 bucket name (3-63 characters from a-z 0-9 . -)."
  }
}

variable "prefix" {
  description = "Key prefix of the store inside the bucket, without leading or trailing slash (e.g. \"npcnix\"). Remotes live under <prefix>/remotes/<name>."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$", var.prefix))
    error_message = "The prefix must be non-empty, without leading/trailing slashes or empty segments, using A-Z a-z 0-9 _ . - and /."
  }
}

variable "remote" {
  description = "Name of the remote (1-64 characters from a-z 0-9 . _ -, starting with a letter or digit), as signed into its releases."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9._-]{0,63}$", var.remote))
    error_message = "The remote name must be 1-64 characters from a-z 0-9 . _ -, starting with a letter or digit (the rule npcnix applies)."
  }
}

variable "partition" {
  description = "AWS partition for ARNs (\"aws\", \"aws-cn\", \"aws-us-gov\")."
  type        = string
  default     = "aws"

  validation {
    condition     = contains(["aws", "aws-cn", "aws-us-gov", "aws-iso", "aws-iso-b"], var.partition)
    error_message = "Unknown AWS partition."
  }
}

variable "kms_key_arn" {
  description = "KMS key of an SSE-KMS store (store_s3's kms_key_arn output): the read policy then allows kms:Decrypt and the write policy kms:GenerateDataKey and kms:Decrypt on it, via S3 only. null: an SSE-S3 store, no KMS grants."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:[a-z-]+:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+$", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN (arn:<partition>:kms:<region>:<account>:key/<key-id>)."
  }
}

variable "host_id" {
  description = "ID of one host (the host config's `host_id`): host_receipt_policy_json then lets exactly that host write its signed receipt, <remote>/hosts/<host_id>.json, and nothing else. 1-64 characters from a-z 0-9 - _ ., starting with a letter or digit (the rule npcnix applies). null: host_receipt_policy_json and receipt_key are null."
  type        = string
  default     = null

  validation {
    condition     = var.host_id == null || can(regex("^[a-z0-9][a-z0-9._-]{0,63}$", var.host_id))
    error_message = "host_id must be 1-64 characters from a-z 0-9 - _ ., starting with a letter or digit (the rule npcnix applies to host IDs): it names the object <remote>/hosts/<host_id>.json."
  }
}

variable "timestamp_key_secret_arn" {
  description = "Secrets Manager secret holding the remote's timestamp key (the secret key file's text), for the scheduled `npcnix timestamp`: timestamp_policy_json then allows reading exactly that secret. null: the key comes from elsewhere."
  type        = string
  default     = null

  validation {
    condition     = var.timestamp_key_secret_arn == null || can(regex("^arn:[a-z-]+:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]+$", var.timestamp_key_secret_arn))
    error_message = "timestamp_key_secret_arn must be a Secrets Manager secret ARN."
  }
}
