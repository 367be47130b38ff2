resource "terraform_data" "keep" {
  input = "keep"
}

resource "terraform_data" "legacy_queue" {
  input = "legacy"
}

resource "terraform_data" "shard" {
  count = 3
  input = "shard-${count.index}"
}

output "legacy" {
  value = terraform_data.legacy_queue.output
}
