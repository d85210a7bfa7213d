# A git+ reference pinned by `rev=`: git checks the commit it fetches, so
# this names exactly one tree (issue 30). Also a narHash on a tarball.
module "install" {
  source = "../../install"

  remote_url    = "s3://example-bucket/npcnix/remotes/dev"
  configuration = "web1"
  trusted_keys  = ["RWSescKBqgkifqGuG2MG46e6R/i5kZCfcmwAZcMpuTgnp8q1au9TLPRo"]
  npcnix_flake  = "git+https://example.com/npcnix.git?ref=main&rev=0123456789abcdef0123456789abcdef01234567#npcnix"
}

module "install_narhash" {
  source = "../../install"

  remote_url    = "s3://example-bucket/npcnix/remotes/dev"
  configuration = "web1"
  trusted_keys  = ["RWSescKBqgkifqGuG2MG46e6R/i5kZCfcmwAZcMpuTgnp8q1au9TLPRo"]
  npcnix_flake  = "https://example.com/npcnix.tar.gz?narHash=sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
}

output "user_data" {
  value = module.install.user_data
}

output "user_data_narhash" {
  value = module.install_narhash.user_data
}
