# Credentials in the Nix store are readable by every user of the host.
{
  imports = [ ../minimal.nix ];
  services.npcnix.environmentFile = "/nix/store/00000000000000000000000000000000-s3.env";
}
