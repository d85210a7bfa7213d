# A host ID that walks out of hosts/: the receipt grant would name another
# key of the remote (here `latest`). Host IDs are refused unless they are
# 1-64 characters from a-z 0-9 - _ . (no "/", no IAM wildcard).
module "prod" {
  source = "../../s3_remote_policy"

  bucket  = "example-bucket"
  prefix  = "npcnix"
  remote  = "prod"
  host_id = "../latest"
}
