# `rev=` smuggled into a non-git reference's path or fragment: only a git+
# reference's own query parameter pins the commit (issue 30).
module "install" {
  source = "../../install"

  remote_url    = "s3://example-bucket/npcnix/remotes/prod"
  configuration = "web1"
  trusted_keys  = ["RWTNqXik1z85s9C7A3Z5N7gym8bWkYLApIm7QoBgm72vD2LU8PiGuoKX"]
  npcnix_flake  = "tarball+https://example.com/npcnix/latest.tar.gz?x=git+https://a?rev=0123456789abcdef0123456789abcdef01234567"
}
