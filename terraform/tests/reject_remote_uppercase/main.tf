# Remote names are lowercase (the rule npcnix applies to signed names).
module "policy" {
  source = "../../s3_remote_policy"

  bucket = "example-bucket"
  prefix = "npcnix"
  remote = "Prod"
}
