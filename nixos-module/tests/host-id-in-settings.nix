# Before hostId existed the docs said settings.host_id; with hostId unset
# that still renders (settings may add any field no typed option renders).
{
  imports = [ ./minimal.nix ];
  services.npcnix.settings.host_id = "web1";
}
