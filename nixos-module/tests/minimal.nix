# The least a host needs: the remote to follow, the configuration to
# activate and one pinned key scoped to that remote. Everything else takes
# its default; the remote name "prod" is derived from the URL.
{
  services.npcnix = {
    enable = true;
    remote = "s3://example-bucket/npcnix/remotes/prod";
    configuration = "web1";
    trustedKeys = [
      {
        publicKey = "RWTNqXik1z85s9C7A3Z5N7gym8bWkYLApIm7QoBgm72vD2LU8PiGuoKX";
        remotes = [ "prod" ];
      }
    ];
  };
}
