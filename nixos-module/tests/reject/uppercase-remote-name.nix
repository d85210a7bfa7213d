# Remote names are lowercase (they are signed into every release); "Prod"
# derived from the URL is refused rather than silently lowercased.
{
  services.npcnix = {
    enable = true;
    remote = "s3://example-bucket/npcnix/remotes/Prod";
    configuration = "web1";
    trustedKeys = [
      { publicKey = "RWTNqXik1z85s9C7A3Z5N7gym8bWkYLApIm7QoBgm72vD2LU8PiGuoKX"; remotes = [ "*" ]; }
    ];
  };
}
