resource "terraform_data" "bucket_settings" {
  input = { versioning = true, lifecycle_days = 30 }
}

resource "terraform_data" "worker" {
  count = 2
  input = "worker-${count.index}"
}

resource "terraform_data" "endpoint" {
  input = "https://example.invalid/${terraform_data.worker[0].id}"
}

output "endpoint" {
  value = terraform_data.endpoint.output
}

output "worker_names" {
  value = terraform_data.worker[*].output
}
