# `configuration` left unset: it is the host's networking.hostName, and the
# state directory outside /var/lib is created by a tmpfiles rule (mode 0700).
{
  networking.hostName = "web7";
  services.npcnix = {
    enable = true;
    remote = "file:///srv/npcnix/remotes/staging";
    stateDir = "/srv/npcnix-state";
    trustedKeys = [
      { publicKey = "RWTNqXik1z85s9C7A3Z5N7gym8bWkYLApIm7QoBgm72vD2LU8PiGuoKX"; remotes = [ "staging" ]; }
    ];
  };
}
