# No provider: this module only renders text (templatefile), so it can be
# evaluated offline (terraform/check renders it and syntax-checks the result).
terraform {
  required_version = ">= 1.5.0"
}
