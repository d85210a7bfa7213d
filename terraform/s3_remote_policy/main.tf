locals {
  key_prefix = "${var.prefix}/remotes/${var.remote}"
  bucket_arn = "arn:${var.partition}:s3:::${var.bucket}"
  remote_arn = "${local.bucket_arn}/${local.key_prefix}"

  # SSE-KMS stores (store_s3 with kms_key_arn): objects can only be read with
  # kms:Decrypt on the key, and written with kms:GenerateDataKey (plus
  # Decrypt, which completing a multipart upload needs). Only through S3:
  # the credentials cannot use the key directly. With an S3 Bucket Key the
  # encryption context is the bucket, not the object, so the grant cannot be
  # narrowed to this remote's prefix; the S3 statements do that.
  kms_via_s3 = {
    StringLike = { "kms:ViaService" = ["s3.*.amazonaws.com"] }
  }
  kms_read = var.kms_key_arn == null ? [] : [
    {
      Sid       = "DecryptViaS3"
      Effect    = "Allow"
      Action    = ["kms:Decrypt"]
      Resource  = [var.kms_key_arn]
      Condition = local.kms_via_s3
    },
  ]
  kms_write = var.kms_key_arn == null ? [] : [
    {
      Sid       = "EncryptViaS3"
      Effect    = "Allow"
      Action    = ["kms:GenerateDataKey", "kms:Decrypt"]
      Resource  = [var.kms_key_arn]
      Condition = local.kms_via_s3
    },
  ]

  # Hosts: read this remote, nothing else.
  read_policy = {
    Version = "2012-10-17"
    Statement = concat([
      {
        Sid      = "ReadRemote"
        Effect   = "Allow"
        Action   = ["s3:GetObject"]
        Resource = ["${local.remote_arn}/*"]
      },
      {
        # Listing is used for the version log (releases/) only.
        Sid      = "ListRemote"
        Effect   = "Allow"
        Action   = ["s3:ListBucket"]
        Resource = [local.bucket_arn]
        Condition = {
          StringLike = { "s3:prefix" = ["${local.key_prefix}/*"] }
        }
      },
    ], local.kms_read)
  }

  # Publishers of this remote: create archives and releases (create-only),
  # replace `latest` (compare-and-swap). No DeleteObject, no other remote.
  #
  # The conditions make the protocol's preconditions mandatory at the
  # storage layer, so even a buggy or hostile client holding these
  # credentials cannot overwrite an existing release or archive:
  #   archives/*, releases/*, latest: PutObject only with If-None-Match: *
  #   latest:                         or with If-Match: <etag>
  # Multipart uploads: CreateMultipartUpload and UploadPart cannot carry
  # these headers (s3:ObjectCreationOperation is false for them); the
  # CompleteMultipartUpload that creates the object must carry If-None-Match.
  write_policy = {
    Version = "2012-10-17"
    Statement = concat([
      {
        Sid      = "ReadRemote"
        Effect   = "Allow"
        Action   = ["s3:GetObject"]
        Resource = ["${local.remote_arn}/*"]
      },
      {
        # Not restricted by s3:prefix on purpose: S3 answers a GET of a
        # missing key with 404 only to callers allowed to list the bucket,
        # otherwise with 403. The publisher must see "latest does not exist"
        # (404) to publish the first release. Listing reveals key names
        # only (versions, archive hashes), never contents.
        Sid      = "ListBucket"
        Effect   = "Allow"
        Action   = ["s3:ListBucket"]
        Resource = [local.bucket_arn]
      },
      {
        Sid    = "CreateOnly"
        Effect = "Allow"
        Action = ["s3:PutObject"]
        Resource = [
          "${local.remote_arn}/archives/*",
          "${local.remote_arn}/releases/*",
          "${local.remote_arn}/latest",
        ]
        Condition = {
          Null = { "s3:if-none-match" = "false" }
        }
      },
      {
        Sid      = "SwapLatest"
        Effect   = "Allow"
        Action   = ["s3:PutObject"]
        Resource = ["${local.remote_arn}/latest"]
        Condition = {
          Null = { "s3:if-match" = "false" }
        }
      },
      {
        Sid      = "MultipartParts"
        Effect   = "Allow"
        Action   = ["s3:PutObject"]
        Resource = ["${local.remote_arn}/archives/*"]
        Condition = {
          Bool = { "s3:ObjectCreationOperation" = "false" }
        }
      },
      {
        Sid      = "AbortOwnMultipart"
        Effect   = "Allow"
        Action   = ["s3:AbortMultipartUpload"]
        Resource = ["${local.remote_arn}/archives/*"]
      },
    ], local.kms_write)
  }
}
