# Every option set: 2-of-3 release keys for "prod" (one of them expiring),
# a CI key that is trusted for "dev" only, strict freshness / rollback
# policy, a health check and explicit archive limits.
{
  services.npcnix = {
    enable = true;
    remote = "s3://example-bucket/npcnix/remotes/production";
    remoteName = "prod";
    configuration = "db-2.eu";
    trustedKeys = [
      {
        publicKey = "RWTNqXik1z85s9C7A3Z5N7gym8bWkYLApIm7QoBgm72vD2LU8PiGuoKX";
        remotes = [ "prod" "staging" ];
        comment = "release key A (offline)";
      }
      {
        publicKey = "RWQICamm2tPj0G5nZIcSdjD44RFHOxxbp0Q9OdEHqzKaQUOtHtu4oSDo";
        remotes = [ "prod" ];
        comment = "release key B (offline)";
      }
      {
        publicKey = "RWQ9DXoGPTNIbLi40Yivn9i846jQqh8mojCac+FchMeLeZtvvnPl4VQ2";
        remotes = [ "prod" ];
        notAfter = 1798761600;
        comment = "release key C, being rotated out";
      }
      {
        publicKey = "RWSescKBqgkifqGuG2MG46e6R/i5kZCfcmwAZcMpuTgnp8q1au9TLPRo";
        remotes = [ "dev" ];
        comment = "CI key";
      }
    ];
    threshold = 2;
    minVersion = 41;
    requireExpiry = true;
    maxVersionJump = 10;
    requireChain = true;
    interval = 60;
    jitter = 15;
    activation = "boot";
    healthCheck = {
      command = [ "/run/current-system/sw/bin/systemctl" "is-active" "--quiet" "nginx.service" ];
      timeout = 30;
    };
    hooks = [
      {
        command = [ "/run/current-system/sw/bin/logger" "-t" "npcnix-hook" ];
        events = [ "rolled-back" "stale" ];
        timeout = 10;
      }
    ];
    hookStaleAfter = 7200;
    hold = { maxVersion = 41; reason = "database migration, OPS-123"; };
    mirrors = [ "https://mirror-eu.example.com/npcnix/remotes/production" ];
    extraSubstituters = [ "https://cache.example.com" ];
    extraTrustedPublicKeys = [ "cache.example.com-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" ];
    region = "eu-central-1";
    endpoint = "https://s3.eu-central-1.amazonaws.com";
    pathStyle = true;
    metricsPath = "/var/lib/prometheus-node-exporter/textfile/npcnix.prom";
    limits = {
      archiveBytes = 1073741824;
      unpackedBytes = 4294967296;
      entries = 200000;
      depth = 64;
      pathBytes = 1024;
      fileBytes = 536870912;
      zstdWindowLog = 27;
    };
    stateDir = "/var/lib/npcnix-prod";
  };
}
