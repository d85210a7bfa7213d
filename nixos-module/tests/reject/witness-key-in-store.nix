# The witness's secret key in the Nix store is readable by every user of
# the machine: anyone could cosign a forked log in its name.
{ lib, ... }:
{
  imports = [ ../witness-service.nix ];
  services.npcnix-witness.keyFile = lib.mkForce "/nix/store/00000000000000000000000000000000-witness.key";
}
