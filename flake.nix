{
  description = "npcnix: security-first, pull-based deployment of NixOS flakes from a signed store";

  # One input on purpose: everything a host needs to trust comes from here.
  # A NixOS release branch whose rustc satisfies Cargo.toml's rust-version,
  # pinned in flake.lock. (nixos-module/check verifies that this stays the
  # only input, that flake.lock pins it, and that the docs use the same
  # release.)
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs = { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;

      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      cargoToml = lib.importTOML ./Cargo.toml;

      # The crate's sources only: the Nix, Terraform and CI files next to it
      # must not cause a rebuild (and are not needed to build).
      src = lib.cleanSourceWith {
        name = "npcnix-source";
        src = lib.cleanSource ./.;
        filter = path: _type:
          let
            rel = lib.removePrefix (toString ./. + "/") (toString path);
            top = lib.head (lib.splitString "/" rel);
          in
          !(lib.elem top [
            "target"
            "fuzz"
            "nixos-module"
            "terraform"
            ".ci"
            "flake.nix"
            "flake.lock"
          ]);
      };

      mkNpcnix = pkgs: pkgs.rustPlatform.buildRustPackage {
        pname = cargoToml.package.name;
        version = cargoToml.package.version;
        inherit src;
        cargoLock.lockFile = ./Cargo.lock;

        # `cargo test` runs in the build sandbox: no network. The interop
        # tests use the stock minisign when it is on PATH.
        nativeCheckInputs = [ pkgs.minisign ];

        meta = {
          description = cargoToml.package.description;
          license = with lib.licenses; [ mit asl20 ];
          mainProgram = "npcnix";
          platforms = lib.platforms.linux;
        };
      };
    in
    {
      packages = forAllSystems (pkgs: rec {
        npcnix = mkNpcnix pkgs;
        default = npcnix;
        # Statically linked (musl, nixpkgs' pkgsStatic): the binary that
        # terraform/install downloads on first boot (npcnix_url), so that no
        # host compiles Rust; it needs neither the loader nor a libc. The
        # test suite runs in `npcnix`. scripts/build-static builds the
        # equivalent with cargo (glibc, crt-static) outside Nix.
        npcnix-static = (mkNpcnix pkgs.pkgsStatic).overrideAttrs (_: { doCheck = false; });
      });

      # For hosts that build npcnix with their own nixpkgs.
      overlays.default = final: _prev: { npcnix = mkNpcnix final; };

      # The module alone: services.npcnix.package defaults to pkgs.npcnix
      # (use it with overlays.default, or set the package yourself).
      nixosModules.npcnix = import ./nixos-module;

      # The module with services.npcnix.package defaulting to this flake's
      # build (pinned nixpkgs, the toolchain this repository is tested with).
      nixosModules.default = { lib, pkgs, ... }: {
        imports = [ ./nixos-module ];
        services.npcnix.package =
          lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.npcnix;
      };

      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          program = lib.getExe self.packages.${pkgs.stdenv.hostPlatform.system}.npcnix;
          meta.description = "npcnix command line (keygen, pack, publish, install, follow, ...)";
        };
      });

      # `nix flake check` needs nixpkgs, which the project's CI does not
      # have; CI runs the checks that need none (nixos-module/check,
      # terraform/check) instead. Run these where nixpkgs is available.
      checks = forAllSystems (pkgs: {
        npcnix = self.packages.${pkgs.stdenv.hostPlatform.system}.npcnix;
        vm = import ./nixos-module/vm-test.nix { inherit pkgs self; };
      });
    };
}
