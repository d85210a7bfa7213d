# 2-of-n with a single pinned key: the first release could never verify.
module "install" {
  source = "../../install"

  remote_url    = "s3://example-bucket/npcnix/remotes/prod"
  configuration = "web1"
  trusted_keys  = ["RWTNqXik1z85s9C7A3Z5N7gym8bWkYLApIm7QoBgm72vD2LU8PiGuoKX"]
  threshold     = 2
  npcnix_flake  = "github:example/npcnix/0123456789abcdef0123456789abcdef01234567"
}

output "user_data" {
  value = module.install.user_data
}
