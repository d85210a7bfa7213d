# The activation mode is an enum.
{
  remote = "s3://example-bucket/npcnix/remotes/prod";
  configuration = "web1";
  activation = "reboot";
  trustedKeys = [
    { publicKey = "RWTNqXik1z85s9C7A3Z5N7gym8bWkYLApIm7QoBgm72vD2LU8PiGuoKX"; remotes = [ "prod" ]; }
  ];
}
