# Options of `services.npcnix-witness`: declarations only. The
# implementation (user, systemd service and timer) is ./witness.nix.
#
# A witness cosigns remotes' release logs when they only grew, and refuses
# (loudly, exit 3) when one forked (issue 37, docs/witness.md). It runs on
# a machine the publishers do not control; hosts pin its note key in
# services.npcnix.witnesses.keys.
{ config, lib, ... }:
let
  inherit (lib) mkOption types literalExpression;

  absolutePath = types.strMatching "/.+";

  logModule = {
    options = {
      remote = mkOption {
        # Writable stores only: the witness publishes its cosignature at
        # witnesses/<key ID>/checkpoint (https:// mirrors are read-only).
        type = types.strMatching "(s3|file)://.+";
        example = "s3://example-bucket/npcnix/remotes/prod";
        description = ''
          URL of the remote whose log this witness cosigns (`s3://` or
          `file://`: the witness writes `witnesses/<key ID>/checkpoint`
          there, and needs write access to that prefix only).
        '';
      };
      logKey = mkOption {
        type = types.either (types.strMatching "RW[A-Za-z0-9+/]{54}") types.path;
        example = "RWRDfnfLJywg6o4TSTxRShkJvOyHOaHJ7tGjbX9dSvgqHziENY9MfpaH";
        description = ''
          The remote's log public key (the hosts' trusted key with
          `role = "log"`): the `RW...` string, or a public key file.
          Public data: a path literal is copied to the store, which is fine.
        '';
      };
      remoteName = mkOption {
        type = types.nullOr (types.strMatching "[a-z0-9][a-z0-9._-]{0,63}");
        default = null;
        description = ''
          The remote's name (part of the log's origin). `null`: the last
          path segment of `remote`, as hosts derive it.
        '';
      };
      endpoint = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "https://s3.example.com";
        description = "Custom S3 endpoint (`s3://` only), e.g. for an S3-compatible store.";
      };
      region = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "eu-central-1";
        description = "S3 region (`s3://` only; `--remote-region`). `null`: the SDK's default chain.";
      };
      pathStyle = mkOption {
        type = types.bool;
        default = false;
        description = "Use path-style S3 addressing (needed by some S3-compatible stores).";
      };
    };
  };
in
{
  options.services.npcnix-witness = {
    enable = lib.mkEnableOption "an npcnix witness of the release logs in `logs` (`npcnix witness` on a timer; docs/witness.md)";

    package = mkOption {
      type = types.package;
      default = config.services.npcnix.package;
      defaultText = literalExpression "config.services.npcnix.package";
      description = "The npcnix package whose `npcnix witness` runs.";
    };

    name = mkOption {
      # A signed-note key name: no `+`, no blanks.
      type = types.strMatching "[^+[:space:]]+";
      example = "witness.example.org";
      description = ''
        The witness's name, as hosts pin it (`npcnix witness --print-key
        --key W.pub --name NAME` prints the note key for
        `services.npcnix.witnesses.keys`); e.g. a domain name you control.
      '';
    };

    keyFile = mkOption {
      type = absolutePath;
      example = "/run/secrets/npcnix-witness.key";
      description = ''
        The witness's secret key (`npcnix keygen --unencrypted`; a file
        readable by root, e.g. from sops-nix or agenix). systemd hands it to
        the unit as a credential (`LoadCredential=`), so only the service
        reads it, and only while it runs. Give the path as a string: a Nix
        path literal would copy the key into the world-readable store, and
        is refused, as is a path in /nix/store.
      '';
    };

    environmentFile = mkOption {
      type = types.nullOr absolutePath;
      default = null;
      example = "/run/secrets/npcnix-witness-s3.env";
      description = ''
        A file of `NAME=value` lines loaded into the service's environment
        (`EnvironmentFile=`, read by systemd as root): S3 credentials of an
        identity that may write the stores' `witnesses/<key ID>/` prefix
        (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, ...). `null`: the
        SDK's default chain (e.g. an EC2 instance role). Never in the store.
      '';
    };

    logs = mkOption {
      type = types.listOf (types.submodule logModule);
      default = [ ];
      example = literalExpression ''
        [
          { remote = "s3://fleet/npcnix/remotes/prod"; logKey = "RWR..."; }
          { remote = "s3://fleet/npcnix/remotes/dev"; logKey = ./dev-log.pub; }
        ]
      '';
      description = ''
        The logs this witness cosigns. Each run tries every one; the unit
        fails if any failed, with exit status 3 if any log forked (then
        nothing was cosigned for it, and every later run refuses it again
        until the log extends the head this witness cosigned last).
      '';
    };

    interval = mkOption {
      # A systemd time span that is not zero ("5min", "1h 30min", "300");
      # a calendar expression ("hourly") is not a time span.
      type = types.strMatching "0*[1-9][0-9]* *[a-z]*( +[0-9]+ *[a-z]*)*";
      default = "5min";
      example = "15min";
      description = ''
        How often the witness runs: a systemd time span, used as the timer's
        `OnBootSec=` and `OnUnitActiveSec=`. Hosts with
        `services.npcnix.witnesses` take a release only once enough
        witnesses cosigned it, so this bounds how long a rollout waits.
      '';
    };

    stateDir = mkOption {
      type = absolutePath;
      default = "/var/lib/npcnix-witness";
      description = ''
        Where the witness remembers the head it cosigned last, one file per
        log (mode 0700, owned by the `npcnix-witness` user). It must
        persist (back it up with the machine): a witness that loses it
        accepts any history of each log once.
      '';
    };
  };
}
