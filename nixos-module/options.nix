# Options of `services.npcnix`: declarations only, no implementation.
#
# The implementation (systemd unit, /etc/npcnix/config.json) lives in
# ./default.nix; the translation of these options into the host config JSON
# lives in ./host-config.nix (a pure function); the cross-option checks live
# in ./assertions.nix (pure as well). ./check evaluates all of it with
# nixpkgs' module system and generates the options reference in
# docs/nixos.md from the declarations here.
{ lib, pkgs, ... }:
let
  inherit (lib) mkOption types literalExpression;

  # A remote name: the last path segment of a remote URL, and the scope a
  # trusted key is valid for. Same rule as the agent's RemoteName (1-64
  # characters from a-z 0-9 . _ -, starting with a letter or digit), because
  # it is part of the signed trusted comment (`remote=<name>`).
  remoteNameRegex = "[a-z0-9][a-z0-9._-]{0,63}";
  remoteNameType = types.strMatching remoteNameRegex;

  # A host ID: its rollout slot and its receipt's key (`hosts/<id>.json`).
  # The agent's rule (format::rollout::is_host_id): 1-64 characters from
  # a-z 0-9 . _ -, starting with a letter or digit.
  hostIdType = types.strMatching "[a-z0-9][a-z0-9._-]{0,63}";

  absolutePath = types.strMatching "/.+";

  # HH:MM, 00:00-23:59 (system.autoUpgrade.rebootWindow takes any two digit
  # pairs; the agent parses the same strict form).
  timeOfDay = types.strMatching "([01][0-9]|2[0-3]):[0-5][0-9]";

  jsonFormat = pkgs.formats.json { };

  # Every resource limit is optional: null means "use npcnix's built-in
  # default" (documented in docs/protocol.md), so the defaults have one home.
  limit = description: mkOption {
    type = types.nullOr types.ints.positive;
    default = null;
    inherit description;
  };

  trustedKeyModule = {
    options = {
      publicKey = mkOption {
        type = types.str;
        example = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3";
        description = ''
          A minisign public key: the base64 `RW...` string (56 characters)
          printed by `npcnix keygen` or found on the second line of a
          minisign `.pub` file.
        '';
      };
      remotes = mkOption {
        type = types.listOf (types.strMatching "[*]|${remoteNameRegex}");
        example = [ "prod" ];
        description = ''
          Names of the remotes this key may sign for. A release for remote
          `prod` only counts signatures by keys whose `remotes` contain
          `"prod"` (or `"*"`, which means every remote: avoid it for
          production keys). Scoping a CI key to `[ "dev" ]` means a leaked CI
          key cannot ship anything to production hosts.
        '';
      };
      notAfter = mkOption {
        type = types.nullOr types.ints.unsigned;
        default = null;
        example = 1767225600;
        description = ''
          Unix time (seconds) after which signatures by this key are no longer
          accepted. `null`: no expiry. Use it for keys that are being rotated
          out.
        '';
      };
      comment = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "offline release key, 2025";
        description = "Free-form note shown in logs and `npcnix status`.";
      };
      role = mkOption {
        type = types.enum [ "release" "timestamp" "rollout" "log" ];
        default = "release";
        description = ''
          What the key may sign: `release` statements (counted toward
          `threshold`), or only the head's freshness `timestamp`
          (`freshness`; an online key that can delay the freshness cliff
          and nothing else), or only `rollout` decisions: promotions that
          open a gated stage of a release's wave and halts
          (`rolloutThreshold`; a CI key that can open or close stages of
          releases the release keys signed, and nothing else), or only
          the checkpoints of the remote's witnessed release `log` (the key
          publishers pass as `npcnix publish --log-key`; `witnesses` needs
          exactly one, scoped to the followed remote; docs/witness.md).
          A log key alone can put nothing on a host: releases still need
          `threshold` release signatures.
        '';
      };
    };
  };

  healthCheckModule = {
    options = {
      command = mkOption {
        type = types.listOf types.str;
        example = literalExpression ''[ "''${pkgs.curl}/bin/curl" "-fsS" "http://127.0.0.1/health" ]'';
        description = ''
          Program and arguments (no shell) run after a successful switch. A
          non-zero exit, or running longer than `timeout`, rolls the host back
          to the previous generation and marks the release bad (it is never
          retried in a loop).
        '';
      };
      timeout = mkOption {
        type = types.ints.positive;
        default = 120;
        description = "Seconds the health check may take.";
      };
    };
  };

  hookModule = {
    options = {
      command = mkOption {
        type = types.nonEmptyListOf types.str;
        example = literalExpression ''[ "''${pkgs.curl}/bin/curl" "-fsS" "-d" "npcnix" "https://hooks.example.com/deploy" ]'';
        description = ''
          Program (an absolute path) and arguments (no shell), run after the
          agent recorded a decision, with `NPCNIX_EVENT`, `NPCNIX_REMOTE`,
          `NPCNIX_HOST_ID`, `NPCNIX_TIME` and, where they apply,
          `NPCNIX_VERSION`, `NPCNIX_STATEMENT`, `NPCNIX_CHECK`,
          `NPCNIX_DETAIL`. It cannot change the decision; a failure is
          logged and counted (`npcnix_hook_failures_total`).
        '';
      };
      events = mkOption {
        type = types.listOf (types.enum [ "activated" "refused" "rolled-back" "rollback-failed" "probation-armed" "confirmed" "stale" ]);
        default = [ "activated" "refused" "rolled-back" "rollback-failed" "probation-armed" "confirmed" "stale" ];
        description = "Events that run it (`refused`: once per change of the refusing check; `stale`: once when no poll ended well for `hookStaleAfter` seconds).";
      };
      timeout = mkOption {
        type = types.ints.between 1 3600;
        default = 30;
        description = "Seconds before the hook (and its process group) is killed.";
      };
    };
  };

  limitsModule = {
    options = {
      archiveBytes = limit "Maximum compressed archive size in bytes.";
      unpackedBytes = limit "Maximum total size of the extracted files in bytes.";
      entries = limit "Maximum number of entries in an archive.";
      depth = mkOption {
        type = types.nullOr (types.ints.between 1 4294967295);
        default = null;
        description = "Maximum number of path components of an archive entry.";
      };
      pathBytes = mkOption {
        type = types.nullOr (types.ints.between 1 4096);
        default = null;
        description = "Maximum length of an archive entry path (and symlink target) in bytes.";
      };
      fileBytes = limit "Maximum size of a single extracted file in bytes.";
      zstdWindowLog = mkOption {
        type = types.nullOr (types.ints.between 10 31);
        default = null;
        description = ''
          Maximum zstd window (log2 of bytes) the decoder accepts; bounds the
          decoder's memory use. `null`: 21 (2 MiB), the window npcnix packs
          with; archives made by other tools with a bigger window (`zstd -19`
          uses 23) need it raised.
        '';
      };
    };
  };
