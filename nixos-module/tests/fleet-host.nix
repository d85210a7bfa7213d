# A fleet host: its ID (rollout slot and receipt key, the same as the
# Terraform install module's host_id) and a canary's rollout mode, as typed
# options; receipt settings the module has no option for go into settings.
{
  imports = [ ./minimal.nix ];
  services.npcnix = {
    hostId = "web1";
    rollout = "immediate";
    settings.receipts.heartbeat_secs = 600;
  };
}
