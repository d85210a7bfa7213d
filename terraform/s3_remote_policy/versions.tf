# A resource-less module: a pure function from (bucket, prefix, remote) to
# IAM policy documents. It needs no provider, so its outputs can be
# evaluated offline (terraform/check does).
terraform {
  required_version = ">= 1.5.0"
}
