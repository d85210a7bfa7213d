# environmentFile: systemd loads it (EnvironmentFile=); its path and
# contents never reach the world-readable host config.
let
  base = import ../minimal.nix;
in
{
  module = {
    imports = [ base ];
    services.npcnix.environmentFile = "/run/secrets/npcnix-s3.env";
  };
  expect = config:
    let
      sc = config.systemd.services.npcnix.serviceConfig;
      json = builtins.toJSON config.environment.etc."npcnix/config.json".source.npcnixJsonValue;
    in
    [
      { assertion = (sc.EnvironmentFile or null) == "/run/secrets/npcnix-s3.env"; message = "EnvironmentFile is ${builtins.toJSON (sc.EnvironmentFile or null)}"; }
      { assertion = builtins.match ".*npcnix-s3.*" json == null; message = "the environment file leaked into the host config"; }
    ];
}
