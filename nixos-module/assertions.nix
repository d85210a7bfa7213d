# cfg -> [ { assertion = bool; message = str; } ]
#
# The cross-option checks of services.npcnix, as a PURE function (builtins
# only), evaluated by ./check, including the cases that must
# fail (./tests/reject). ./default.nix passes the list to NixOS `assertions`,
# so a configuration that would leave a host unable to verify anything (or
# able to accept releases it should not) fails at build time, before it is
# ever signed and published.
#
# Per-value checks (URL scheme, absolute paths, positive integers, the enum)
# are option types in ./options.nix.
cfg:
let
  hostConfig = import ./host-config.nix cfg;
  name = hostConfig.remote.name;

  keys = cfg.trustedKeys;
  publicKeys = map (k: k.publicKey) keys;

  # minisign public key: base64 of "Ed" || key id (8) || ed25519 key (32) =
  # 42 bytes = 56 base64 characters without padding; "Ed" encodes as "RW".
  isMinisignKey = k: builtins.match "RW[A-Za-z0-9+/]{54}" k != null;
  badKeys = builtins.filter (k: !isMinisignKey k) publicKeys;

  unique = builtins.foldl' (acc: x: if builtins.elem x acc then acc else acc ++ [ x ]) [ ];
  countOf = x: xs: builtins.length (builtins.filter (y: y == x) xs);
  duplicateKeys = unique (builtins.filter (k: countOf k publicKeys > 1) publicKeys);

  unscopedKeys = builtins.filter (k: k.remotes == [ ]) keys;

  # Keys whose signatures count for the followed remote. Counted as distinct
  # public keys: the agent counts distinct key IDs, so a key listed twice
  # must not make an unreachable threshold look reachable.
  scopedAll = builtins.filter
    (k: builtins.elem name k.remotes || builtins.elem "*" k.remotes)
    keys;
  scoped = builtins.filter (k: k.role == "release") scopedAll;
  timestampCount = builtins.length (unique (map (k: k.publicKey)
    (builtins.filter (k: k.role == "timestamp") scopedAll)));
  scopedCount = builtins.length (unique (map (k: k.publicKey) scoped));
  logCount = builtins.length (unique (map (k: k.publicKey)
    (builtins.filter (k: k.role == "log") scopedAll)));

  # Witness note keys, "<name>+<key ID>+<base64 key>". The agent counts a
  # witness once by its key, whatever name it is listed under, so two names
  # for one key must not make a threshold look reachable.
  witnessKeys = cfg.witnesses.keys;
  witnessKeyPart = w:
    let m = builtins.match "[^+]*[+][0-9a-f]{8}[+](.*)" w; in if m == null then w else builtins.head m;
  duplicateWitnesses = builtins.filter
    (w: countOf (witnessKeyPart w) (map witnessKeyPart witnessKeys) > 1)
    witnessKeys;
  witnessCount = builtins.length (unique (map witnessKeyPart witnessKeys));

  showList = xs: builtins.concatStringsSep ", " (map (x: "\"${x}\"") xs);

  # services.npcnix.settings may only add fields: a field that a typed option
  # renders too is refused (paths in the host config, dotted).
  overlaps = prefix: a: b:
    builtins.concatMap
      (k:
        if !(b ? ${k}) then [ ]
        else if builtins.isAttrs a.${k} && builtins.isAttrs b.${k}
        then overlaps (prefix ++ [ k ]) a.${k} b.${k}
        else [ (builtins.concatStringsSep "." (prefix ++ [ k ])) ])
      (builtins.attrNames a);
  settingsOverlap = overlaps [ ] cfg.settings hostConfig;

  # Nix binary cache keys are "name:base64".
  badCacheKeys = builtins.filter
    (k: builtins.match "[^:[:space:]]+:[A-Za-z0-9+/]+=*" k == null)
    cfg.extraTrustedPublicKeys;
