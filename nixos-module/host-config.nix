# cfg -> host config (format "npcnix-host-config/v1").
#
# A PURE function: it takes the evaluated `config.services.npcnix` attrset
# and returns the attrset that ./default.nix renders to
# /etc/npcnix/config.json with `pkgs.formats.json`. It needs neither pkgs nor
# lib.
#
# The Rust side parses this JSON with `deny_unknown_fields`: every key below
# is always present (null when unset), except `host_id`, `rollout`,
# `lockout`, `reboot`, `policy.freshness`, `policy.rollout`,
# `policy.witnesses` and a key's `role`, which appear only when one of
# their options is set, so that configs which do not use them stay readable by agents that
# predate them (and unchanged from before those options existed). Keep this file and the
# expected files in ./tests in step; ./default.nix merges
# services.npcnix.settings under the result.
#
# Every field of cfg used here must be declared in ./options.nix.
cfg:
let
  # The remote name: explicit, or the last path segment of the URL
  # (trailing slashes ignored). null when the URL has no usable segment;
  # ./assertions.nix reports that.
  derivedName =
    let
      m = builtins.match "[a-z0-9+.-]+://(.*/)?([^/]+)/*" cfg.remote;
    in
    if m == null then null else builtins.elemAt m 1;

  remoteName = if cfg.remoteName != null then cfg.remoteName else derivedName;

  optionalAttrs = cond: attrs: if cond then attrs else { };

  # Only the fields the user set; the agent has a default for each.
  lockout =
    optionalAttrs (cfg.lockout.inspect != null) { inspect = cfg.lockout.inspect; }
    // optionalAttrs (cfg.lockout.probationSeconds != null) { probation_secs = cfg.lockout.probationSeconds; }
    // optionalAttrs (cfg.lockout.watchdog != null) { watchdog = cfg.lockout.watchdog; };

  trustedKey = k: {
    public_key = k.publicKey;
    remotes = k.remotes;
    not_after = k.notAfter;
    comment = k.comment;
  } // optionalAttrs (k.role != "release") { role = k.role; };
in
{
  format = "npcnix-host-config/v1";

  remote = {
    url = cfg.remote;
    name = remoteName;
    threshold = cfg.threshold;
    region = cfg.region;
    endpoint = cfg.endpoint;
    path_style = cfg.pathStyle;
  } // optionalAttrs (cfg.mirrors != [ ]) { inherit (cfg) mirrors; };

  configuration = cfg.configuration;

  trusted_keys = map trustedKey cfg.trustedKeys;

  policy = {
    min_version = cfg.minVersion;
    # An enum on the wire, not a bool: see docs/decisions.md (style: enums
    # for security switches).
    expiry = if cfg.requireExpiry then "required" else "optional";
    max_version_jump = cfg.maxVersionJump;
    require_chain = cfg.requireChain;
    confinement = cfg.confinement;
  } // optionalAttrs cfg.freshness.required {
    freshness = {
      required = true;
      threshold = cfg.freshness.threshold;
    };
  } // optionalAttrs (cfg.rolloutThreshold != 1) {
    # Only when set: agents before gated rollouts refuse the field.
    rollout.threshold = cfg.rolloutThreshold;
  } // optionalAttrs (cfg.witnesses.keys != [ ]) {
    # Only when set: agents before witnessed logs (issue 37) refuse the
    # field.
    witnesses = {
      inherit (cfg.witnesses) keys threshold;
    };
  };

  fetcher = {
    user = "npcnix-fetch";
    isolation = cfg.fetcherIsolation;
  };

  poll = {
    interval_secs = cfg.interval;
    jitter_secs = cfg.jitter;
  };

  activation = {
    mode = cfg.activation;
    extra_substituters = cfg.extraSubstituters;
    extra_trusted_public_keys = cfg.extraTrustedPublicKeys;
    toplevel_action = cfg.toplevelAction;
    toplevel_fallback = cfg.toplevelFallback;
  } // optionalAttrs cfg.reuseBuild {
    # Only when set: agents before issue 36 refuse the field.
    reuse_build = true;
  };

  health_check =
    if cfg.healthCheck == null then
      null
    else
      {
        command = cfg.healthCheck.command;
        timeout_secs = cfg.healthCheck.timeout;
      };

  metrics_path = cfg.metricsPath;

  state_dir = cfg.stateDir;

  limits = {
    archive_bytes = cfg.limits.archiveBytes;
    unpacked_bytes = cfg.limits.unpackedBytes;
    entries = cfg.limits.entries;
    depth = cfg.limits.depth;
    path_bytes = cfg.limits.pathBytes;
    file_bytes = cfg.limits.fileBytes;
    zstd_window_log = cfg.limits.zstdWindowLog;
  };
}
// optionalAttrs (cfg.hooks != [ ]) {
  hooks = {
    commands = map (h: { inherit (h) command events; timeout_secs = h.timeout; }) cfg.hooks;
    stale_after_secs = cfg.hookStaleAfter;
  };
}
// optionalAttrs (cfg.hold != null) {
  hold = { max_version = cfg.hold.maxVersion; inherit (cfg.hold) reason; };
}
// optionalAttrs (cfg.hostId != null) { host_id = cfg.hostId; }
// optionalAttrs (cfg.rollout != null) { inherit (cfg) rollout; }
// optionalAttrs (lockout != { }) { inherit lockout; }
// optionalAttrs (cfg.allowReboot || cfg.rebootWindow != null) {
  reboot = {
    allow = cfg.allowReboot;
    window =
      if cfg.rebootWindow == null then null
      else { inherit (cfg.rebootWindow) lower upper; };
  };
}
