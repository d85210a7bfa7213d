# A read-only HTTPS mirror given with a trailing slash (the name "staging"
# is still derived), a key trusted for every remote ("*"), health check
# with the default timeout, and only some limits set.
{
  services.npcnix = {
    enable = true;
    remote = "https://mirror.example.com/npcnix/remotes/staging/";
    configuration = "worker_3";
    trustedKeys = [
      {
        publicKey = "RWTNqXik1z85s9C7A3Z5N7gym8bWkYLApIm7QoBgm72vD2LU8PiGuoKX";
        remotes = [ "*" ];
      }
    ];
    activation = "dry-activate";
    healthCheck.command = [ "/run/current-system/sw/bin/true" ];
    limits.entries = 5000;
  };
}
