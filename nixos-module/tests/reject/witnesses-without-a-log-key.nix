# Witnesses required, but no key may sign the remote's log checkpoints: no
# checkpoint, so no release, could ever be accepted. (A log key scoped to
# another remote does not count.)
{
  services.npcnix = {
    enable = true;
    remote = "s3://example-bucket/npcnix/remotes/prod";
    configuration = "web1";
    trustedKeys = [
      { publicKey = "RWTNqXik1z85s9C7A3Z5N7gym8bWkYLApIm7QoBgm72vD2LU8PiGuoKX"; remotes = [ "prod" ]; }
      { publicKey = "RWRDfnfLJywg6o4TSTxRShkJvOyHOaHJ7tGjbX9dSvgqHziENY9MfpaH"; remotes = [ "dev" ]; role = "log"; }
    ];
    witnesses.keys = [
      "w1.example.org+a0075f94+BIn7RW00PelMPPLBzBaLxFhEJ0hIn9QTuAe+BTY5OOly"
    ];
  };
}
