# NixOS module for the npcnix agent: `services.npcnix`.
#
#   ./options.nix      option declarations
#   ./host-config.nix  options -> /etc/npcnix/config.json (a pure function)
#   ./assertions.nix   cross-option checks (a pure function)
#   ./witness.nix      `services.npcnix-witness`, a log witness (issue 37)
#   this file          wiring: config file, systemd unit, assertions
#
# ./check evaluates this file with nixpkgs' real module system
# (lib.evalModules) and asserts on the unit, the rendered config and the
# assertions; see ./eval/.
#
# The agent runs `nixos-rebuild`, so it runs as root and cannot be sandboxed
# the way a network daemon can. The hardening below is restricted to settings
# that cannot break an activation; the reasoning for every setting, including
# the ones deliberately left out, is next to it.
{ config, lib, pkgs, ... }:
let
  cfg = config.services.npcnix;

  # settings first, the typed options over it; ./assertions.nix refuses any
  # field both define, so the order only matters for nested objects.
  hostConfig = lib.recursiveUpdate cfg.settings (import ./host-config.nix cfg);
  configFile = (pkgs.formats.json { }).generate "npcnix.json" hostConfig;

  bootMode = cfg.activation == "boot"
    || (cfg.activation == "toplevel" && cfg.toplevelAction == "boot");

  # StateDirectory= only manages directories below /var/lib.
  stateDirUnderVarLib = lib.hasPrefix "/var/lib/" cfg.stateDir;

  # The fleet's policy file: this remote's keys and threshold (the same
  # file publishers read). The remote name as host-config.nix derives it.
  policyRemote =
    let
      m = builtins.match "[a-z0-9+.-]+://(.*/)?([^/]+)/*" cfg.remote;
    in
    if cfg.remoteName != null then cfg.remoteName
    else if m == null then null
    else builtins.elemAt m 1;
  policy =
    let
      file = builtins.fromJSON (builtins.readFile cfg.policyFile);
    in
    if file.format or null != "npcnix-policy/v1" then
      throw "services.npcnix.policyFile: ${toString cfg.policyFile} is not an npcnix-policy/v1 file"
    else if !(file.remotes ? ${policyRemote}) then
      throw "services.npcnix.policyFile: ${toString cfg.policyFile} has no entry for remote \"${policyRemote}\" (it lists: ${lib.concatStringsSep ", " (builtins.attrNames file.remotes)})"
    else file.remotes.${policyRemote};
