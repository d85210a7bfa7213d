# A user adds environment variables, a proxy and unit ordering: they merge
# with the module's (HOME, NIX_REMOTE, network-online.target).
let
  base = import ../minimal.nix;
in
{
  module = {
    imports = [ base ];
    networking.proxy.envVars.https_proxy = "http://proxy.example.com:3128";
    systemd.services.npcnix = {
      environment.RUST_LOG = "debug";
      after = [ "vault-agent.service" ];
      wants = [ "vault-agent.service" ];
    };
  };
  expect = config:
    let unit = config.systemd.services.npcnix;
    in [
      { assertion = unit.environment.RUST_LOG == "debug"; message = "RUST_LOG missing"; }
      { assertion = unit.environment.https_proxy == "http://proxy.example.com:3128"; message = "proxy env missing"; }
      { assertion = unit.environment.HOME == "/root" && unit.environment.NIX_REMOTE == "daemon"; message = "module env lost"; }
      { assertion = builtins.elem "vault-agent.service" unit.after && builtins.elem "network-online.target" unit.after; message = "after did not merge: ${builtins.toJSON unit.after}"; }
      { assertion = builtins.elem "vault-agent.service" unit.wants && builtins.elem "network-online.target" unit.wants; message = "wants did not merge"; }
    ];
}
