# A downloaded binary without a pinned hash.
module "install" {
  source = "../../install"

  remote_url    = "s3://example-bucket/npcnix/remotes/prod"
  configuration = "web1"
  trusted_keys  = ["RWTNqXik1z85s9C7A3Z5N7gym8bWkYLApIm7QoBgm72vD2LU8PiGuoKX"]
  npcnix_url    = "https://downloads.example.com/npcnix"
}

output "user_data" {
  value = module.install.user_data
}
