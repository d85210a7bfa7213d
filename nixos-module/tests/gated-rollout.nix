# Gated rollouts (issue 35, D130): two CI keys with role = "rollout" beside
# the release key; a promotion of a gated stage, or a halt, needs both.
{
  services.npcnix = {
    enable = true;
    remote = "s3://example-bucket/npcnix/remotes/prod";
    configuration = "web1";
    trustedKeys = [
      { publicKey = "RWTNqXik1z85s9C7A3Z5N7gym8bWkYLApIm7QoBgm72vD2LU8PiGuoKX"; remotes = [ "prod" ]; comment = "offline release key"; }
      { publicKey = "RWTnZRdI1qX04FAjl2OL32Tex2vThiHOvlefzM/Mu9xwPskm1uSC19MG"; remotes = [ "prod" ]; role = "rollout"; comment = "CI rollout key 1"; }
      { publicKey = "RWTOCuhMAyrBAiNiLQU6XHT4LBIu2mU8b0ielzXr43ohKqWcXgKmCfID"; remotes = [ "prod" ]; role = "rollout"; comment = "CI rollout key 2"; }
    ];
    rolloutThreshold = 2;
  };
}
