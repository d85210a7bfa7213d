variable "bucket_name" {
  description = "Name of the S3 bucket to create for the npcnix store. Use a bucket dedicated to npcnix: Object Lock retention and the bucket policy apply bucket-wide."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "The bucket name must be a valid S3 bucket name (3-63 characters from a-z 0-9 . -)."
  }
}

variable "prefix" {
  description = "Key prefix of the store inside the bucket, without leading or trailing slash. Remotes live under <prefix>/remotes/<name>."
  type        = string
  default     = "npcnix"

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$", var.prefix))
    error_message = "The prefix must be non-empty, without leading/trailing slashes or empty segments, using A-Z a-z 0-9 _ . - and /."
  }
}

variable "object_lock" {
  description = "Optional S3 Object Lock default retention: every object version (archives, releases, each superseded latest) cannot be deleted or overwritten-in-place for `days`. GOVERNANCE can be bypassed by principals with s3:BypassGovernanceRetention; COMPLIANCE cannot be bypassed by anyone, including the account root. null: no Object Lock. Enabling it later replaces the bucket."
  type = object({
    mode = string
    days = number
  })
  default = null

  validation {
    condition     = var.object_lock == null || try(contains(["GOVERNANCE", "COMPLIANCE"], var.object_lock.mode), false)
    error_message = "object_lock.mode must be \"GOVERNANCE\" or \"COMPLIANCE\"."
  }

  validation {
    condition     = var.object_lock == null || try(var.object_lock.days >= 1 && floor(var.object_lock.days) == var.object_lock.days, false)
    error_message = "object_lock.days must be a whole number of days, at least 1."
  }
}

variable "enforce_conditional_writes" {
  description = "Add bucket-policy statements that refuse, for every principal, a PutObject into <prefix>/remotes/*/archives/ or releases/ without If-None-Match, and a PutObject of latest without If-Match or If-None-Match. npcnix always sends them; this stops any other credentials from rewriting the version log."
  type        = bool
  default     = true
}

variable "deny_release_deletion" {
  description = "Add a bucket-policy statement that refuses, for every principal, deleting objects or object versions under <prefix>/remotes/*/releases/ and archives/. (An account administrator can still change the bucket policy; use Object Lock COMPLIANCE for a guarantee.)"
  type        = bool
  default     = true
}

variable "force_destroy" {
  description = "Allow `terraform destroy` to delete a non-empty bucket. Leave false for real stores."
  type        = bool
  default     = false
}

variable "create_host_read_policy" {
  description = "Create an IAM policy (aws_iam_policy) from host_read_policy_json, which reads every remote of the store (a dev host could read prod). Off by default: give hosts remote_s3's per-remote read policy."
  type        = bool
  default     = false
}

variable "kms_key_arn" {
  description = "ARN of a KMS key (arn:...:kms:<region>:<account>:key/<id>) to encrypt the store with (SSE-KMS, with an S3 Bucket Key). null: SSE-S3 (AES256). Hosts and publishers then need kms:Decrypt (and publishers kms:GenerateDataKey) on it: pass the same ARN to remote_s3, whose policies include those grants. The key policy must allow them too."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:[a-z-]+:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+$", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN (arn:<partition>:kms:<region>:<account>:key/<key-id>); an alias cannot be used in IAM policies."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Days after which a noncurrent object version under <prefix>/ (in practice: superseded versions of each remote's latest) is expired by a lifecycle rule. null: keep them forever."
  type        = number
  default     = 90

  validation {
    condition     = var.noncurrent_version_expiration_days == null || try(var.noncurrent_version_expiration_days >= 1 && floor(var.noncurrent_version_expiration_days) == var.noncurrent_version_expiration_days, false)
    error_message = "noncurrent_version_expiration_days must be a whole number of days, at least 1, or null."
  }
}

variable "abort_incomplete_multipart_days" {
  description = "Days after which an unfinished multipart upload under <prefix>/ (an interrupted archive upload) is aborted by a lifecycle rule, freeing its parts. null: never."
  type        = number
  default     = 7

  validation {
    condition     = var.abort_incomplete_multipart_days == null || try(var.abort_incomplete_multipart_days >= 1 && floor(var.abort_incomplete_multipart_days) == var.abort_incomplete_multipart_days, false)
    error_message = "abort_incomplete_multipart_days must be a whole number of days, at least 1, or null."
  }
}

variable "policy_name_prefix" {
  description = "Prefix of the names of IAM policies this module creates."
  type        = string
  default     = "npcnix"

  validation {
    condition     = can(regex("^[A-Za-z0-9+=,.@_-]{1,64}$", var.policy_name_prefix))
    error_message = "The policy name prefix must be 1-64 characters valid in IAM names."
  }
}

variable "writer_remotes" {
  description = "Remote names for which remote_write_policy_json gives a write policy (a map: name => policy JSON), for setups that grant publishers from here rather than through remote_s3."
  type        = set(string)
  default     = []

  validation {
    condition     = alltrue([for r in var.writer_remotes : can(regex("^[a-z0-9][a-z0-9._-]{0,63}$", r))])
    error_message = "Remote names must be 1-64 characters from a-z 0-9 . _ -, starting with a letter or digit."
  }
}

variable "tags" {
  description = "Tags for the resources this module creates."
  type        = map(string)
  default     = {}
}
