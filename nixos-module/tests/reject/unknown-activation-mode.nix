# The activation mode is an enum of what the agent accepts ("toplevel", a
# mode that skips evaluation, does not exist in the agent yet).
{
  remote = "s3://example-bucket/npcnix/remotes/prod";
  configuration = "web1";
  activation = "toplevel";
  trustedKeys = [
    { publicKey = "RWTNqXik1z85s9C7A3Z5N7gym8bWkYLApIm7QoBgm72vD2LU8PiGuoKX"; remotes = [ "prod" ]; }
  ];
}
