resource "terraform_data" "config" {
  input = { environment = "dev", retries = 3 }
}

output "environment" {
  value = terraform_data.config.output.environment
}
