resource "terraform_data" "database" {
  input            = { engine = "postgres", instance_class = "db.t4g.micro" }
  triggers_replace = { engine_version = "15.4", storage_encrypted = false }
}

resource "terraform_data" "cache" {
  input = "cache-v1"
}

resource "terraform_data" "app" {
  input = "app"
  lifecycle {
    replace_triggered_by = [terraform_data.cache]
  }
}

resource "terraform_data" "forced" {
  input = "forced"
}
