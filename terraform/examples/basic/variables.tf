variable "region" {
  description = "AWS region for the store and the host."
  type        = string
  default     = "eu-central-1"
}

variable "bucket_name" {
  description = "Name of the (new) S3 bucket for the npcnix store."
  type        = string
}

variable "configurations_dir" {
  description = "The flake with nixosConfigurations.<name> for every host, published to the dev remote."
  type        = string
}

variable "ci_key_file" {
  description = "Secret key that signs dev releases (npcnix keygen --out ci-dev --unencrypted). Its public key must be in ci_public_key."
  type        = string
}

variable "ci_public_key" {
  description = "Public key (RW...) of ci_key_file: the dev host pins it for the dev remote only."
  type        = string
}

variable "release_public_keys" {
  description = "Public keys (RW...) of the offline release keys, pinned on first boot as well. What the host trusts after that (and for which remote) is decided by the configuration it activates (services.npcnix.trustedKeys)."
  type        = list(string)
  default     = []
}

variable "npcnix_flake" {
  description = "Pinned flake reference npcnix is built from on first boot, e.g. github:OWNER/npcnix/<commit>."
  type        = string
}

variable "nixos_ami_id" {
  description = "A NixOS AMI for the region (see https://nixos.org/download/#nixos-amazon)."
  type        = string
}

variable "vpc_id" {
  description = "VPC to launch the host into."
  type        = string
}

variable "subnet_id" {
  description = "Subnet to launch the host into (needs a route to S3 and to cache.nixos.org)."
  type        = string
}
