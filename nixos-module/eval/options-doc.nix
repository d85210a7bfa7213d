# The options of services.npcnix and services.npcnix-witness as
# documentation entries (nixpkgs' lib.optionAttrSetToDocList, what the
# NixOS manual is built from); ../check renders them into docs/nixos.md
# and fails when that section is stale.
#
#   nix-instantiate --eval --strict --json eval/options-doc.nix --argstr lib /path/to/nixpkgs/lib
{ lib }:
let
  nixpkgsLib = import lib;
  evaluated = nixpkgsLib.evalModules {
    modules = [
      ./nixos.nix
      ../default.nix
      { _module.args.pkgs = import ./pkgs.nix { lib = nixpkgsLib; }; }
    ];
  };
  entries = nixpkgsLib.optionAttrSetToDocList evaluated.options.services.npcnix
    ++ nixpkgsLib.optionAttrSetToDocList evaluated.options.services.npcnix-witness;
in
map
  (o: {
    inherit (o) name description type readOnly;
    default = o.default or null;
    example = o.example or null;
  })
  (builtins.filter (o: o.visible && !o.internal) entries)
