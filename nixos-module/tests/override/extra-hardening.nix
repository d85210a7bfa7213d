# A user adds hardening the module leaves out on purpose (their activations
# do not need it): the setting is added, the module's own hardening and
# list-valued settings merge with the user's.
let
  base = import ../minimal.nix;
in
{
  module = {
    imports = [ base ];
    systemd.services.npcnix.serviceConfig = {
      ProtectHome = "read-only";
      RestrictAddressFamilies = [ "AF_PACKET" ];
    };
  };
  expect = config:
    let sc = config.systemd.services.npcnix.serviceConfig;
    in [
      { assertion = sc.ProtectHome == "read-only"; message = "the user's ProtectHome is missing"; }
      { assertion = sc.NoNewPrivileges && sc.LockPersonality && sc.RestrictRealtime; message = "module hardening was lost"; }
      {
        assertion = builtins.sort builtins.lessThan sc.RestrictAddressFamilies
          == [ "AF_INET" "AF_INET6" "AF_NETLINK" "AF_PACKET" "AF_UNIX" ];
        message = "RestrictAddressFamilies did not merge: ${builtins.toJSON sc.RestrictAddressFamilies}";
      }
    ];
}
