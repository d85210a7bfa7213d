# The URL has no path segment to derive the remote name from.
{
  services.npcnix = {
    enable = true;
    remote = "s3:///";
    configuration = "web1";
    trustedKeys = [
      { publicKey = "RWTNqXik1z85s9C7A3Z5N7gym8bWkYLApIm7QoBgm72vD2LU8PiGuoKX"; remotes = [ "*" ]; }
    ];
  };
}
