variable "release" {
  type = string
}

resource "terraform_data" "function" {
  count = 400
  input = {
    name    = format("handler-%03d", count.index)
    release = var.release
    env     = { LOG_LEVEL = "INFO", RELEASE = var.release, SHARD = tostring(count.index) }
  }
}
