# The second version, planned against v1's state. Each change is an update in place.
locals {
  database_subnets    = ["a", "c"]        # subnet group moved
  database_force_ssl  = "0"               # TLS no longer enforced
  function_role       = "b"               # aws_lambda_function.worker runs as another role
  function_group      = "b"               # aws_lambda_function.database_client in another security group
  workflow_role       = "b"               # the state machine runs as another role
  integration_role    = "b"               # the API integration uses another credentials role
  routine_memory_mb   = 256               # routine
  routine_extra_tags  = { owner = "ops" } # routine
  state_sse_algorithm = "AES256"          # state bucket: KMS -> SSE-S3
  state_versioning    = "Suspended"       # state bucket: versioning suspended
  lock_table_key      = "b"               # lock table encrypted with another key
  workflow_logs_key   = "b"               # log group encrypted with another key
  routine_log_days    = 14                # routine
}
