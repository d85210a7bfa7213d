# A stand-in for the few attributes of nixpkgs' `pkgs` that ../default.nix
# and ../options.nix use, for ./eval.nix. The module system, option types
# and merging are the real ones (nixpkgs' lib); only packages are fake:
# nothing here is built, so a package is an attrset that the option types
# accept as a derivation, with a recognisable store path.
{ lib }:
let
  fakePackage = name: {
    type = "derivation";
    inherit name;
    pname = name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
    meta.mainProgram = name;
  };
in
{
  npcnix = fakePackage "npcnix";
  gitMinimal = fakePackage "git-minimal";
  nix = fakePackage "nix";
  openssh = fakePackage "openssh";
  nixos-rebuild = fakePackage "nixos-rebuild";

  # pkgs.formats.json as in nixpkgs (pkgs/pkgs-lib/formats.nix): `type` is
  # the JSON value type (the same definition, so settings are type-checked
  # and merged as they would be); `generate` would build the file with jq.
  # Here it returns a fake file that carries the value, so the checks can
  # read what would be written.
  formats.json = { }: {
    type =
      let
        valueType = lib.types.nullOr (lib.types.oneOf [
          lib.types.bool
          lib.types.int
          lib.types.float
          lib.types.str
          lib.types.path
          (lib.types.attrsOf valueType)
          (lib.types.listOf valueType)
        ]) // {
          description = "JSON value";
        };
      in
      valueType;
    generate = name: value: fakePackage name // { npcnixJsonValue = value; };
  };
}
