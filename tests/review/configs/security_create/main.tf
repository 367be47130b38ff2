# Planned (not applied) with fake credentials: creates only, plus one data
# source read during apply. The test harness adds the provider settings.
terraform {
  required_providers {
    aws = { source = "hashicorp/aws", version = "5.100.0" }
  }
}

provider "aws" {
  region = "us-east-1"
}

variable "db_password" {
  type      = string
  sensitive = true
}

resource "aws_iam_role" "worker" {
  name = "stepfunc-worker"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Action = "sts:AssumeRole", Principal = { Service = "lambda.amazonaws.com" } }]
  })
}

data "aws_iam_policy_document" "worker" {
  statement {
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.db.arn]
  }
}

resource "aws_iam_role_policy" "worker" {
  name   = "read-db-secret"
  role   = aws_iam_role.worker.id
  policy = data.aws_iam_policy_document.worker.json
}

resource "aws_kms_key" "data" {
  description         = "data at rest"
  enable_key_rotation = true
}

resource "aws_kms_alias" "data" {
  name          = "alias/stepfunc-data"
  target_key_id = aws_kms_key.data.key_id
}

resource "aws_secretsmanager_secret" "db" {
  name       = "stepfunc/db"
  kms_key_id = aws_kms_key.data.arn
}

resource "aws_secretsmanager_secret_version" "db" {
  secret_id     = aws_secretsmanager_secret.db.id
  secret_string = jsonencode({ username = "app", password = var.db_password })
}

resource "aws_security_group" "db" {
  name        = "stepfunc-db"
  description = "PostgreSQL from the functions"
  vpc_id      = "vpc-0123456789abcdef0"

  ingress {
    description = "PostgreSQL"
    from_port   = 5432
    to_port     = 5432
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_db_instance" "main" {
  identifier             = "stepfunc-db"
  engine                 = "postgres"
  engine_version         = "15.4"
  instance_class         = "db.t4g.micro"
  allocated_storage      = 20
  username               = "app"
  password               = var.db_password
  storage_encrypted      = true
  kms_key_id             = aws_kms_key.data.arn
  vpc_security_group_ids = [aws_security_group.db.id]
  skip_final_snapshot    = true
}

resource "aws_apigatewayv2_api" "http" {
  name          = "stepfunc-api"
  protocol_type = "HTTP"
}

resource "aws_apigatewayv2_authorizer" "jwt" {
  api_id           = aws_apigatewayv2_api.http.id
  name             = "jwt"
  authorizer_type  = "JWT"
  identity_sources = ["$request.header.Authorization"]
  jwt_configuration {
    audience = ["stepfunc"]
    issuer   = "https://issuer.example.invalid"
  }
}

resource "aws_apigatewayv2_route" "trigger" {
  api_id             = aws_apigatewayv2_api.http.id
  route_key          = "POST /trigger"
  authorization_type = "JWT"
  authorizer_id      = aws_apigatewayv2_authorizer.jwt.id
}

resource "aws_cloudwatch_log_group" "api" {
  name              = "/aws/apigateway/stepfunc"
  retention_in_days = 14
}

output "role_arn" {
  value = aws_iam_role.worker.arn
}
