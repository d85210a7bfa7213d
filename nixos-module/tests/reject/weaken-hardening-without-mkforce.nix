# Turning off the module's hardening by a plain definition is a conflict,
# not a silent override: it takes an explicit lib.mkForce.
{
  imports = [ ../minimal.nix ];
  systemd.services.npcnix.serviceConfig.NoNewPrivileges = false;
}
