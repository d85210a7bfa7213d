# The fleet's policy file (the same file `npcnix publish` reads): this
# remote's keys, scoped to it, its threshold and its version-jump cap come
# from the file; nothing is typed twice.
{
  services.npcnix = {
    enable = true;
    remote = "s3://example-bucket/npcnix/remotes/prod";
    configuration = "web1";
    policyFile = ./npcnix-policy.json;
  };
}
