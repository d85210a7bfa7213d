# Not minisign public keys: truncated, the comment line of a .pub file, and a
# key with its first characters missing.
{
  services.npcnix = {
    enable = true;
    remote = "s3://example-bucket/npcnix/remotes/prod";
    configuration = "web1";
    trustedKeys = [
      { publicKey = "RWTNqXik1z85s9C7"; remotes = [ "prod" ]; }
      { publicKey = "untrusted comment: minisign public key"; remotes = [ "prod" ]; }
      { publicKey = "TNqXik1z85s9C7A3Z5N7gym8bWkYLApIm7QoBgm72vD2LU8PiGuoKX"; remotes = [ "prod" ]; }
    ];
  };
}
