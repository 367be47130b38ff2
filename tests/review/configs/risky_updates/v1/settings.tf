# The first version, applied into moto.
locals {
  database_subnets    = ["a", "b"]
  database_force_ssl  = "1"
  function_role       = "a"
  function_group      = "a"
  workflow_role       = "a"
  integration_role    = "a"
  routine_memory_mb   = 128
  routine_extra_tags  = {}
  state_sse_algorithm = "aws:kms"
  state_versioning    = "Enabled"
  lock_table_key      = "a"
  workflow_logs_key   = "a"
  routine_log_days    = 7
}
