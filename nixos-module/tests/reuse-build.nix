# One evaluation per release (issue 36, D131): the switch takes the system
# the lockout inspection built (`nixos-rebuild switch --store-path`). On by
# default with nixos-rebuild-ng on NixOS 26.05+; set here explicitly.
{
  services.npcnix = {
    enable = true;
    remote = "s3://example-bucket/npcnix/remotes/prod";
    configuration = "web1";
    trustedKeys = [
      { publicKey = "RWTNqXik1z85s9C7A3Z5N7gym8bWkYLApIm7QoBgm72vD2LU8PiGuoKX"; remotes = [ "prod" ]; }
    ];
    reuseBuild = true;
  };
}
