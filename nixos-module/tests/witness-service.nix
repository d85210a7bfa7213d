# A machine that only witnesses (no agent): two logs, one on AWS S3, one
# on an S3-compatible store under a remote name other than its URL's last
# segment (its hosts set remoteName = "dev" too). S3 credentials come from
# a private environment file, the witness key is a systemd credential, the
# state persists under /var/lib, and every log is tried on each run.
{
  services.npcnix-witness = {
    enable = true;
    name = "w1.example.org";
    keyFile = "/run/secrets/npcnix-witness.key";
    environmentFile = "/run/secrets/npcnix-witness-s3.env";
    interval = "10min";
    logs = [
      {
        remote = "s3://example-bucket/npcnix/remotes/prod";
        logKey = "RWRDfnfLJywg6o4TSTxRShkJvOyHOaHJ7tGjbX9dSvgqHziENY9MfpaH";
        region = "eu-central-1";
      }
      {
        remote = "s3://other-fleet/fleet-dev";
        remoteName = "dev";
        logKey = "/etc/npcnix-witness/dev-log.pub";
        endpoint = "https://s3.example.com";
        pathStyle = true;
      }
    ];
  };
}