in
{
  options.services.npcnix = {
    enable = lib.mkEnableOption "npcnix, the pull-based deployment agent (`npcnix follow`)";

    package = lib.mkPackageOption pkgs "npcnix" {
      extraDescription = ''
        The npcnix flake's `nixosModules.default` sets it to the flake's own
        build; with `nixosModules.npcnix`, add the flake's `overlays.default`
        (which provides `pkgs.npcnix`) or set it yourself.
      '';
    };

    settings = mkOption {
      type = types.submodule { freeformType = jsonFormat.type; };
      default = { };
      example = literalExpression ''
        {
          # host-config fields this module has no option for
          remote.min_rate_bytes_per_sec = 65536;
          policy.max_future_skew_secs = 120;
        }
      '';
      description = ''
        Extra fields of the host config (`/etc/npcnix/config.json`, the JSON
        described in docs/protocol.md), merged under what the typed options
        render: any field the agent knows can be set without a new module
        release. A field that a typed option also renders is refused (an
        assertion names it), so a setting here never silently loses to, or
        overrides, a typed option. The agent refuses unknown fields, so a
        misspelt one fails `npcnix config check` and the agent's start
        instead of being ignored.
      '';
    };

    environmentFile = mkOption {
      type = types.nullOr absolutePath;
      default = null;
      example = "/run/secrets/npcnix-s3.env";
      description = ''
        A file of `NAME=value` lines that systemd loads into the agent's
        environment (`EnvironmentFile=`), for S3 credentials and endpoints on
        hosts outside EC2 (MinIO, Garage, R2, ...): `AWS_ACCESS_KEY_ID`,
        `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL`, `AWS_REGION`. systemd
        reads it as root, so it can be mode 0600; the agent passes the
        environment on to its unprivileged fetch worker, which needs the
        credentials. Give the path as a string (e.g. from sops-nix or
        agenix): a Nix path literal would copy the secret into the
        world-readable store, and is refused, as is a path in /nix/store.
      '';
    };

    lockout = {
      inspect = mkOption {
        type = types.nullOr types.bool;
        default = null;
        defaultText = lib.literalMD "`null`: the agent's default, `true`";
        description = ''
          Before switching, inspect the built system and refuse a release
          that would lock the host out of npcnix: one whose npcnix service is
          no longer enabled, whose host config no longer follows this remote,
          or that no longer trusts enough keys for it (the agent reads the
          built system's `etc/npcnix/config.json` and its
          `npcnix.service` in `multi-user.target.wants`, which this module
          writes). See docs/lockout.md. Rendered as `lockout.inspect` only
          when set.
        '';
      };
      probationSeconds = mkOption {
        type = types.nullOr types.ints.unsigned;
        default = null;
        defaultText = lib.literalMD "`null`: the agent's default, `300`";
        description = ''
          Seconds a switched-to release is on probation: unless the new
          system's agent confirms it in time (one successful poll and, if
          configured, a passing health check), the watchdog rolls the host
          back and marks the release bad. `0`: no probation. Rendered as
          `lockout.probation_secs` only when set.
        '';
      };
      watchdog = mkOption {
        type = types.nullOr (types.enum [ "systemd-run" "none" ]);
        default = null;
        defaultText = lib.literalMD "`null`: the agent's default, `\"systemd-run\"`";
        description = ''
          What rolls back a release whose probation runs out:
          `systemd-run`, a transient timer outside the service being
          replaced (so it fires even if the new release stopped the agent),
          or `none`. Rendered as `lockout.watchdog` only when set.
        '';
      };
    };

    allowReboot = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Reboot the host after a `boot`-mode activation (`activation =
        "boot"`, or `activation = "toplevel"` with `toplevelAction = "boot"`)
        whose kernel, initrd or kernel modules differ from the running ones,
        so that the release takes effect; as `system.autoUpgrade.allowReboot`.
        Only inside `rebootWindow`, if one is set. Rendered as
        `reboot.allow` (with `reboot.window`) when this or `rebootWindow` is
        set.
      '';
    };

    rebootWindow = mkOption {
      type = types.nullOr (types.submodule {
        options = {
          lower = mkOption {
            type = timeOfDay;
            example = "01:00";
            description = "Start of the window (local time, HH:MM).";
          };
          upper = mkOption {
            type = timeOfDay;
            example = "05:00";
            description = "End of the window (local time, HH:MM); may be earlier than `lower` (a window across midnight).";
          };
        };
      });
      default = null;
      example = { lower = "01:00"; upper = "05:00"; };
      description = ''
        With `allowReboot`: reboot only between `lower` and `upper` (local
        time); a release activated outside the window waits for the next
        one. `null`: any time. As `system.autoUpgrade.rebootWindow`.
      '';
    };

    remote = mkOption {
      type = types.strMatching "(s3|file|https?)://.+";
      example = "s3://example-bucket/npcnix/remotes/prod";
      description = ''
        URL of the remote this host follows: `s3://bucket/prefix`,
        `file:///path` or a read-only `https://` mirror. The store is not
        trusted for integrity: everything fetched is verified against
        `trustedKeys`.
      '';
    };

    mirrors = mkOption {
      type = types.listOf (types.strMatching "(s3|file|https?)://.+");
      default = [ ];
      example = [ "https://mirror-eu.example.com/npcnix/remotes/prod" ];
      description = ''
        Other URLs serving the same signed objects as `remote`: when the
        one in use does not answer (unreachable, 5xx, time-out, missing
        object), the agent asks the next. A mirror's answer is never
        replaced by another's: an older or tampered head is refused as
        from `remote`, and rollback protection holds across mirrors.
      '';
    };

    remoteName = mkOption {
      type = types.nullOr remoteNameType;
      default = null;
      defaultText = literalExpression "last path segment of services.npcnix.remote";
      example = "prod";
      description = ''
        Name of the remote, as signed into every release statement and its
        signatures. A release signed for another remote (say `dev`) is
        refused even if it is served from this remote's URL. `null`: the last
        path segment of `remote` (`s3://b/npcnix/remotes/prod` gives `prod`).
      '';
    };

    configuration = mkOption {
      # The agent accepts 1-128 characters from A-Z a-z 0-9 - _ . (it is
      # passed as `--flake <dir>#<configuration>`).
      type = types.strMatching "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}";
      defaultText = literalExpression "config.networking.hostName";
      example = "web1";
      description = ''
        Name of the `nixosConfigurations` attribute of the released flake
        that this host activates.
      '';
    };

    hostId = mkOption {
      type = types.nullOr hostIdType;
      default = null;
      defaultText = lib.literalMD "`null`: derived by the agent from `/etc/machine-id`";
      example = "web1";
      description = ''
        This host's ID: its place in a release's signed rollout waves and the
        key of its signed receipt in the store (`<remote>/hosts/<hostId>.json`,
        docs/fleet.md). 1-64 characters from `a-z 0-9 . _ -`, starting with a
        letter or digit. With Terraform, set it to the `host_id` of the
        host's `install` module (the instance role may write only that
        receipt key). Rendered as `host_id` when set; `null`: the agent
        derives one from `/etc/machine-id`.
      '';
    };

    rollout = mkOption {
      type = types.nullOr (types.enum [ "wave" "immediate" ]);
      default = null;
      defaultText = lib.literalMD "`null`: the agent's default, `\"wave\"`";
      example = "immediate";
      description = ''
        `wave`: wait for this host's slot in a release's signed rollout
        plan; `immediate`: activate a verified release at once, ignoring the
        plan (canaries). Rendered as `rollout` when set; `null`: the agent's
        default, `wave`.
      '';
    };

    policyFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = literalExpression "./npcnix-policy.json";
      description = ''
        The fleet's policy file (`npcnix-policy.json`, format
        `npcnix-policy/v1`; docs/cli.md, "The remote's policy"): the keys and
        threshold of each remote. Publishers read the same file (`npcnix
        publish`, `release prepare` find it in `--src`), so hosts and
        publishers never disagree about a remote's threshold. When set,
        `trustedKeys`, `threshold` and `maxVersionJump` default to the
        file's entry for this host's remote (each key scoped to that remote);
        setting them explicitly overrides the file. The file has no log key
        for `witnesses`; see `witnesses.keys` for adding one.
      '';
    };

    trustedKeys = mkOption {
      type = types.listOf (types.submodule trustedKeyModule);
      example = literalExpression ''
        [
          { publicKey = "RWQ..."; remotes = [ "prod" "staging" ]; comment = "offline release key"; }
          { publicKey = "RWT..."; remotes = [ "dev" ]; comment = "CI key"; }
        ]
      '';
      description = ''
        Pinned public keys and the remotes each may sign for. There is no
        default: a host must pin at least one key for the remote it follows.
        Rotating keys is a normal release: a configuration signed by the
        current key that trusts the new key (and drops the old one). See
        docs/nixos.md.
      '';
    };

    threshold = mkOption {
      type = types.ints.positive;
      default = 1;
      description = ''
        Number of distinct trusted keys, scoped to this remote, that must
        have signed a release (k-of-n).
      '';
    };

    minVersion = mkOption {
      type = types.ints.unsigned;
      default = 0;
      description = ''
        Release versions below this are refused, even on a host with no
        state (a pinned rollback floor, e.g. after a known-bad release).
      '';
    };

    rolloutThreshold = mkOption {
      type = types.ints.positive;
      default = 1;
      description = ''
        Distinct keys with `role = "rollout"`, scoped to this remote, that
        must sign a promotion of a gated rollout stage or a halt
        (`npcnix release promote` / `halt`; docs/fleet.md, "Gated stages").
        With `policyFile`, defaults to the remote's `rollout.threshold`.
      '';
    };

    freshness = {
      required = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Accept a release only while an unexpired timestamp for exactly it,
          signed by `freshness.threshold` keys with `role = "timestamp"`, is
          in `latest` (`npcnix timestamp` refreshes it; docs/protocol.md).
          Freeze protection without re-signing releases: a store that keeps
          serving the old head is refused once its timestamp expires. With
          `policyFile`, defaults to whether the remote's entry has a
          `timestamp` section.
        '';
      };
      threshold = mkOption {
        type = types.ints.positive;
        default = 1;
        description = "Distinct timestamp keys, scoped to this remote, that must sign a timestamp.";
      };
    };

    witnesses = {
      keys = mkOption {
        # <name>+<key ID (8 hex)>+<base64 key>: a signed-note verifier key.
        # The agent parses it fully (npcnix config check); this only
        # catches a wrong paste at build time.
        type = types.listOf (types.strMatching "[^+[:space:]]+[+][0-9a-f]{8}[+][A-Za-z0-9+/]+=*");
        default = [ ];
        example = [
          "w1.example.org+a0075f94+BIn7RW00PelMPPLBzBaLxFhEJ0hIn9QTuAe+BTY5OOly"
          "w2.example.org+94f53ed5+BASdHvKruxuC+y2BNJqr38ydBJ2L86wi/63YVKLn2Pzb"
        ];
        description = ''
          Note keys of the witnesses of this remote's release log
          (`<name>+<key ID>+<key>`, as `npcnix witness --print-key --key
          W.pub --name NAME` prints them; docs/witness.md). When set, the
          host takes a release only once it is in a checkpoint of the
          remote's log, signed by its key with `role = "log"` (exactly one
          in `trustedKeys`, scoped to this remote), that
          `witnesses.threshold` of these witnesses cosigned and that extends
          the log the host saw before: no store, and no thief of the
          release keys, can show this host a release the witnesses have not
          seen. Witnesses run `services.npcnix-witness` (or `npcnix
          witness`) on machines the publishers do not control. Rendered as
          `policy.witnesses` only when non-empty (agents before witnessed
          logs refuse the field). The policy file has no log role:
          with `policyFile`, add the log key as
          `trustedKeys = lib.mkDefault [ { role = "log"; ... } ]`, which
          joins the file's keys (a plain definition replaces them).
        '';
      };
      threshold = mkOption {
        type = types.ints.positive;
        default = 1;
        description = ''
          Distinct witnesses of `witnesses.keys` whose cosignatures a
          checkpoint needs (k-of-n; at most the number of keys).
        '';
      };
    };

    requireExpiry = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Refuse releases whose statement has no `expires` time. With it,
        a store that keeps serving an old release (freeze attack) is
        noticed once that release expires; releases must then be re-signed
        periodically.
      '';
    };

    maxVersionJump = mkOption {
      type = types.nullOr types.ints.positive;
      default = null;
      description = ''
        Refuse a release more than this many versions ahead of the highest
        version the host has verified (on a host with no history: ahead of
        `minVersion`, so give new hosts a floor near the current version).
        `null`: no limit.
      '';
    };

    confinement = mkOption {
      type = types.enum [ "best-effort" "required" ];
      default = "best-effort";
      description = ''
        `required`: refuse to extract a release unless Landlock confines
        the extraction's writes to its directory (the kernel must support
        it). `best-effort`: confine where possible, report the status.
      '';
    };

    fetcherIsolation = mkOption {
      type = types.enum [ "auto" "required" "off" ];
      default = "auto";
      description = ''
        Where the agent's network side (TLS, HTTP, S3 parsing) runs.
        `auto`: as the unprivileged user `npcnix-fetch` (which this module
        creates) whenever possible, else in the agent, and say so in
        `npcnix status`; `required`: refuse to poll unless separated;
        `off`: always in the agent.
      '';
    };

    requireChain = mkOption {
      type = types.bool;
      default = false;
      description = ''
        When skipping versions, fetch every intermediate release and check
        the hash chain (`previous` links) before accepting the new one
        (detects a forked version log).
      '';
    };

    interval = mkOption {
      type = types.ints.positive;
      default = 300;
      description = ''
        Seconds between polls. An unchanged remote costs one small
        conditional request.
      '';
    };

    jitter = mkOption {
      type = types.ints.unsigned;
      default = 60;
      description = "Random extra delay, up to this many seconds, added to each poll.";
    };

    activation = mkOption {
      # The modes the agent accepts (ActivationMode in src/host/config.rs).
      type = types.enum [ "switch" "boot" "test" "dry-activate" "toplevel" ];
      default = "switch";
      description = ''
        What to do with a verified release: `nixos-rebuild <mode> --flake
        <dir>#<configuration>`. `test` and `dry-activate` do not change the
        boot default; `boot` does not change the running system.
        `toplevel`: never evaluate Nix on the host; realise the system path
        the release signs for this configuration from the substituters and
        run its `switch-to-configuration` (see `toplevelAction`).
      '';
    };

    toplevelAction = mkOption {
      type = types.enum [ "switch" "boot" "test" "dry-activate" ];
      default = "switch";
      description = "With `activation = \"toplevel\"`: the `switch-to-configuration` action.";
    };

    reuseBuild = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Flake mode: switch to the system the lockout inspection built and
        judged (`nixos-rebuild <mode> --no-reexec --store-path <system>`)
        instead of evaluating the configuration a second time (issue 36,
        D131). Needs a nixos-rebuild-ng with `--store-path` (NixOS 26.05 on):
        with one that lacks it, every switch fails. Turn it on only once
        every host runs an npcnix that knows the setting (older agents
        refuse a system whose config carries it, as would-lock-out).
      '';
    };

    toplevelFallback = mkOption {
      type = types.enum [ "refuse" "evaluate" ];
      default = "refuse";
      description = ''
        With `activation = "toplevel"`: what to do with a release that signs
        no system path for this host: refuse it, or evaluate the flake with
        nixos-rebuild.
      '';
    };

    healthCheck = mkOption {
      type = types.nullOr (types.submodule healthCheckModule);
      default = null;
      description = "Optional check run after switching; failure rolls back.";
    };

    hooks = mkOption {
      type = types.listOf (types.submodule hookModule);
      default = [ ];
      description = ''
        Notifications: programs run on `activated`, `refused`,
        `rolled-back`, `probation-armed`, `confirmed` and `stale`, after
        the decision is recorded (as comin's `postDeploymentCommand`;
        unlike `healthCheck`, a failing hook rolls nothing back).
      '';
    };

    hold = mkOption {
      type = types.nullOr (types.submodule {
        options = {
          maxVersion = mkOption {
            type = types.ints.positive;
            description = "Activate no release above this version.";
          };
          reason = mkOption {
            # Printable, not only blanks; the agent also caps it at 200.
            type = types.strMatching "[[:print:]]*[[:graph:]][[:print:]]*";
            example = "database migration window, ticket OPS-123";
            description = "Why (shown by `npcnix status`, the receipts and `npcnix fleet status`).";
          };
        };
      });
      default = null;
      example = literalExpression ''{ maxVersion = 41; reason = "holding for the migration"; }'';
      description = ''
        A declarative hold: the host verifies newer releases but activates
        none above `maxVersion`. A release whose own configuration removes
        the hold (or raises it to its version) lifts it: a held host
        downloads and inspects each newer release once to see that. It
        never downgrades a host that already runs a newer version.
      '';
    };

    hookStaleAfter = mkOption {
      type = types.ints.positive;
      default = 3600;
      description = "Seconds of failing polls after which the `stale` hooks run (once per failing period).";
    };

    extraSubstituters = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "https://cache.example.com" ];
      description = "Substituters passed to the activation as `extra-substituters`.";
    };

    extraTrustedPublicKeys = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "cache.example.com-1:AbCd...=" ];
      description = "Binary cache keys passed to the activation as `extra-trusted-public-keys`.";
    };

    region = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "eu-central-1";
      description = "S3 region of the remote (`s3://` only). `null`: the SDK's default chain.";
    };

    endpoint = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "https://s3.example.com";
      description = "Custom S3 endpoint (`s3://` only), e.g. for an S3-compatible store.";
    };

    pathStyle = mkOption {
      type = types.bool;
      default = false;
      description = "Use path-style S3 addressing (needed by some S3-compatible stores).";
    };

    metricsPath = mkOption {
      type = types.nullOr absolutePath;
      default = null;
      example = "/var/lib/prometheus-node-exporter/textfile/npcnix.prom";
      description = ''
        If set, npcnix writes Prometheus text-format metrics to this file
        (for the node exporter's textfile collector; the module creates its
        directory). Give it as a string: a Nix path literal would be copied
        to the store. With the node exporter:
        `services.prometheus.exporters.node = { enable = true;
        enabledCollectors = [ "textfile" ]; extraFlags = [
        "--collector.textfile.directory=/var/lib/prometheus-node-exporter/textfile" ]; }`.
      '';
    };

    limits = mkOption {
      type = types.submodule limitsModule;
      default = { };
      description = "Limits applied to downloaded archives; `null` fields use the built-in defaults.";
    };

    stateDir = mkOption {
      type = absolutePath;
      default = "/var/lib/npcnix";
      description = ''
        Where npcnix keeps its state (highest verified version per remote,
        audit log, extracted releases). Created with mode 0700.
      '';
    };
  };
}
