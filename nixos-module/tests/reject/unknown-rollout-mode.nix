# rollout is "wave" or "immediate"; anything else is refused at evaluation.
{
  imports = [ ../minimal.nix ];
  services.npcnix.rollout = "asap";
}
