# The database's subnet group and parameter group (TLS enforcement).

resource "aws_db_subnet_group" "main" {
  name        = "stepfunc-db-subnets"
  description = "private subnets"
  subnet_ids  = [for key in local.database_subnets : aws_subnet.private[key].id]
}

resource "aws_db_parameter_group" "postgres" {
  name        = "stepfunc-postgres"
  family      = "postgres17"
  description = "TLS only"

  parameter {
    name  = "rds.force_ssl"
    value = local.database_force_ssl
  }
}
