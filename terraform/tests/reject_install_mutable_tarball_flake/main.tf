# A tarball URL that merely ends in 40 hex digits: the server decides what it serves.
module "install" {
  source = "../../install"

  remote_url    = "s3://example-bucket/npcnix/remotes/prod"
  configuration = "web1"
  trusted_keys  = ["RWTNqXik1z85s9C7A3Z5N7gym8bWkYLApIm7QoBgm72vD2LU8PiGuoKX"]
  npcnix_flake  = "tarball+https://example.com/npcnix/archive/0123456789abcdef0123456789abcdef01234567.tar.gz"
}
