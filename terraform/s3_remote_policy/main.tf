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

  # Writing an object to an SSE-KMS store needs kms:GenerateDataKey (a host
  # receipt is a single PutObject: no multipart, so no Decrypt for it).
  kms_encrypt = var.kms_key_arn == null ? [] : [
    {
      Sid       = "EncryptViaS3"
      Effect    = "Allow"
      Action    = ["kms:GenerateDataKey"]
      Resource  = [var.kms_key_arn]
      Condition = local.kms_via_s3
    },
  ]

  # Host receipts: <remote>/hosts/<host_id>.json, one object per host,
  # written with a plain PutObject (create or overwrite, no precondition).
  hosts_prefix = "${local.key_prefix}/hosts/"
  hosts_arn    = "${local.remote_arn}/hosts"

  # One host (a role of its own, e.g. the instance module's): PutObject on
  # exactly its own receipt. No wildcard: host IDs cannot contain * or ?
  # (validated), so the ARN names one key. No delete, no list, no read
  # (reading and listing the remote come from read_policy).
  host_receipt_policy = var.host_id == null ? null : {
    Version = "2012-10-17"
    Statement = concat([
      {
        Sid      = "WriteOwnReceipt"
        Effect   = "Allow"
        Action   = ["s3:PutObject"]
        Resource = ["${local.hosts_arn}/${var.host_id}.json"]
      },
    ], local.kms_encrypt)
  }

  # Hosts sharing one role (launch templates, autoscaling groups): no IAM
  # policy variable holds a value that is a valid npcnix host ID (for EC2
  # role sessions, aws:userid is "<role-id>:<instance-id>" and
  # ec2:SourceInstanceArn a whole ARN; see docs/terraform.md), so the key
  # cannot be bound to the caller. The weaker grant: any receipt of this
  # remote, not below hosts/ (host IDs have no "/"). A host holding it can
  # overwrite, but never forge, another host's receipt.
  shared_receipt_policy = {
    Version = "2012-10-17"
    Statement = concat([
      {
        Sid      = "WriteAnyReceipt"
        Effect   = "Allow"
        Action   = ["s3:PutObject"]
        Resource = ["${local.hosts_arn}/*.json"]
      },
      {
        # IAM's * also matches "/": hosts/a/b.json is no receipt.
        Sid      = "NoKeysBelowHosts"
        Effect   = "Deny"
        Action   = ["s3:PutObject"]
        Resource = ["${local.hosts_arn}/*/*"]
      },
    ], local.kms_encrypt)
  }

  # Operators (`npcnix fleet status`): list hosts/ and read the receipts.
  # Nothing else of the remote, no write.
  fleet_status_policy = {
    Version = "2012-10-17"
    Statement = concat([
      {
        Sid      = "ListReceipts"
        Effect   = "Allow"
        Action   = ["s3:ListBucket"]
        Resource = [local.bucket_arn]
        Condition = {
          StringLike = { "s3:prefix" = ["${local.hosts_prefix}*"] }
        }
      },
      {
        Sid      = "ReadReceipts"
        Effect   = "Allow"
        Action   = ["s3:GetObject"]
        Resource = ["${local.hosts_arn}/*"]
      },
    ], local.kms_read)
  }

  # The freshness refresher (`npcnix timestamp`, an online timestamp key,
  # D126): read the remote, replace `latest` (compare-and-swap only), and
  # nothing else: no archive, no release, no delete. Holding it, a thief can
  # rewrite `latest` (hosts verify what it holds: a denial of service, like
  # any store write) but never publish a release. The key itself comes from
  # the secret named by timestamp_key_secret_arn, if given.
  timestamp_policy = {
    Version = "2012-10-17"
    Statement = concat([
      {
        Sid      = "ReadRemote"
        Effect   = "Allow"
        Action   = ["s3:GetObject"]
        Resource = ["${local.remote_arn}/*"]
      },
      {
        # As write_policy: a missing `latest` must answer 404, not 403.
        Sid      = "ListBucket"
        Effect   = "Allow"
        Action   = ["s3:ListBucket"]
        Resource = [local.bucket_arn]
      },
      {
        Sid      = "SwapLatestOnly"
        Effect   = "Allow"
        Action   = ["s3:PutObject"]
        Resource = ["${local.remote_arn}/latest"]
        Condition = {
          Null = { "s3:if-match" = "false" }
        }
      },
      ], local.kms_write, var.timestamp_key_secret_arn == null ? [] : [
      {
        Sid      = "ReadTimestampKey"
        Effect   = "Allow"
        Action   = ["secretsmanager:GetSecretValue"]
        Resource = [var.timestamp_key_secret_arn]
      },
    ])
  }

  # Gated rollouts (`npcnix release promote` / `halt`, a key with role
  # "rollout", D130): read the remote (the release, every receipt), list
  # it, and create decisions under rollouts/ only (create-only: a promotion
  # or a halt, once written, is never moved), plus a plain overwrite of
  # one, which the CLI uses only to replace a decision the hosts refuse.
  # No latest, release, archive or delete: holding it, a thief can open or
  # halt stages of releases the release keys signed, nothing more.
  rollout_policy = {
    Version = "2012-10-17"
    Statement = concat([
      {
        Sid      = "ReadRemote"
        Effect   = "Allow"
        Action   = ["s3:GetObject"]
        Resource = ["${local.remote_arn}/*"]
      },
      {
        # Unrestricted: a missing decision must answer 404, not 403.
        Sid      = "ListBucket"
        Effect   = "Allow"
        Action   = ["s3:ListBucket"]
        Resource = [local.bucket_arn]
      },
      {
        Sid      = "WriteDecisionsOnly"
        Effect   = "Allow"
        Action   = ["s3:PutObject"]
        Resource = ["${local.remote_arn}/rollouts/*"]
      },
    ], local.kms_write)
  }

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
