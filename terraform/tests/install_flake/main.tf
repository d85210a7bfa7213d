# Renders the first-boot script that builds npcnix from a pinned flake, with
# no region (SDK default) and an extra binary cache for the build and the
# first activation.
module "install" {
  source = "../../install"

  remote_url    = "s3://example-bucket/npcnix/remotes/dev"
  configuration = "ci-runner.eu"
  trusted_keys  = ["RWSescKBqgkifqGuG2MG46e6R/i5kZCfcmwAZcMpuTgnp8q1au9TLPRo"]
  npcnix_flake  = "github:example/npcnix/0123456789abcdef0123456789abcdef01234567#npcnix"

  extra_substituters        = ["https://cache.example.com", "https://npcnix.cachix.org"]
  extra_trusted_public_keys = ["cache.example.com-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="]
}

output "user_data" {
  value = module.install.user_data
}
