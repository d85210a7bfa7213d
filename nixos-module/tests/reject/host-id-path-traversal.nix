# A host ID that would name another object in the store
# (hosts/../latest.json) is refused by the option's type.
{
  imports = [ ../minimal.nix ];
  services.npcnix.hostId = "../latest";
}
