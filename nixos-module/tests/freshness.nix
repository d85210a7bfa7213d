# Freshness required (D126): an online timestamp key (role = "timestamp")
# beside the release key; the agent accepts a release only while a timestamp
# for exactly it is unexpired, and warns two days ahead.
{
  services.npcnix = {
    enable = true;
    remote = "s3://example-bucket/npcnix/remotes/prod";
    configuration = "web1";
    trustedKeys = [
      { publicKey = "RWTNqXik1z85s9C7A3Z5N7gym8bWkYLApIm7QoBgm72vD2LU8PiGuoKX"; remotes = [ "prod" ]; comment = "offline release key"; }
      { publicKey = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3"; remotes = [ "prod" ]; role = "timestamp"; comment = "online timestamp key"; }
    ];
    freshness.required = true;
    settings.policy.warn_before_expiry_secs = 172800;
  };
}
