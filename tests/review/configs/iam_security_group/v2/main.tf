# v1 with: a wider inline policy, the managed policy detached and deleted, the
# security group renamed (forces replacement), the ingress rule opened to the
# internet (forces replacement) and the API route put behind a JWT authorizer.
terraform {
  required_providers {
    aws = { source = "hashicorp/aws", version = "5.100.0" }
  }
}

provider "aws" {
  region = "us-east-1"
}

resource "aws_vpc" "main" {
  cidr_block = "10.10.0.0/16"
}

resource "aws_iam_role" "worker" {
  name        = "stepfunc-worker"
  description = "Lambda worker"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Action = "sts:AssumeRole", Principal = { Service = "lambda.amazonaws.com" } }]
  })
}

resource "aws_iam_role_policy" "worker" {
  name = "read-incidents"
  role = aws_iam_role.worker.id
  policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Action = ["s3:GetObject", "s3:PutObject"], Resource = "arn:aws:s3:::incidents/*" }]
  })
}

resource "aws_security_group" "app" {
  name        = "stepfunc-app-v2"
  description = "Lambda functions"
  vpc_id      = aws_vpc.main.id
}

resource "aws_security_group_rule" "https_in" {
  type              = "ingress"
  security_group_id = aws_security_group.app.id
  from_port         = 443
  to_port           = 443
  protocol          = "tcp"
  cidr_blocks       = ["0.0.0.0/0"]
  description       = "HTTPS from anywhere"
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

output "role_name" {
  value = aws_iam_role.worker.name
}

output "authorizer_id" {
  value = aws_apigatewayv2_authorizer.jwt.id
}
