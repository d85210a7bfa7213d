# hostId and settings.host_id both set: one would silently win, so the
# overlap assertion refuses it (the receipt key must be unambiguous: the
# instance role may write only one).
{
  imports = [ ../minimal.nix ];
  services.npcnix = {
    hostId = "web1";
    settings.host_id = "web2";
  };
}
