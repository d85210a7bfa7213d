data "aws_partition" "current" {}

locals {
  partition  = data.aws_partition.current.partition
  bucket_arn = aws_s3_bucket.store.arn
  store_arn  = "${local.bucket_arn}/${var.prefix}"

  # With SSE-KMS, reading an object needs kms:Decrypt on the key, through S3
  # only (the same statement s3_remote_policy adds to per-remote policies).
  kms_read_statements = var.kms_key_arn == null ? [] : [
    {
      Sid      = "DecryptStoreObjects"
      Effect   = "Allow"
      Action   = ["kms:Decrypt"]
      Resource = [var.kms_key_arn]
      Condition = {
        StringLike = { "kms:ViaService" = ["s3.*.amazonaws.com"] }
      }
    },
  ]

  host_read_policy = {
    Version = "2012-10-17"
    Statement = concat([
      {
        Sid      = "ReadStore"
        Effect   = "Allow"
        Action   = ["s3:GetObject"]
        Resource = ["${local.store_arn}/*"]
      },
      {
        Sid      = "ListStore"
        Effect   = "Allow"
        Action   = ["s3:ListBucket"]
        Resource = [local.bucket_arn]
        Condition = {
          StringLike = { "s3:prefix" = ["${var.prefix}/*"] }
        }
      },
    ], local.kms_read_statements)
  }

  conditional_write_statements = [
    {
      Sid       = "DenyUnconditionalCreate"
      Effect    = "Deny"
      Principal = "*"
      Action    = ["s3:PutObject"]
      Resource = [
        "${local.store_arn}/remotes/*/archives/*",
        "${local.store_arn}/remotes/*/releases/*",
      ]
      Condition = {
        Null = { "s3:if-none-match" = "true" }
        # Exempts CreateMultipartUpload/UploadPart, which cannot carry the
        # header; CompleteMultipartUpload (which creates the object) must.
        # IfExists: a request that omits the key is denied too (plain Bool
        # would not match, and the Deny would be skipped).
        BoolIfExists = { "s3:ObjectCreationOperation" = "true" }
      }
    },
    {
      Sid       = "DenyUnconditionalLatest"
      Effect    = "Deny"
      Principal = "*"
      Action    = ["s3:PutObject"]
      Resource  = ["${local.store_arn}/remotes/*/latest"]
      Condition = {
        Null = {
          "s3:if-none-match" = "true"
          "s3:if-match"      = "true"
        }
        BoolIfExists = { "s3:ObjectCreationOperation" = "true" }
      }
    },
  ]

  deletion_statements = [
    {
      Sid       = "DenyReleaseDeletion"
      Effect    = "Deny"
      Principal = "*"
      Action    = ["s3:DeleteObject", "s3:DeleteObjectVersion"]
      Resource = [
        "${local.store_arn}/remotes/*/archives/*",
        "${local.store_arn}/remotes/*/releases/*",
      ]
    },
  ]

  bucket_policy = {
    Version = "2012-10-17"
    Statement = concat(
      [
        {
          Sid       = "DenyInsecureTransport"
          Effect    = "Deny"
          Principal = "*"
          Action    = ["s3:*"]
          Resource  = [local.bucket_arn, "${local.bucket_arn}/*"]
          Condition = {
            Bool = { "aws:SecureTransport" = "false" }
          }
        },
      ],
      var.enforce_conditional_writes ? local.conditional_write_statements : [],
      var.deny_release_deletion ? local.deletion_statements : [],
    )
  }
}

resource "aws_s3_bucket" "store" {
  bucket              = var.bucket_name
  force_destroy       = var.force_destroy
  object_lock_enabled = var.object_lock != null
  tags                = var.tags
}

# Every overwrite keeps the old version: `latest` history is recoverable,
# and Object Lock requires it.
resource "aws_s3_bucket_versioning" "store" {
  bucket = aws_s3_bucket.store.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_object_lock_configuration" "store" {
  count  = var.object_lock == null ? 0 : 1
  bucket = aws_s3_bucket.store.id

  rule {
    default_retention {
      mode = var.object_lock.mode
      days = var.object_lock.days
    }
  }

  depends_on = [aws_s3_bucket_versioning.store]
}

# The store is never public: hosts authenticate with their instance role.
resource "aws_s3_bucket_public_access_block" "store" {
  bucket                  = aws_s3_bucket.store.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# No ACLs: access is decided by IAM and the bucket policy only.
resource "aws_s3_bucket_ownership_controls" "store" {
  bucket = aws_s3_bucket.store.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

# Confidentiality at rest (integrity comes from the signatures, not from S3):
# SSE-S3 by default, SSE-KMS with the given key when kms_key_arn is set
# (with an S3 Bucket Key, so a poll does not cost a KMS request per object).
resource "aws_s3_bucket_server_side_encryption_configuration" "store" {
  bucket = aws_s3_bucket.store.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = var.kms_key_arn == null ? "AES256" : "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = var.kms_key_arn != null
  }
}

# Housekeeping under the store prefix. Releases and archives are create-only
# and never get noncurrent versions; `latest` gets one per publish, and those
# old heads are only history (the version log is releases/). Abandoned
# multipart uploads (an interrupted archive upload) cost storage until
# aborted. Object Lock retention, if set, still holds: a locked version
# expires only once its retention has passed.
resource "aws_s3_bucket_lifecycle_configuration" "store" {
  count  = var.noncurrent_version_expiration_days == null && var.abort_incomplete_multipart_days == null ? 0 : 1
  bucket = aws_s3_bucket.store.id

  dynamic "rule" {
    for_each = var.noncurrent_version_expiration_days == null ? [] : [var.noncurrent_version_expiration_days]
    content {
      id     = "npcnix-expire-noncurrent-versions"
      status = "Enabled"

      filter {
        prefix = "${var.prefix}/"
      }

      noncurrent_version_expiration {
        noncurrent_days = rule.value
      }
    }
  }

  dynamic "rule" {
    for_each = var.abort_incomplete_multipart_days == null ? [] : [var.abort_incomplete_multipart_days]
    content {
      id     = "npcnix-abort-incomplete-multipart-uploads"
      status = "Enabled"

      filter {
        prefix = "${var.prefix}/"
      }

      abort_incomplete_multipart_upload {
        days_after_initiation = rule.value
      }
    }
  }

  depends_on = [aws_s3_bucket_versioning.store]
}

resource "aws_s3_bucket_policy" "store" {
  bucket = aws_s3_bucket.store.id
  policy = jsonencode(local.bucket_policy)

  depends_on = [aws_s3_bucket_public_access_block.store]
}

resource "aws_iam_policy" "host_read" {
  count       = var.create_host_read_policy ? 1 : 0
  name        = "${var.policy_name_prefix}-${var.bucket_name}-read"
  description = "npcnix hosts: read the store s3://${var.bucket_name}/${var.prefix}"
  policy      = jsonencode(local.host_read_policy)
  tags        = var.tags
}

# The per-remote write policy as a function of the remote name: one call of
# the (resource-less) policy module per requested name.
module "writer_policy" {
  source   = "../s3_remote_policy"
  for_each = var.writer_remotes

  bucket      = var.bucket_name
  prefix      = var.prefix
  remote      = each.value
  partition   = local.partition
  kms_key_arn = var.kms_key_arn
}
