# NixOS module for an npcnix witness: `services.npcnix-witness`.
#
#   ./witness-options.nix  option declarations
#   this file              wiring: user, systemd service and timer, assertions
#
# Imported by ./default.nix, so `nixosModules.*` of the flake provide both
# the agent and the witness; each is off unless enabled.
#
# Unlike the agent, the witness activates nothing: each run reads a log's
# checkpoint and tiles from a store, checks a consistency proof, writes one
# small file in its state directory and one object in the store, and
# exits. So it runs as an unprivileged user of its own, in the sandbox of a
# network client: no capabilities, a read-only system, its key handed over
# as a credential. ./check asserts the load-bearing parts (eval/check.py,
# witness_invariants).
{ config, lib, ... }:
let
  cfg = config.services.npcnix-witness;

  # StateDirectory= only manages directories below /var/lib.
  stateDirUnderVarLib = lib.hasPrefix "/var/lib/" cfg.stateDir;

  # file:// stores are directories the witness writes its cosignature into;
  # ProtectSystem=strict makes everything else read-only. ("-": a store
  # that is missing fails its own run, not the unit's namespace setup.)
  fileStoreDirs = lib.concatMap
    (l:
      let m = builtins.match "file://(/.*)" l.remote; in
      if m == null then [ ] else [ (builtins.head m) ])
    cfg.logs;

  # The arguments of one log's run after `--remote` (the URL comes first:
  # the script names the log by it). "${...}": a path literal logKey is
  # copied to the store (public data), a string is used as it is.
  logArgs = l:
    [ l.remote "--log-key" "${l.logKey}" ]
    ++ lib.optionals (l.remoteName != null) [ "--remote-name" l.remoteName ]
    ++ lib.optionals (l.endpoint != null) [ "--endpoint" l.endpoint ]
    ++ lib.optionals (l.region != null) [ "--remote-region" l.region ]
    ++ lib.optional l.pathStyle "--path-style";

  remotes = map (l: l.remote) cfg.logs;
  duplicateRemotes = lib.unique (builtins.filter
    (r: builtins.length (builtins.filter (x: x == r) remotes) > 1)
    remotes);

  inStore = p: p != null && builtins.match "/+nix/+store(/.*)?" p != null;
