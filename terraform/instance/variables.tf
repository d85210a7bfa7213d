variable "name" {
  description = "Name of the instance (Name tag, and prefix of its IAM role, instance profile and security group)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9+=,.@_-]{1,48}$", var.name))
    error_message = "The name must be 1-48 characters valid in IAM names (A-Z a-z 0-9 + = , . @ _ -)."
  }
}

variable "ami_id" {
  description = "A NixOS AMI (its amazon-init runs the first-boot script from user_data). Later changes of the AMI do not replace a running host: hosts update through npcnix."
  type        = string

  validation {
    condition     = can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "ami_id must be an AMI ID (ami-...)."
  }
}

variable "instance_type" {
  description = "EC2 instance type."
  type        = string
  default     = "t3.small"
}

variable "subnet_id" {
  description = "Subnet to launch into. It needs a route to S3 (gateway endpoint or NAT) and to the binary caches the configuration uses."
  type        = string

  validation {
    condition     = can(regex("^subnet-[0-9a-f]+$", var.subnet_id))
    error_message = "subnet_id must be a subnet ID (subnet-...)."
  }
}

variable "vpc_id" {
  description = "VPC of the subnet, for the security group this module creates."
  type        = string

  validation {
    condition     = can(regex("^vpc-[0-9a-f]+$", var.vpc_id))
    error_message = "vpc_id must be a VPC ID (vpc-...)."
  }
}

variable "extra_security_group_ids" {
  description = "Additional security groups to attach (e.g. for the services the host runs)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for g in var.extra_security_group_ids : can(regex("^sg-[0-9a-f]+$", g))])
    error_message = "Security group IDs look like sg-...."
  }
}

variable "user_data" {
  description = "The first-boot script: the install module's `user_data` output. Only used when the instance is created; changing it later does not touch a running host."
  type        = string

  validation {
    condition     = startswith(var.user_data, "#!")
    error_message = "user_data must be a #! script (the install module's output); NixOS's amazon-init would otherwise treat it as a Nix configuration."
  }

  validation {
    condition     = length(var.user_data) <= 16384
    error_message = "EC2 user data is limited to 16 KiB."
  }
}

variable "host_read_policy_arn" {
  description = "IAM policy that lets the host read its remote: remote_s3's `read_policy_arn` (one remote) or store_s3's `host_read_policy_arn` (whole store)."
  type        = string

  validation {
    condition     = can(regex("^arn:[a-z-]+:iam::[0-9]{12}:policy/.+$", var.host_read_policy_arn))
    error_message = "host_read_policy_arn must be an IAM policy ARN."
  }
}

variable "enable_root_ssh" {
  description = "Allow SSH as root: attach the EC2 key pair `key_name` (NixOS AMIs install it for root) and open port 22 to ssh_cidr_blocks in this module's security group. Default false: no key pair, no port 22; hosts are managed through npcnix only. The deployed NixOS configuration decides about sshd in the long run."
  type        = bool
  default     = false
}

variable "key_name" {
  description = "EC2 key pair for root SSH. Only allowed with enable_root_ssh = true."
  type        = string
  default     = null
}

variable "ssh_cidr_blocks" {
  description = "Networks allowed to reach port 22 when enable_root_ssh = true."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.ssh_cidr_blocks : can(cidrhost(c, 0))])
    error_message = "ssh_cidr_blocks must be CIDR blocks."
  }
}

variable "root_volume_size_gb" {
  description = "Size of the root volume in GiB (the Nix store lives there)."
  type        = number
  default     = 20

  validation {
    condition     = var.root_volume_size_gb >= 8 && floor(var.root_volume_size_gb) == var.root_volume_size_gb
    error_message = "root_volume_size_gb must be a whole number, at least 8."
  }
}

variable "tags" {
  description = "Tags for the resources this module creates."
  type        = map(string)
  default     = {}
}

variable "receipts" {
  description = "Let this host write its signed receipt (read by `npcnix fleet status`) and nothing else: an inline policy on the instance role allows PutObject on exactly <remote>/hosts/<host_id>.json. host_id: the host's ID, the same as the install module's host_id (the user data must pass `--host-id '<host_id>'`, which the install module renders) and as `services.npcnix.hostId` in the host's NixOS configuration. remote_url: the remote the host follows (remote_s3's `url`, s3://<bucket>/<prefix>/remotes/<name>). kms_key_arn: the store's KMS key for SSE-KMS stores (kms:GenerateDataKey via S3). null: no receipt grant (the host's receipt writes are refused; set receipts.enabled = false in its config to silence them)."
  type = object({
    host_id     = string
    remote_url  = string
    kms_key_arn = optional(string)
  })
  default = null

  validation {
    condition     = var.receipts == null || can(regex("^[a-z0-9][a-z0-9._-]{0,63}$", var.receipts.host_id))
    error_message = "receipts.host_id must be 1-64 characters from a-z 0-9 - _ ., starting with a letter or digit (the rule npcnix applies to host IDs)."
  }

  validation {
    condition     = var.receipts == null || can(regex("^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*/remotes/[a-z0-9][a-z0-9._-]{0,63}$", var.receipts.remote_url))
    error_message = "receipts.remote_url must be a remote_s3 URL: s3://<bucket>/<prefix>/remotes/<name>."
  }

  validation {
    condition     = var.receipts == null || try(var.receipts.kms_key_arn == null, true) || can(regex("^arn:[a-z-]+:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+$", var.receipts.kms_key_arn))
    error_message = "receipts.kms_key_arn must be a KMS key ARN (arn:<partition>:kms:<region>:<account>:key/<key-id>) or null."
  }
}
