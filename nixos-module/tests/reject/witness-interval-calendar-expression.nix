# `interval` is a time span (OnBootSec=, OnUnitActiveSec=); a calendar
# expression there would make a timer that never runs the witness, and
# hosts that need its cosignatures would take no release.
{ lib, ... }:
{
  imports = [ ../witness-service.nix ];
  services.npcnix-witness.interval = lib.mkForce "hourly";
}
