# A Nix path literal would be copied into the (world-readable) store when
# the unit is built: only a string path is accepted.
{
  imports = [ ../minimal.nix ];
  services.npcnix.environmentFile = ./secrets/s3.env;
}
