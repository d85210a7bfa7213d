# NixOS VM test of the module and the agent: `nix build .#checks.x86_64-linux.vm`
# (or `nix flake check`).
#
# NOT run in this project's CI: that machine has no nixpkgs and no network, so
# it only runs ./check (the module system, without packages). Run this where nixpkgs is
# available and KVM is (it works without KVM, slowly).
#
# What it shows, end to end, on a real NixOS system:
#   - the module evaluates, the unit starts, the hardening settings are
#     applied and the state directory is private (0700);
#   - the config the module renders passes `npcnix config check`;
#   - a release signed by the pinned key is verified and activated
#     (activation = "test", with a stand-in system toplevel that records the call);
#   - a later release signed by an unknown key is refused and not activated;
#   - a following, properly signed release is activated again.
#
# The released flake has no inputs (no nixpkgs in the VM): its
# nixosConfigurations.machine.config.system.build.toplevel is a tiny
# derivation whose bin/switch-to-configuration appends "<action> <release>"
# to /run/npcnix-vmtest-activations. That is enough for nixos-rebuild.
#
# The signing key is ./tests/vm/snakeoil.key: unencrypted and public in this
# repository, for this test only.
{ pkgs, self }:
let
  inherit (pkgs) lib;
  remoteDir = "/srv/npcnix-store/remotes/vmtest";
  snakeoilPub = lib.last (lib.splitString "\n" (lib.removeSuffix "\n" (builtins.readFile ./tests/vm/snakeoil.pub)));

  releasedFlake = pkgs.writeText "flake.nix" ''
    {
      outputs = { self }: {
        nixosConfigurations.machine.config.system.build.toplevel = derivation {
          name = "npcnix-vmtest-toplevel-@RELEASE@";
          system = "${pkgs.stdenv.hostPlatform.system}";
          builder = "/bin/sh";
          args = [ "-c" '''
            PATH=/run/current-system/sw/bin:/usr/bin:/bin
            mkdir -p $out/bin
            printf '#!/bin/sh\necho "$1 @RELEASE@" >> /run/npcnix-vmtest-activations\n' > $out/bin/switch-to-configuration
            chmod +x $out/bin/switch-to-configuration
          ''' ];
        };
      };
    }
  '';
  releasedLock = pkgs.writeText "flake.lock" (builtins.toJSON {
    nodes.root = { };
    root = "root";
    version = 7;
  });
in
pkgs.testers.runNixOSTest {
  name = "npcnix";

  nodes.machine = { lib, ... }: {
    imports = [ self.nixosModules.default ];

    services.npcnix = {
      enable = true;
      remote = "file://${remoteDir}";
      configuration = "machine";
      trustedKeys = [
        { publicKey = snakeoilPub; remotes = [ "vmtest" ]; comment = "VM test snakeoil key"; }
      ];
      interval = 2;
      jitter = 0;
      activation = "test";
    };

    # Offline VM: no substituters, no global flake registry. The stand-in
    # toplevel is built with /bin/sh and the system's coreutils, hence no
    # sandbox (test VM only).
    nix.settings = {
      experimental-features = [ "nix-command" "flakes" ];
      substituters = lib.mkForce [ ];
      flake-registry = "";
      sandbox = false;
    };

    # An empty remote exists from boot on, so the agent's first polls find
    # "nothing published yet" rather than a missing store.
    systemd.tmpfiles.rules = [ "d ${remoteDir} 0755 root root - -" ];

    environment.etc."npcnix-test/snakeoil.key".source = ./tests/vm/snakeoil.key;
    environment.etc."npcnix-test/flake.nix".source = releasedFlake;
    environment.etc."npcnix-test/flake.lock".source = releasedLock;
  };

  testScript = ''
    import json

    def publish(release, key):
        machine.succeed(
            "rm -rf /root/src && mkdir -p /root/src",
            f"sed 's/@RELEASE@/{release}/g' /etc/npcnix-test/flake.nix > /root/src/flake.nix",
            "cp /etc/npcnix-test/flake.lock /root/src/flake.lock",
            f"npcnix publish --remote file://${remoteDir} --key {key} --src /root/src",
        )

    machine.wait_for_unit("npcnix.service")

    with subtest("rendered config is accepted by the agent"):
        machine.succeed("npcnix config check /etc/npcnix/config.json")
        cfg = json.loads(machine.succeed("cat /etc/npcnix/config.json"))
        assert cfg["remote"]["name"] == "vmtest", cfg
        assert cfg["format"] == "npcnix-host-config/v1", cfg

    with subtest("unit hardening and private state"):
        props = machine.succeed(
            "systemctl show npcnix.service -p NoNewPrivileges -p RestrictRealtime "
            "-p LockPersonality -p KillMode -p StateDirectoryMode"
        )
        for expected in ["NoNewPrivileges=yes", "RestrictRealtime=yes",
                         "LockPersonality=yes", "KillMode=mixed"]:
            assert expected in props, props
        assert machine.succeed("stat -c %a /var/lib/npcnix").strip() == "700"

    machine.succeed(
        "install -m 0600 /etc/npcnix-test/snakeoil.key /root/snakeoil.key",
        "npcnix keygen --out /root/unknown --unencrypted",
    )

    with subtest("release signed by the pinned key is activated"):
        publish("R1", "/root/snakeoil.key")
        machine.wait_until_succeeds("grep -qx 'test R1' /run/npcnix-vmtest-activations", timeout=300)

    with subtest("release signed by an unknown key is refused"):
        publish("R2", "/root/unknown.key")
        machine.sleep(20)  # several polls (interval 2s)
        machine.fail("grep -q R2 /run/npcnix-vmtest-activations")
        print(machine.succeed("npcnix status --config /etc/npcnix/config.json || true"))

    with subtest("the next properly signed release is activated"):
        publish("R3", "/root/snakeoil.key")
        machine.wait_until_succeeds("grep -qx 'test R3' /run/npcnix-vmtest-activations", timeout=300)
        machine.fail("grep -q R2 /run/npcnix-vmtest-activations")

    print(machine.succeed("journalctl -u npcnix.service --no-pager | tail -n 50"))
  '';
}
