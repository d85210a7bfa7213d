# stateDir = "/var/lib" would make the module chmod /var/lib to 0700 (and
# mix npcnix's state with everything else).
{
  services.npcnix = {
    enable = true;
    remote = "s3://example-bucket/npcnix/remotes/prod";
    configuration = "web1";
    stateDir = "/var/lib/";
    trustedKeys = [
      { publicKey = "RWTNqXik1z85s9C7A3Z5N7gym8bWkYLApIm7QoBgm72vD2LU8PiGuoKX"; remotes = [ "prod" ]; }
    ];
  };
}
