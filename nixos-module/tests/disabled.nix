# Options set but enable = false: the module defines nothing (no unit, no
# /etc/npcnix/config.json, no user), and checks nothing.
{
  services.npcnix = {
    remote = "s3://example-bucket/npcnix/remotes/prod";
    trustedKeys = [ ];
  };
}
