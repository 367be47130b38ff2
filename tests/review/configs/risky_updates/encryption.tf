# Encryption settings: the state backend (bucket and lock table) and log groups.

resource "aws_kms_key" "key" {
  for_each    = toset(["a", "b"])
  description = "stepfunc key ${each.key}"
}

# The state backend: bucket (with its encryption and versioning) and lock table.
resource "aws_s3_bucket" "state" {
  bucket = "stepfunc-tfstate"
}

resource "aws_s3_bucket_server_side_encryption_configuration" "state" {
  bucket = aws_s3_bucket.state.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = local.state_sse_algorithm
      kms_master_key_id = local.state_sse_algorithm == "aws:kms" ? aws_kms_key.key["a"].arn : null
    }
  }
}

resource "aws_s3_bucket_versioning" "state" {
  bucket = aws_s3_bucket.state.id
  versioning_configuration {
    status = local.state_versioning
  }
}

resource "aws_dynamodb_table" "lock" {
  name         = "stepfunc-tflock"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "LockID"
  attribute {
    name = "LockID"
    type = "S"
  }
  server_side_encryption {
    enabled     = true
    kms_key_arn = aws_kms_key.key[local.lock_table_key].arn
  }
}

# Encrypted with another key.
resource "aws_cloudwatch_log_group" "workflow" {
  name              = "/stepfunc/workflow"
  retention_in_days = 30
  kms_key_id        = aws_kms_key.key[local.workflow_logs_key].arn
}

# A routine update: a shorter retention.
resource "aws_cloudwatch_log_group" "routine" {
  name              = "/stepfunc/routine"
  retention_in_days = local.routine_log_days
}