in
{
  imports = [ ./witness-options.nix ];

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.logs != [ ];
        message = "services.npcnix-witness.logs is empty: the witness would cosign nothing.";
      }
      {
        assertion = duplicateRemotes == [ ];
        message = ''
          services.npcnix-witness.logs: each remote may be listed once:
          ${lib.concatMapStringsSep ", " (r: "\"${r}\"") duplicateRemotes}'';
      }
      {
        # The store is world-readable: a secret there is no secret.
        assertion = !inStore cfg.keyFile;
        message = ''
          services.npcnix-witness.keyFile = "${cfg.keyFile}" is in the Nix store, which every
          user can read (anyone could cosign a forked log in this witness's name); keep the
          key in a private file outside it (e.g. /run/secrets/..., from sops-nix or agenix).'';
      }
      {
        assertion = !inStore cfg.environmentFile;
        message = ''
          services.npcnix-witness.environmentFile = "${toString cfg.environmentFile}" is in the Nix
          store, which every user can read; keep credentials in a private file outside it.'';
      }
      {
        # Created (or chmod'ed and chown'ed) 0700 for the witness user: a
        # directory of its own, never a system directory or the agent's.
        assertion = builtins.match
          "/+(bin|boot|dev|etc|home|nix|nix/store|nix/var|opt|proc|root|run|srv|sys|tmp|usr|var|var/lib|var/log|var/cache)?/*"
          cfg.stateDir == null
          && !(config.services.npcnix.enable && cfg.stateDir == config.services.npcnix.stateDir);
        message = ''
          services.npcnix-witness.stateDir = "${cfg.stateDir}" is a system directory or the
          agent's; use a directory of its own, e.g. "/var/lib/npcnix-witness".'';
      }
    ];

    # For `npcnix witness --print-key` on this machine.
    environment.systemPackages = [ cfg.package ];

    users.users.npcnix-witness = {
      isSystemUser = true;
      group = "npcnix-witness";
      description = "npcnix witness";
    };
    users.groups.npcnix-witness = { };

    systemd.tmpfiles.rules = lib.optional (!stateDirUnderVarLib)
      "d ${cfg.stateDir} 0700 npcnix-witness npcnix-witness - -";

    systemd.services.npcnix-witness = {
      description = "npcnix witness: cosign remotes' release logs that only grew";
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      environment = config.networking.proxy.envVars;

      # NixOS runs `script` with `bash -e`. One run per log, each tried even
      # when another failed; the unit fails if any did, with status 3 if a
      # log forked (nothing was cosigned for it; `npcnix witness` names the
      # fork on stderr, in the journal), else 1.
      script = ''
        result=0
        witness() {
          remote="$1"
          rc=0
          ${lib.escapeShellArg "${cfg.package}/bin/npcnix"} witness --remote "$@" \
            --key "$CREDENTIALS_DIRECTORY/witness-key" \
            --name ${lib.escapeShellArg cfg.name} \
            --state-dir ${lib.escapeShellArg cfg.stateDir} || rc=$?
          if [ "$rc" -eq 3 ]; then
            echo "npcnix-witness: $remote: the log forked; refused to cosign it (exit 3)" >&2
            result=3
          elif [ "$rc" -ne 0 ]; then
            echo "npcnix-witness: $remote: failed (exit $rc)" >&2
            if [ "$result" -eq 0 ]; then result=1; fi
          fi
        }
      '' + lib.concatMapStrings (l: "witness ${lib.escapeShellArgs (logArgs l)}\n") cfg.logs + ''
        exit "$result"
      '';

      serviceConfig = {
        Type = "oneshot";
        User = "npcnix-witness";
        Group = "npcnix-witness";

        # The secret key: systemd (as root) copies it into a private,
        # read-only credentials directory for this run; it never enters the
        # store or the unit file, and the service needs no access to the
        # original.
        LoadCredential = "witness-key:${cfg.keyFile}";
        EnvironmentFile = lib.mkIf (cfg.environmentFile != null) cfg.environmentFile;

        # The heads cosigned last: must persist (docs/witness.md).
        StateDirectory = lib.mkIf stateDirUnderVarLib (lib.removePrefix "/var/lib/" cfg.stateDir);
        StateDirectoryMode = "0700";
        ReadWritePaths = lib.mkIf (!stateDirUnderVarLib || fileStoreDirs != [ ])
          (lib.optional (!stateDirUnderVarLib) cfg.stateDir ++ map (d: "-${d}") fileStoreDirs);
        UMask = "0077";

        # ---- Hardening: a network client that needs no privilege --------
        NoNewPrivileges = true;
        CapabilityBoundingSet = "";
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        DevicePolicy = "closed";
        PrivateUsers = true;
        ProtectHostname = true;
        ProtectClock = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectProc = "invisible";
        ProcSubset = "pid";
        RemoveIPC = true;
        # Stores over IPv4/6; AF_UNIX for the journal. No AF_NETLINK: glibc's
        # getaddrinfo then assumes both address families are configured,
        # which is harmless for a client.
        RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [ "@system-service" "~@privileged" "~@resources" ];
        SystemCallErrorNumber = "EPERM";
      };
    };

    systemd.timers.npcnix-witness = {
      description = "Run the npcnix witness every ${cfg.interval}";
      wantedBy = [ "timers.target" ];
      # Monotonic timers: a timer started after OnBootSec has passed (the
      # switch that enables it, a boot) fires at once, so no run is lost to
      # downtime. Persistent= applies to OnCalendar= only and is not set.
      timerConfig = {
        OnBootSec = cfg.interval;
        OnUnitActiveSec = cfg.interval;
      };
    };
  };
}
