resource "terraform_data" "settings" {
  input = {
    memory_mb = 128
    timeout_s = 30
    tags      = { team = "data", stage = "dev" }
  }
}

resource "terraform_data" "old_name" {
  input = "unchanged"
}

output "memory" {
  value = terraform_data.settings.output.memory_mb
}