in
[
  {
    assertion = name != null;
    message = ''
      services.npcnix: cannot derive the remote name from remote = "${cfg.remote}"
      (no path segment); set services.npcnix.remoteName.'';
  }
  {
    # Only meaningful once the name is known; the assertion above covers null.
    # Same rule as the agent's RemoteName and the remoteName option type.
    assertion = name == null
      || builtins.match "[a-z0-9][a-z0-9._-]{0,63}" name != null;
    message = ''
      services.npcnix: the remote name "${toString name}" (derived from remote) must be
      1-64 characters from a-z 0-9 . _ -, starting with a letter or digit; set
      services.npcnix.remoteName.'';
  }
  {
    assertion = badKeys == [ ];
    message = ''
      services.npcnix.trustedKeys: not a minisign public key ("RW" followed by
      54 base64 characters): ${showList badKeys}'';
  }
  {
    assertion = duplicateKeys == [ ];
    message = ''
      services.npcnix.trustedKeys: each public key may be listed once (merge
      their remotes instead): ${showList duplicateKeys}'';
  }
  {
    assertion = unscopedKeys == [ ];
    message = ''
      services.npcnix.trustedKeys: every key needs at least one remote in
      `remotes` (a key with no remotes can never sign anything).'';
  }
  {
    assertion = name == null || scopedCount >= 1;
    message = ''
      services.npcnix: no trusted key is scoped to the followed remote "${toString name}";
      add "${toString name}" to the `remotes` of at least one of services.npcnix.trustedKeys.'';
  }
  {
    assertion = name == null || scopedCount == 0 || cfg.threshold <= scopedCount;
    message = ''
      services.npcnix.threshold = ${toString cfg.threshold}, but only ${toString scopedCount}
      distinct trusted key(s) are scoped to remote "${toString name}": no release could
      ever be accepted.'';
  }
  {
    assertion = name == null || !cfg.freshness.required || cfg.freshness.threshold <= timestampCount;
    message = ''
      services.npcnix.freshness.required is set with threshold ${toString cfg.freshness.threshold}, but
      ${toString timestampCount} trusted key(s) with role = "timestamp" are scoped to remote
      "${toString name}": no timestamp, so no release, could ever be accepted.'';
  }
  {
    # The agent checks a checkpoint against the one log key of the remote
    # (its origin names that key): none means no release could ever be
    # accepted, two would be two logs.
    assertion = name == null || witnessKeys == [ ] || logCount == 1;
    message = ''
      services.npcnix.witnesses.keys is set, but ${toString logCount} trusted key(s) with role = "log"
      are scoped to remote "${toString name}": exactly one is needed (the key that signs the
      remote's log checkpoints, `npcnix publish --log-key`); with none, no release could ever
      be accepted.'';
  }
  {
    assertion = duplicateWitnesses == [ ];
    message = ''
      services.npcnix.witnesses.keys: each witness key may be listed once (the agent
      counts a witness once, whatever its name): ${showList duplicateWitnesses}'';
  }
  {
    assertion = witnessKeys == [ ] || cfg.witnesses.threshold <= witnessCount;
    message = ''
      services.npcnix.witnesses.threshold = ${toString cfg.witnesses.threshold}, but only ${toString witnessCount}
      distinct witness key(s) are listed: no checkpoint, so no release, could ever be accepted.'';
  }
  {
    # The state directory is created (or chmod'ed) 0700: it must be a
    # directory of its own, never a system directory.
    assertion = builtins.match
      "/+(bin|boot|dev|etc|home|nix|nix/store|nix/var|opt|proc|root|run|srv|sys|tmp|usr|var|var/lib|var/log|var/cache)?/*"
      cfg.stateDir == null;
    message = ''
      services.npcnix.stateDir = "${cfg.stateDir}" is a system directory; use a directory
      of its own, e.g. "/var/lib/npcnix" (it is created with mode 0700).'';
  }
  {
    assertion = cfg.healthCheck == null
      || (cfg.healthCheck.command != [ ] && builtins.head cfg.healthCheck.command != "");
    message = "services.npcnix.healthCheck.command must name a program (its first element).";
  }
  {
    assertion = settingsOverlap == [ ];
    message = ''
      services.npcnix.settings sets host-config field(s) that typed options of
      services.npcnix render: ${showList settingsOverlap}. Set them through the
      corresponding services.npcnix options instead (settings may only add fields).'';
  }
  {
    # The store is world-readable: a secret there is no secret.
    assertion = cfg.environmentFile == null
      || builtins.match "/+nix/+store(/.*)?" cfg.environmentFile == null;
    message = ''
      services.npcnix.environmentFile = "${toString cfg.environmentFile}" is in the Nix store,
      which every user can read; keep credentials in a private file outside it
      (e.g. /run/secrets/..., from sops-nix or agenix).'';
  }
  {
    # The module creates the metrics file's directory world-readable
    # (tmpfiles `d` also resets an existing directory's mode): never a
    # shared or private one.
    assertion = cfg.metricsPath == null || !builtins.elem (dirOf cfg.metricsPath)
      [ "/" "/tmp" "/var/tmp" "/run" "/var/lib" "/var" "/etc" cfg.stateDir ];
    message = ''
      services.npcnix.metricsPath = "${toString cfg.metricsPath}": give the metrics file a
      directory of its own (e.g. /var/lib/prometheus-node-exporter/textfile/npcnix.prom);
      the module makes that directory 0755, which must not be the state directory or a
      shared one.'';
  }
  {
    assertion = badCacheKeys == [ ];
    message = ''
      services.npcnix.extraTrustedPublicKeys: not a Nix binary cache key
      ("name:base64"): ${showList badCacheKeys}'';
  }
]
