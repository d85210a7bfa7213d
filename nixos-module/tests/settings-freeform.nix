# services.npcnix.settings adds host-config fields the module has no option
# for (here two the agent knows: a minimum transfer rate and the allowed
# clock skew for future-dated releases), merged into the typed objects.
{
  imports = [ ./minimal.nix ];
  services.npcnix.settings = {
    remote.min_rate_bytes_per_sec = 65536;
    policy.max_future_skew_secs = 120;
  };
}
