# services.npcnix.package set by the user (a build of their own): the unit
# runs it and it is installed; no pkgs.npcnix needed.
let
  base = import ../minimal.nix;
  mine = {
    type = "derivation";
    name = "npcnix-patched";
    outPath = "/nix/store/11111111111111111111111111111111-npcnix-patched";
  };
in
{
  module = {
    imports = [ base ];
    services.npcnix.package = mine;
  };
  expect = config:
    let sc = config.systemd.services.npcnix.serviceConfig;
    in [
      { assertion = sc.ExecStart == "${mine}/bin/npcnix follow --config /etc/npcnix/config.json --exit-after-switch"; message = "ExecStart: ${sc.ExecStart}"; }
      { assertion = map toString config.environment.systemPackages == [ "${mine}" ]; message = "systemPackages: ${builtins.toJSON config.environment.systemPackages}"; }
    ];
}
