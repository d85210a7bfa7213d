# allowReboot with activation = "switch": accepted, but a warning says it
# has no effect; a lone rebootWindow warns that the host never reboots.
# Only the probation is set in `lockout` (the other fields are omitted).
{
  imports = [ ./minimal.nix ];
  services.npcnix = {
    allowReboot = true;
    lockout.probationSeconds = 0;
  };
}
