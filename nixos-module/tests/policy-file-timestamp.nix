# A remote whose policy-file entry has a `timestamp` section: its timestamp
# keys (role = "timestamp") and freshness come from the file.
{
  services.npcnix = {
    enable = true;
    remote = "s3://example-bucket/npcnix/remotes/stage";
    configuration = "web1";
    policyFile = ./npcnix-policy.json;
  };
}
