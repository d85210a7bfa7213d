# A host ID npcnix would refuse (upper case): caught at plan time rather
# than by `npcnix install` on a booting host (exit 2, no retry).
module "install" {
  source = "../../install"

  remote_url    = "s3://example-bucket/npcnix/remotes/prod"
  configuration = "web1"
  trusted_keys  = ["RWTNqXik1z85s9C7A3Z5N7gym8bWkYLApIm7QoBgm72vD2LU8PiGuoKX"]
  npcnix_flake  = "github:OWNER/npcnix/0123456789abcdef0123456789abcdef01234567"
  host_id       = "Web1"
}

output "user_data" {
  value = module.install.user_data
}
