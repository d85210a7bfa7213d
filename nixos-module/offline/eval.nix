# Offline evaluation of one test input (used by ../check):
#
#   nix-instantiate --eval --strict --json offline/eval.nix --arg input ./tests/minimal.nix
#
# `input` is a file holding an attrset of `services.npcnix` option values, as
# a user would write them. They are checked against the types and completed
# with the defaults declared in ../options.nix (through ./lib.nix, a small
# stand-in for nixpkgs' lib), then turned into:
#
#   host_config        what the module writes to /etc/npcnix/config.json
#   failed_assertions  messages of the ../assertions.nix checks that fail
#
# Not covered offline: `configuration` defaulting to networking.hostName
# (set in ../default.nix), so test inputs set `configuration` themselves.
{ input }:
let
  lib = import ./lib.nix;
  module = import ../options.nix {
    inherit lib;
    pkgs = { };
    config = { };
  };
  cfg = lib.evalOptionSet "services.npcnix" module.options.services.npcnix (import input);
  failed = builtins.filter (a: !a.assertion) (import ../assertions.nix cfg);
in
{
  host_config = import ../host-config.nix cfg;
  failed_assertions = map (a: a.message) failed;
}
