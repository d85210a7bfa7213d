data "aws_partition" "current" {}

# ---- Identity: the instance role can read its remote, nothing else --------

data "aws_iam_policy_document" "assume_ec2" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "host" {
  name_prefix        = "${var.name}-"
  description        = "npcnix host ${var.name}: reads its remote"
  assume_role_policy = data.aws_iam_policy_document.assume_ec2.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "host_read" {
  role       = aws_iam_role.host.name
  policy_arn = var.host_read_policy_arn
}

# ---- Receipts: the host may write <remote>/hosts/<host_id>.json, no other key

locals {
  # [bucket, prefix, remote name] of s3://<bucket>/<prefix>/remotes/<name>
  # (the shape is validated on var.receipts).
  receipt_remote = var.receipts == null ? null : regex("^s3://([^/]+)/(.+)/remotes/([^/]+)$", var.receipts.remote_url)
}

module "receipt_policy" {
  source = "../s3_remote_policy"
  count  = var.receipts == null ? 0 : 1

  bucket      = local.receipt_remote[0]
  prefix      = local.receipt_remote[1]
  remote      = local.receipt_remote[2]
  partition   = data.aws_partition.current.partition
  kms_key_arn = var.receipts.kms_key_arn
  host_id     = var.receipts.host_id
}

# Inline: the grant names this host's key, so it lives and dies with this
# host's role (one role per instance) and cannot be attached to another.
resource "aws_iam_role_policy" "receipt" {
  count  = var.receipts == null ? 0 : 1
  name   = "npcnix-receipt"
  role   = aws_iam_role.host.id
  policy = module.receipt_policy[0].host_receipt_policy_json

  lifecycle {
    # The key the policy names must be the one the host writes. The install
    # module renders `--host-id '<id>'`; a mismatch would leave the host's
    # receipts refused (403) without anything failing here.
    precondition {
      condition     = strcontains(var.user_data, "--host-id '${var.receipts.host_id}'\n")
      error_message = "receipts.host_id does not match the user data: it must run `npcnix install --host-id '<receipts.host_id>'` (set the install module's host_id to the same value, e.g. host_id = module.install_<name>.host_id)."
    }
  }
}

resource "aws_iam_instance_profile" "host" {
  name_prefix = "${var.name}-"
  role        = aws_iam_role.host.name
  tags        = var.tags
}

# ---- Network: egress only, unless root SSH is asked for -------------------

resource "aws_security_group" "host" {
  name_prefix = "${var.name}-"
  description = "npcnix host ${var.name}"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = var.name })

  lifecycle {
    create_before_destroy = true
  }
}

# S3, binary caches, NTP, DNS: the host pulls, nothing pushes to it.
resource "aws_vpc_security_group_egress_rule" "all" {
  security_group_id = aws_security_group.host.id
  description       = "outbound (store, binary caches)"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_ingress_rule" "ssh" {
  for_each = var.enable_root_ssh ? toset(var.ssh_cidr_blocks) : toset([])

  security_group_id = aws_security_group.host.id
  description       = "root SSH (enable_root_ssh = true)"
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_ipv4         = each.value
}

# ---- The instance -----------------------------------------------------------

resource "aws_instance" "host" {
  ami                    = var.ami_id
  instance_type          = var.instance_type
  subnet_id              = var.subnet_id
  vpc_security_group_ids = concat([aws_security_group.host.id], var.extra_security_group_ids)
  iam_instance_profile   = aws_iam_instance_profile.host.name
  key_name               = var.enable_root_ssh ? var.key_name : null
  user_data              = var.user_data

  # IMDSv2 only, one hop: instance credentials cannot be fetched by a
  # simple SSRF or from a container on the host.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  root_block_device {
    volume_size           = var.root_volume_size_gb
    volume_type           = "gp3"
    encrypted             = true
    delete_on_termination = true
  }

  tags        = merge(var.tags, { Name = var.name })
  volume_tags = merge(var.tags, { Name = var.name })

  lifecycle {
    # A running host is updated by npcnix, never re-provisioned because the
    # image or the first-boot script changed.
    ignore_changes = [ami, user_data]

    precondition {
      condition     = var.enable_root_ssh || var.key_name == null
      error_message = "key_name installs an SSH key for root on NixOS AMIs; it is only allowed with enable_root_ssh = true."
    }

    precondition {
      condition     = !var.enable_root_ssh || length(var.ssh_cidr_blocks) > 0 || var.key_name != null
      error_message = "enable_root_ssh = true needs key_name and/or ssh_cidr_blocks."
    }
  }
}
