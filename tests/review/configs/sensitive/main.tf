variable "db_password" {
  type      = string
  sensitive = true
}

variable "api_token" {
  type      = string
  sensitive = true
}

resource "terraform_data" "db_credentials" {
  input = {
    username = "app"
    password = var.db_password
  }
}

resource "terraform_data" "token" {
  input = var.api_token
}

resource "terraform_data" "public" {
  input = "public-${length(var.api_token)}"
}

output "db_password" {
  value     = var.db_password
  sensitive = true
}

output "connection" {
  value     = "postgres://app:${var.db_password}@db.internal:5432/app"
  sensitive = true
}

output "db_username" {
  value = terraform_data.db_credentials.output.username
}
