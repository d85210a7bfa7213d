# The policy file has no log role (publishers refuse fields it does not
# know), so a host that takes its keys from the file adds the log key with
# lib.mkDefault: at the file's priority the two lists join. (A plain
# definition would replace the file's keys, and the release keys with
# them.)
{ lib, ... }:
{
  services.npcnix = {
    enable = true;
    remote = "s3://example-bucket/npcnix/remotes/prod";
    configuration = "web1";
    policyFile = ./npcnix-policy.json;
    trustedKeys = lib.mkDefault [
      { publicKey = "RWRDfnfLJywg6o4TSTxRShkJvOyHOaHJ7tGjbX9dSvgqHziENY9MfpaH"; remotes = [ "prod" ]; role = "log"; comment = "prod's log key"; }
    ];
    witnesses.keys = [
      "w1.example.org+a0075f94+BIn7RW00PelMPPLBzBaLxFhEJ0hIn9QTuAe+BTY5OOly"
    ];
  };
}
