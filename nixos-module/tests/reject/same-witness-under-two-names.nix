# One witness listed under two names (its key ID differs with the name, its
# key does not): the agent counts it once, so threshold 2 would never be
# met. Refused as listed twice, and the threshold as unreachable.
{
  services.npcnix = {
    enable = true;
    remote = "s3://example-bucket/npcnix/remotes/prod";
    configuration = "web1";
    trustedKeys = [
      { publicKey = "RWTNqXik1z85s9C7A3Z5N7gym8bWkYLApIm7QoBgm72vD2LU8PiGuoKX"; remotes = [ "prod" ]; }
      { publicKey = "RWRDfnfLJywg6o4TSTxRShkJvOyHOaHJ7tGjbX9dSvgqHziENY9MfpaH"; remotes = [ "prod" ]; role = "log"; }
    ];
    witnesses = {
      keys = [
        "w1.example.org+a0075f94+BIn7RW00PelMPPLBzBaLxFhEJ0hIn9QTuAe+BTY5OOly"
        "w1-alias.example.org+8d3ac268+BIn7RW00PelMPPLBzBaLxFhEJ0hIn9QTuAe+BTY5OOly"
      ];
      threshold = 2;
    };
  };
}
