# threshold = 2 with two keys, but only one of them may sign for "prod": no
# release could ever be accepted. The CI key must not count towards prod.
{
  services.npcnix = {
    enable = true;
    remote = "s3://example-bucket/npcnix/remotes/prod";
    configuration = "web1";
    threshold = 2;
    trustedKeys = [
      { publicKey = "RWTNqXik1z85s9C7A3Z5N7gym8bWkYLApIm7QoBgm72vD2LU8PiGuoKX"; remotes = [ "prod" ]; }
      { publicKey = "RWSescKBqgkifqGuG2MG46e6R/i5kZCfcmwAZcMpuTgnp8q1au9TLPRo"; remotes = [ "dev" ]; }
    ];
  };
}
