# Applied into moto's server first, then v2 is planned against that state.
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
    Statement = [{ Effect = "Allow", Action = ["s3:GetObject"], Resource = "arn:aws:s3:::incidents/*" }]
  })
}

resource "aws_iam_policy" "logs" {
  name = "stepfunc-logs"
  policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Action = ["logs:PutLogEvents"], Resource = "*" }]
  })
}

resource "aws_iam_role_policy_attachment" "logs" {
  role       = aws_iam_role.worker.name
  policy_arn = aws_iam_policy.logs.arn
}

resource "aws_security_group" "app" {
  name        = "stepfunc-app"
  description = "Lambda functions"
  vpc_id      = aws_vpc.main.id
}

resource "aws_security_group_rule" "https_in" {
  type              = "ingress"
  security_group_id = aws_security_group.app.id
  from_port         = 443
  to_port           = 443
  protocol          = "tcp"
  cidr_blocks       = ["10.10.0.0/16"]
  description       = "HTTPS from the VPC"
}

resource "aws_apigatewayv2_api" "http" {
  name          = "stepfunc-api"
  protocol_type = "HTTP"
}

resource "aws_apigatewayv2_route" "trigger" {
  api_id             = aws_apigatewayv2_api.http.id
  route_key          = "POST /trigger"
  authorization_type = "NONE"
}

output "role_name" {
  value = aws_iam_role.worker.name
}
