resource "terraform_data" "settings" {
  input = {
    memory_mb = 256
    timeout_s = 30
    tags      = { team = "data", stage = "dev", owner = "ops" }
  }
}

# Renamed: a moved block keeps the object (no destroy/create).
resource "terraform_data" "new_name" {
  input = "unchanged"
}

moved {
  from = terraform_data.old_name
  to   = terraform_data.new_name
}

output "memory" {
  value = terraform_data.settings.output.memory_mb
}
