# Renders the first-boot script with a pinned binary download, two keys and
# a region. terraform/check runs `sh -n` on the result and checks that
# every value is single-quoted.
module "install" {
  source = "../../install"

  remote_url    = "s3://example-bucket/npcnix/remotes/prod"
  configuration = "web1"
  trusted_keys  = ["RWTNqXik1z85s9C7A3Z5N7gym8bWkYLApIm7QoBgm72vD2LU8PiGuoKX", "RWSescKBqgkifqGuG2MG46e6R/i5kZCfcmwAZcMpuTgnp8q1au9TLPRo"]
  threshold     = 2
  remote_region = "eu-central-1"
  npcnix_url    = "https://downloads.example.com/npcnix/0.1.0/npcnix-x86_64-linux-musl"
  npcnix_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"

  # First-contact policy: a floor, expiry required, jumps capped.
  min_version      = 5
  require_expiry   = true
  max_version_jump = 10
}

output "user_data" {
  value = module.install.user_data
}
