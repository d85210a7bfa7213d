# One remote = one key prefix of the store, with its own read and write
# policies. There is nothing to create in S3 itself: a remote exists once its
# first release is published.

data "aws_partition" "current" {}

module "policy" {
  source = "../s3_remote_policy"

  bucket      = var.bucket
  prefix      = var.prefix
  remote      = var.name
  partition   = data.aws_partition.current.partition
  kms_key_arn = var.kms_key_arn
}

resource "aws_iam_policy" "read" {
  count       = var.create_policies ? 1 : 0
  name        = "${var.policy_name_prefix}-${var.name}-read"
  description = "npcnix hosts: follow ${module.policy.url}"
  policy      = module.policy.read_policy_json
  tags        = var.tags
}

resource "aws_iam_policy" "write" {
  count       = var.create_policies ? 1 : 0
  name        = "${var.policy_name_prefix}-${var.name}-publish"
  description = "npcnix publishers: publish to ${module.policy.url} (create-only, no delete)"
  policy      = module.policy.write_policy_json
  tags        = var.tags
}

# `npcnix fleet status`: list and read the host receipts, nothing else.
resource "aws_iam_policy" "fleet_status" {
  count       = var.create_policies ? 1 : 0
  name        = "${var.policy_name_prefix}-${var.name}-fleet-status"
  description = "npcnix operators: read the host receipts of ${module.policy.url}"
  policy      = module.policy.fleet_status_policy_json
  tags        = var.tags
}

# Hosts sharing one role: write any receipt of this remote (opt-in, weaker
# than the per-host grant of the instance module).
resource "aws_iam_policy" "shared_receipt" {
  count       = var.create_policies && var.create_shared_receipt_policy ? 1 : 0
  name        = "${var.policy_name_prefix}-${var.name}-any-receipt"
  description = "npcnix hosts sharing a role: write any receipt under ${module.policy.url}/hosts/"
  policy      = module.policy.shared_receipt_policy_json
  tags        = var.tags
}
