# `rev=` on a tarball URL pins nothing: Nix unpacks whatever the server
# serves under that reference (with Nix 2.8 the same "pinned" reference
# built one binary, then another once the file changed), and that binary
# runs as root at first boot (issue 30).
module "install" {
  source = "../../install"

  remote_url    = "s3://example-bucket/npcnix/remotes/prod"
  configuration = "web1"
  trusted_keys  = ["RWTNqXik1z85s9C7A3Z5N7gym8bWkYLApIm7QoBgm72vD2LU8PiGuoKX"]
  npcnix_flake  = "https://example.com/npcnix/x.tar.gz?rev=0123456789abcdef0123456789abcdef01234567"
}