in
{
  imports = [ ./options.nix ./witness.nix ];

  config = lib.mkIf cfg.enable {
    # Set here rather than in options.nix because it reads another module's
    # option; options.nix shows it as defaultText.
    services.npcnix.configuration = lib.mkOptionDefault config.networking.hostName;

    # A policy file's keys, per role (release keys carry no `role`).
    services.npcnix.trustedKeys = lib.mkIf (cfg.policyFile != null) (lib.mkDefault (
      let
        keysOf = role: map (k: {
          publicKey = k.public_key;
          remotes = [ policyRemote ];
          notAfter = k.not_after or null;
          comment = k.comment or null;
        } // lib.optionalAttrs (role != "release") { inherit role; });
      in
      keysOf "release" policy.keys
      ++ keysOf "timestamp" ((policy.timestamp or { keys = [ ]; }).keys)
      ++ keysOf "rollout" ((policy.rollout or { keys = [ ]; }).keys)));
    services.npcnix.rolloutThreshold = lib.mkIf (cfg.policyFile != null && policy ? rollout)
      (lib.mkDefault (policy.rollout.threshold or 1));
    services.npcnix.threshold = lib.mkIf (cfg.policyFile != null) (lib.mkDefault policy.threshold);
    services.npcnix.freshness.required = lib.mkIf (cfg.policyFile != null) (lib.mkDefault (policy ? timestamp));
    services.npcnix.freshness.threshold = lib.mkIf (cfg.policyFile != null && policy ? timestamp)
      (lib.mkDefault (policy.timestamp.threshold or 1));
    services.npcnix.maxVersionJump = lib.mkIf (cfg.policyFile != null && (policy.max_version_jump or null) != null)
      (lib.mkDefault policy.max_version_jump);

    assertions = import ./assertions.nix cfg;

    warnings =
      lib.optional (cfg.allowReboot && !bootMode) ''
        services.npcnix.allowReboot has no effect with activation = "${cfg.activation}"${lib.optionalString (cfg.activation == "toplevel") " and toplevelAction = \"${cfg.toplevelAction}\""}:
        the agent reboots only after boot-mode activations.''
      ++ lib.optional (cfg.rebootWindow != null && !cfg.allowReboot) ''
        services.npcnix.rebootWindow is set but allowReboot is false: the host is never rebooted.'';

    environment.systemPackages = [ cfg.package ];

    # The agent's network side (TLS, HTTP, S3 XML: every byte from the
    # store) runs as this user in `npcnix fetch-worker`, never as root; the
    # root side re-verifies what it hands over. See docs/decisions.md D29.
    users.users.npcnix-fetch = {
      isSystemUser = true;
      group = "npcnix-fetch";
      description = "npcnix unprivileged fetch worker";
    };
    users.groups.npcnix-fetch = { };

    # Public data only (URLs, public keys, policy): a store symlink is fine.
    environment.etc."npcnix/config.json".source = configFile;

    systemd.tmpfiles.rules = lib.optional (!stateDirUnderVarLib)
      "d ${cfg.stateDir} 0700 root root - -"
    # The textfile collector's directory (node-exporter reads it as its own
    # user: world-readable, written by root only).
    ++ lib.optional (cfg.metricsPath != null)
      "d ${dirOf cfg.metricsPath} 0755 root root - -";

    systemd.services.npcnix = {
      description = "npcnix: follow a signed remote and activate its releases";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" "nix-daemon.socket" ];

      # The agent runs the activation itself. If switch-to-configuration
      # restarted this unit, it would kill the process that is waiting for
      # the activation to finish (and recording its outcome). So it is never
      # restarted by an activation; instead, once it has recorded a
      # successful switch, the agent exits with code 75 and systemd restarts
      # it (RestartForceExitStatus below) with its new binary and config.
      restartIfChanged = false;
      # Likewise, a release that removes or renames this unit must not stop
      # it in the middle of its own activation (same as nixos-upgrade.service
      # in nixpkgs). The old agent keeps running until it exits or the host
      # reboots.
      unitConfig.X-StopOnRemoval = false;

      # What nixos-rebuild needs besides the unit's default PATH (coreutils,
      # findutils, grep, sed, systemd): nix, the nixos-rebuild of this
      # system, git and ssh (flake inputs of type git / git+ssh), as in
      # nixpkgs' nixos-upgrade.service. systemd-run is on the default PATH;
      # nixos-rebuild uses it to run switch-to-configuration in a transient
      # unit of its own.
      path = [
        config.nix.package
        config.system.build.nixos-rebuild
        pkgs.gitMinimal
        config.programs.ssh.package
      ];

      environment =
        config.nix.envVars
        // config.networking.proxy.envVars
        // {
          # Nix keeps caches under $HOME/.cache; system services have no HOME.
          HOME = "/root";
          # glibc gives each thread that allocates an arena of its own and
          # keeps what was freed in it: a long-running agent whose
          # activations run on short-lived threads grew its private memory
          # for a while after each new peak. Two arenas bound that (issue
          # 38, bench/analysis.md, "Memory over time"); the agent's heap
          # itself does not grow.
          MALLOC_ARENA_MAX = "2";
          # Fixed thresholds: glibc otherwise raises the mmap threshold after
          # freeing a large buffer (a 2 MiB zstd window), moving later large
          # buffers into the heap, whose freed pages stay resident: private
          # memory then creeps under churn (issue 38, bench/analysis.md).
          MALLOC_MMAP_THRESHOLD_ = "131072";
          # And the top of the heap goes back to the kernel once 64 KiB of
          # it is free, with no pad kept: what a poll's transient touched
          # there otherwise stayed resident, a step of up to 256 KiB in the
          # idle agent's private memory the first time a larger transient
          # came (issue 38).
          MALLOC_TRIM_THRESHOLD_ = "65536";
          MALLOC_TOP_PAD_ = "0";
        }
        // lib.optionalAttrs config.nix.enable {
          # Builds and substitutions go through nix-daemon, so they run in the
          # daemon's sandbox (build users, namespaces) and are not subject to
          # this unit's seccomp filters below (LockPersonality would break
          # i686 builds, for example).
          NIX_REMOTE = "daemon";
        };

      serviceConfig = {
        Type = "simple";
        ExecStart = "${cfg.package}/bin/npcnix follow --config /etc/npcnix/config.json --exit-after-switch";

        # Credentials and endpoints for S3 outside EC2. Read by systemd (as
        # root) at start, so the file can be private; never in the store.
        EnvironmentFile = lib.mkIf (cfg.environmentFile != null) cfg.environmentFile;

        # A crash or a config error is retried, slowly. A clean exit (e.g.
        # `npcnix pause`, if it ever exits) is not.
        Restart = "on-failure";
        RestartSec = "30s";
        # After recording a successful switch the agent exits with 75
        # (--exit-after-switch) so that it is restarted with the new binary
        # and the new config (e.g. rotated trusted keys).
        RestartForceExitStatus = "75";

        # Stopping the unit (shutdown, `systemctl stop`) sends SIGTERM to the
        # agent only, not to a nixos-rebuild it is running: the agent stops
        # polling and waits for the activation to finish. Only if it is still
        # running after TimeoutStopSec does systemd SIGKILL what is left.
        # (switch-to-configuration itself runs in its own transient unit and
        # is not part of this cgroup when systemd-run works.)
        KillMode = "mixed";
        TimeoutStopSec = "15min";

        # Private state: nobody else may read the audit log, the state file
        # or extracted releases. The mode applies to StateDirectory= below;
        # for a stateDir outside /var/lib the tmpfiles rule above sets 0700.
        StateDirectory = lib.mkIf stateDirUnderVarLib (lib.removePrefix "/var/lib/" cfg.stateDir);
        StateDirectoryMode = "0700";

        # ---- Hardening ---------------------------------------------------
        #
        # What runs inside this unit: the agent (network, parsing untrusted
        # bytes, extraction into stateDir), the nix client evaluating the
        # released flake, and `nixos-rebuild`. nixos-rebuild runs
        # switch-to-configuration in a transient unit of its own (systemd-run
        # --unit=nixos-rebuild-switch-to-configuration), but it falls back to
        # running it right here when systemd-run does not work, and older
        # nixos-rebuild versions always do. Whatever is restricted here would
        # then also restrict the activation script of *every future
        # configuration*: user home creation, /etc, /boot and EFI variables,
        # the hostname, mounts, setuid wrappers. The rule is therefore: only
        # restrictions an activation can never need to break.
        #
        # Enabled:

        # Root needs no setuid binary to gain privileges, and units that the
        # activation (re)starts are spawned by PID 1, not by us, so they are
        # not affected. Denies privilege gain through setuid/file caps for
        # the agent and anything it spawns.
        NoNewPrivileges = true;
        # No realtime scheduling: an agent or health check spinning at RT
        # priority could starve the host.
        RestrictRealtime = true;
        # No personality(2) changes (e.g. READ_IMPLIES_EXEC). Builds that need
        # PER_LINUX32 (i686) run in nix-daemon, see NIX_REMOTE above.
        LockPersonality = true;
        # Only native syscalls: no 32-bit compat syscall ABI for an exploit to
        # hide in. Same caveat (builds are in the daemon).
        SystemCallArchitectures = "native";
        # Network for the store (IPv4/6), local sockets for nix-daemon,
        # D-Bus and systemd-run, netlink because glibc's getaddrinfo uses it
        # (AI_ADDRCONFIG). Nothing else (no raw/packet sockets).
        RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" "AF_NETLINK" ];

        # Deliberately NOT enabled (each would break some activation when it
        # runs in this unit, see above):
        #
        # ProtectSystem=*: the activation writes /etc, /boot, /nix/var (the
        #   system profile) and /usr/bin/env, /bin/sh.
        # ProtectHome=*: creating users creates their home directories;
        #   nix also writes /root/.cache.
        # PrivateTmp, PrivateDevices, ProtectKernelTunables,
        #   ProtectControlGroups, ProtectKernelLogs, ProtectProc,
        #   ReadOnlyPaths...: all of these give the unit its own mount
        #   namespace. Mounts the activation makes (the /etc overlay of
        #   system.etc.overlay, special filesystems) would then exist only in
        #   this namespace and not for the rest of the system.
        #   ProtectKernelTunables also makes /sys read-only, which breaks
        #   bootloader installation (EFI variables).
        # ProtectHostname: the activation sets the hostname.
        # ProtectClock: implies a device allow-list (DeviceAllow=char-rtc),
        #   which cuts access to block devices (grub-install on BIOS hosts).
        # ProtectKernelModules: the activation may load kernel modules.
        # RestrictSUIDSGID: the activation creates setuid wrappers on older
        #   NixOS releases (and in the fallback path).
        # MemoryDenyWriteExecute: inherited by every activation script and
        #   health check; breaks anything with a JIT.
        # RestrictNamespaces, SystemCallFilter=@system-service: the
        #   activation mounts, and tools it runs may use namespaces.
        # CapabilityBoundingSet: activation needs all of root's capabilities.
        # UMask=0077: inherited by the activation, which would create
        #   directories other users cannot traverse. The agent creates its
        #   own files with explicit modes, and the state directory is 0700,
        #   so nothing under it is reachable by others anyway.
      };
    };
  };
}
