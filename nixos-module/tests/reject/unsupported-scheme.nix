# Only s3://, file://, http(s):// remotes exist.
{
  services.npcnix = {
    enable = true;
    remote = "ftp://example.com/npcnix/remotes/prod";
    configuration = "web1";
    trustedKeys = [
      { publicKey = "RWTNqXik1z85s9C7A3Z5N7gym8bWkYLApIm7QoBgm72vD2LU8PiGuoKX"; remotes = [ "prod" ]; }
    ];
  };
}
