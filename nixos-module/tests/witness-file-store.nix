# A witness beside the agent, for a log in a local file:// store, with its
# state outside /var/lib: the unit may write only that store's directory
# and its state directory (ReadWritePaths; ProtectSystem=strict keeps the
# rest read-only), and tmpfiles creates the state directory 0700 for the
# witness user. The package defaults to the agent's.
{
  imports = [ ./minimal.nix ];
  services.npcnix-witness = {
    enable = true;
    name = "w2.example.org";
    keyFile = "/var/keys/npcnix-witness.key";
    stateDir = "/srv/npcnix-witness";
    logs = [
      {
        remote = "file:///srv/npcnix/remotes/dev";
        logKey = "RWQ1Xx84kOLHdh+WiMMPD9SzVAYtwaDcTcGjp3F1TsAqCJtUEf2Cc3JW";
      }
    ];
  };
}
