# A host ID that is an IAM wildcard: "*" would turn the one-host grant into
# "write every receipt of the remote". Refused like any invalid host ID.
module "prod" {
  source = "../../s3_remote_policy"

  bucket  = "example-bucket"
  prefix  = "npcnix"
  remote  = "prod"
  host_id = "*"
}
