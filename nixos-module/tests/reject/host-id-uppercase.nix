# A host ID names an object in the store (hosts/<id>.json): the agent
# accepts only a-z 0-9 . _ -, so "Web1" is refused at evaluation, not on the
# host after the switch.
{
  imports = [ ../minimal.nix ];
  services.npcnix.hostId = "Web1";
}
