# Renders the first-boot script that builds npcnix from a pinned flake, with
# no region (SDK default).
module "install" {
  source = "../../install"

  remote_url    = "s3://example-bucket/npcnix/remotes/dev"
  configuration = "ci-runner.eu"
  trusted_keys  = ["RWSescKBqgkifqGuG2MG46e6R/i5kZCfcmwAZcMpuTgnp8q1au9TLPRo"]
  npcnix_flake  = "github:example/npcnix/0123456789abcdef0123456789abcdef01234567#npcnix"
}

output "user_data" {
  value = module.install.user_data
}
