# The lockout and reboot options (issue 14): rendered as `lockout` and
# `reboot` only because they are set here. An npcnix built before issue 14
# refuses these fields as unknown; ../check reports that as a skip.
{
  imports = [ ./minimal.nix ];
  services.npcnix = {
    activation = "boot";
    lockout = {
      inspect = true;
      probationSeconds = 600;
      watchdog = "systemd-run";
    };
    allowReboot = true;
    rebootWindow = { lower = "01:00"; upper = "05:00"; };
  };
}
