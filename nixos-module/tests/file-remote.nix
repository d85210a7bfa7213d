# A plain directory store (file://), e.g. a shared mount or a test setup,
# with a state directory outside /var/lib.
{
  services.npcnix = {
    enable = true;
    remote = "file:///srv/npcnix/remotes/lab";
    configuration = "lab";
    trustedKeys = [
      {
        publicKey = "RWSescKBqgkifqGuG2MG46e6R/i5kZCfcmwAZcMpuTgnp8q1au9TLPRo";
        remotes = [ "lab" "dev" ];
      }
    ];
    interval = 5;
    jitter = 0;
    activation = "test";
    stateDir = "/srv/npcnix-state";
  };
}
