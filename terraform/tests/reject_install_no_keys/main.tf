# No pinned key: a first boot would trust whatever the store serves.
module "install" {
  source = "../../install"

  remote_url    = "s3://example-bucket/npcnix/remotes/prod"
  configuration = "web1"
  trusted_keys  = []
  npcnix_flake  = "github:example/npcnix/0123456789abcdef0123456789abcdef01234567"
}
