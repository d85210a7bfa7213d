# The first line of a .pub file instead of the key.
module "install" {
  source = "../../install"

  remote_url    = "s3://example-bucket/npcnix/remotes/prod"
  configuration = "web1"
  trusted_keys  = ["untrusted comment: minisign public key 45A5CC51F205828B"]
  npcnix_flake  = "github:example/npcnix/0123456789abcdef0123456789abcdef01234567"
}
