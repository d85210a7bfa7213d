# The derived name would carry a query string ("prod?token=x"), which is not
# a valid remote name (and would not match the key's scope).
{
  services.npcnix = {
    enable = true;
    remote = "https://mirror.example.com/npcnix/prod?token=x";
    configuration = "web1";
    trustedKeys = [
      { publicKey = "RWTNqXik1z85s9C7A3Z5N7gym8bWkYLApIm7QoBgm72vD2LU8PiGuoKX"; remotes = [ "prod" ]; }
    ];
  };
}
