resource "terraform_data" "database" {
  input            = { engine = "postgres", instance_class = "db.t4g.small" }
  triggers_replace = { engine_version = "16.3", storage_encrypted = true }
}

resource "terraform_data" "cache" {
  input = "cache-v2"
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
