# An alias cannot be the Resource of an IAM statement: the key ARN is required.
module "prod" {
  source = "../../s3_remote_policy"

  bucket      = "example-bucket"
  prefix      = "npcnix"
  remote      = "prod"
  kms_key_arn = "arn:aws:kms:eu-central-1:123456789012:alias/npcnix"
}
