# A user replaces one unit setting with lib.mkForce: that setting changes,
# everything else the module sets stays.
let
  base = import ../minimal.nix;
in
{
  module = { lib, ... }: {
    imports = [ base ];
    systemd.services.npcnix.serviceConfig.Restart = lib.mkForce "always";
  };
  expect = config:
    let sc = config.systemd.services.npcnix.serviceConfig;
    in [
      { assertion = sc.Restart == "always"; message = "Restart is ${sc.Restart}, expected the user's \"always\""; }
      { assertion = sc.RestartForceExitStatus == "75"; message = "RestartForceExitStatus was lost"; }
      { assertion = sc.NoNewPrivileges; message = "NoNewPrivileges was lost"; }
      {
        assertion = sc.ExecStart == "/nix/store/00000000000000000000000000000000-npcnix/bin/npcnix follow --config /etc/npcnix/config.json --exit-after-switch";
        message = "ExecStart changed: ${sc.ExecStart}";
      }
    ];
}
