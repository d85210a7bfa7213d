output "instance_id" {
  description = "ID of the instance."
  value       = aws_instance.host.id
}

output "private_ip" {
  description = "Private IP address of the instance."
  value       = aws_instance.host.private_ip
}

output "public_ip" {
  description = "Public IP address of the instance, if the subnet assigns one."
  value       = aws_instance.host.public_ip
}

output "role_name" {
  description = "Name of the instance's IAM role (attach more policies here if the host needs them)."
  value       = aws_iam_role.host.name
}

output "role_arn" {
  description = "ARN of the instance's IAM role."
  value       = aws_iam_role.host.arn
}

output "security_group_id" {
  description = "ID of the security group this module created for the instance."
  value       = aws_security_group.host.id
}

output "host_id" {
  description = "The host ID whose receipt this host may write (receipts.host_id), or null."
  value       = var.receipts == null ? null : var.receipts.host_id
}

output "receipt_key" {
  description = "The one key this host may write: <prefix>/remotes/<name>/hosts/<host_id>.json, or null without receipts."
  value       = one(module.receipt_policy[*].receipt_key)
}
