# A reboot window bound must be a time of day, HH:MM.
{
  imports = [ ../minimal.nix ];
  services.npcnix = {
    allowReboot = true;
    rebootWindow = { lower = "23:00"; upper = "25:00"; };
  };
}
