# The metrics file's directory is created 0755 (tmpfiles also resets an
# existing directory's mode): the private state directory is refused.
{
  services.npcnix = {
    enable = true;
    remote = "s3://example-bucket/npcnix/remotes/prod";
    configuration = "web1";
    trustedKeys = [
      { publicKey = "RWTNqXik1z85s9C7A3Z5N7gym8bWkYLApIm7QoBgm72vD2LU8PiGuoKX"; remotes = [ "prod" ]; }
    ];
    metricsPath = "/var/lib/npcnix/metrics.prom";
  };
}
