# The watchdog is one the agent knows, not any string.
{
  imports = [ ../minimal.nix ];
  services.npcnix.lockout.watchdog = "cron";
}
