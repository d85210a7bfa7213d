# A policy file with no entry for the remote this host follows: refused at
# evaluation, naming the remotes the file lists (never a host without keys).
{
  services.npcnix = {
    enable = true;
    remote = "s3://example-bucket/npcnix/remotes/staging";
    configuration = "web1";
    policyFile = ../npcnix-policy.json;
  };
}
