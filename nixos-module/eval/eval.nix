# Evaluates ../default.nix with the real NixOS module system (nixpkgs'
# lib.evalModules) for one test case; used by ../check:
#
#   nix-instantiate --eval --strict --json eval/eval.nix \
#     --argstr lib /path/to/nixpkgs/lib --arg case ./tests/minimal.nix
#
# `case` is a NixOS module (what a user would put in their configuration),
# or, for tests/override/*.nix, `{ module; expect; }` where `expect` maps
# the evaluated `config` to a list of { assertion; message; } that must
# all hold. The module is evaluated together with ./nixos.nix (declarations
# of the NixOS options it touches) and ./pkgs.nix (fake packages).
#
# Result (JSON):
#   lib                which lib evaluated it (version)
#   host_config        the value rendered to /etc/npcnix/config.json (null if none)
#   system             the option values the module sets: systemd services
#                      and timers, /etc entries, users, groups, tmpfiles,
#                      system packages
#   failed_assertions  messages of the NixOS assertions that fail
#   warnings           NixOS warnings
#   failed_expectations  (override cases) messages of `expect` that fail
{ lib, case }:
let
  nixpkgsLib = import lib;
  input = import case;
  isOverride = builtins.isAttrs input && input ? expect;
  # By path, so that error messages name the test file.
  userModule = if isOverride then { _file = case; imports = [ input.module ]; } else case;

  evaluated = nixpkgsLib.evalModules {
    modules = [
      ./nixos.nix
      ../default.nix
      userModule
      { _module.args.pkgs = import ./pkgs.nix { lib = nixpkgsLib; }; }
    ];
  };
  inherit (evaluated) config;

  etcEntry = e: {
    inherit (e) enable target mode user group;
    source = toString e.source;
  };
  configEtc = config.environment.etc."npcnix/config.json" or null;
in
{
  lib.version = nixpkgsLib.version or "unknown";
  host_config = if configEtc == null then null else configEtc.source.npcnixJsonValue;
  system = {
    services = config.systemd.services;
    timers = config.systemd.timers;
    etc = builtins.mapAttrs (_: etcEntry) config.environment.etc;
    users = config.users.users;
    groups = config.users.groups;
    tmpfiles = config.systemd.tmpfiles.rules;
    system_packages = map toString config.environment.systemPackages;
  };
  failed_assertions = map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);
  warnings = config.warnings;
} // nixpkgsLib.optionalAttrs isOverride {
  failed_expectations =
    map (e: e.message) (builtins.filter (e: !e.assertion) (input.expect config));
  expectation_count = builtins.length (input.expect config);
}
