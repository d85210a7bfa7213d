# The first-boot script run by terraform/check with a stand-in download
# (./fake-npcnix, whose SHA-256 is pinned here): it must run the binary with
# the install arguments. tests/install_url pins another hash for the same
# kind of download, and the check runs it too: it must refuse to run it.
module "install" {
  source = "../../install"

  remote_url    = "s3://example-bucket/npcnix/remotes/prod"
  configuration = "web1"
  host_id       = "web1"
  trusted_keys  = ["RWTNqXik1z85s9C7A3Z5N7gym8bWkYLApIm7QoBgm72vD2LU8PiGuoKX"]
  npcnix_url    = "https://example-bucket.s3.eu-central-1.amazonaws.com/npcnix/bin/npcnix-0.1.0-x86_64-linux-static"
  npcnix_sha256 = "ee3630bb768534b5434a9db0ff7f417a4896a7dd739751c62a1f307733b7a586"

  install_attempts = 1
}

output "user_data" {
  value = module.install.user_data
}
