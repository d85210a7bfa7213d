# Witnessed releases (issue 37): the remote's log key (role = "log") beside
# the release key, and two witnesses that must both have cosigned a
# checkpoint holding a release before the host takes it (2-of-2).
{
  services.npcnix = {
    enable = true;
    remote = "s3://example-bucket/npcnix/remotes/prod";
    configuration = "web1";
    trustedKeys = [
      { publicKey = "RWTNqXik1z85s9C7A3Z5N7gym8bWkYLApIm7QoBgm72vD2LU8PiGuoKX"; remotes = [ "prod" ]; comment = "offline release key"; }
      { publicKey = "RWRDfnfLJywg6o4TSTxRShkJvOyHOaHJ7tGjbX9dSvgqHziENY9MfpaH"; remotes = [ "prod" ]; role = "log"; comment = "prod's log key"; }
    ];
    witnesses = {
      keys = [
        "w1.example.org+a0075f94+BIn7RW00PelMPPLBzBaLxFhEJ0hIn9QTuAe+BTY5OOly"
        "w2.example.org+94f53ed5+BASdHvKruxuC+y2BNJqr38ydBJ2L86wi/63YVKLn2Pzb"
      ];
      threshold = 2;
    };
  };
}
