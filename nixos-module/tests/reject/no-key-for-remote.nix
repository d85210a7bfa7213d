# The only key is scoped to "dev"; the host follows "prod". A dev (CI) key
# must never be able to deploy to prod, so this host could never update.
{
  services.npcnix = {
    enable = true;
    remote = "s3://example-bucket/npcnix/remotes/prod";
    configuration = "web1";
    trustedKeys = [
      { publicKey = "RWSescKBqgkifqGuG2MG46e6R/i5kZCfcmwAZcMpuTgnp8q1au9TLPRo"; remotes = [ "dev" ]; }
    ];
  };
}
