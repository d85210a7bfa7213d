# A complete, minimal npcnix setup on AWS:
#
#   store_s3 -> remote_s3 (dev, prod) -> remote_s3_upload (dev, CI key)
#            -> install (first-boot script) -> instance (web1 follows dev)
#
# Production releases are not published from Terraform: they are signed
# offline (npcnix prepare / sign / publish), see docs/terraform.md.

module "store" {
  source = "../../store_s3"

  bucket_name = var.bucket_name
  prefix      = "npcnix"

  # Released bundles and archives cannot be deleted or replaced for 30 days,
  # even by an administrator who can bypass IAM (GOVERNANCE can be bypassed
  # with s3:BypassGovernanceRetention; COMPLIANCE cannot).
  object_lock = {
    mode = "GOVERNANCE"
    days = 30
  }
}

module "remote_dev" {
  source = "../../remote_s3"

  bucket = module.store.bucket
  prefix = module.store.prefix
  name   = "dev"
}

module "remote_prod" {
  source = "../../remote_s3"

  bucket = module.store.bucket
  prefix = module.store.prefix
  name   = "prod"
}

# Publishes configurations_dir to dev whenever its content changes. The key
# is the CI key: hosts trust it for "dev" only.
module "upload_dev" {
  source = "../../remote_s3_upload"

  remote_url    = module.remote_dev.url
  src           = var.configurations_dir
  key_file      = var.ci_key_file
  remote_region = module.store.region
  expires       = "30d"
}

module "install_web1" {
  source = "../../install"

  remote_url    = module.remote_dev.url
  configuration = "web1"
  trusted_keys  = concat([var.ci_public_key], var.release_public_keys)
  remote_region = module.store.region
  npcnix_flake  = var.npcnix_flake

  # Its name in receipts and rollout waves. The web1 NixOS configuration
  # sets the same services.npcnix.hostId.
  host_id = "web1"
}

module "web1" {
  source = "../../instance"

  name                 = "web1"
  ami_id               = var.nixos_ami_id
  vpc_id               = var.vpc_id
  subnet_id            = var.subnet_id
  user_data            = module.install_web1.user_data
  host_read_policy_arn = module.remote_dev.read_policy_arn

  # web1 may write its signed receipt (dev/hosts/web1.json) and no other key.
  receipts = {
    host_id    = module.install_web1.host_id
    remote_url = module.remote_dev.url
  }

  # The first boot installs the latest release: publish it first.
  depends_on = [module.upload_dev]
}
