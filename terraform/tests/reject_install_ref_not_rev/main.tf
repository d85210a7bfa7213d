# `ref=` names a branch or tag (which can move), even when it looks like a commit.
module "install" {
  source = "../../install"

  remote_url    = "s3://example-bucket/npcnix/remotes/prod"
  configuration = "web1"
  trusted_keys  = ["RWTNqXik1z85s9C7A3Z5N7gym8bWkYLApIm7QoBgm72vD2LU8PiGuoKX"]
  npcnix_flake  = "git+https://example.com/npcnix.git?ref=0123456789abcdef0123456789abcdef01234567"
}
