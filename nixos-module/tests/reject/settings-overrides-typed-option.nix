# settings may only add fields: setting one that a typed option renders
# (here the rollback floor, which minVersion owns, and the remote URL) is
# refused, instead of one of the two silently winning.
{
  imports = [ ../minimal.nix ];
  services.npcnix = {
    minVersion = 40;
    settings.policy.min_version = 0;
    settings.remote.url = "s3://attacker-bucket/npcnix/remotes/prod";
  };
}
