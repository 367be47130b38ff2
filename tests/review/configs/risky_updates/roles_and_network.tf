# Functions, the workflow and the API integration, each with a role (and one function in a VPC).
# Every role exists in both versions: the plan holds no IAM change, only resources pointed at
# another role or group.

resource "aws_security_group" "fn" {
  for_each    = toset(["a", "b"])
  name        = "stepfunc-fn-${each.key}"
  description = "Lambda functions (${each.key})"
  vpc_id      = aws_vpc.main.id
}

resource "aws_iam_role" "function" {
  for_each = toset(["a", "b"])
  name     = "stepfunc-fn-role-${each.key}"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Action = "sts:AssumeRole", Principal = { Service = "lambda.amazonaws.com" } }]
  })
}

resource "aws_iam_role" "workflow" {
  for_each = toset(["a", "b"])
  name     = "stepfunc-workflow-role-${each.key}"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Action = "sts:AssumeRole", Principal = { Service = "states.amazonaws.com" } }]
  })
}

resource "aws_iam_role" "api" {
  for_each = toset(["a", "b"])
  name     = "stepfunc-api-role-${each.key}"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Action = "sts:AssumeRole", Principal = { Service = "apigateway.amazonaws.com" } }]
  })
}

# A routine update: more memory and a new tag.
resource "aws_lambda_function" "routine" {
  function_name    = "stepfunc-routine"
  role             = aws_iam_role.function["a"].arn
  runtime          = "python3.13"
  handler          = "index.handler"
  filename         = "function.zip"
  source_code_hash = filebase64sha256("function.zip")
  memory_size      = local.routine_memory_mb
  tags             = merge({ app = "stepfunc" }, local.routine_extra_tags)
}

# Runs as another role.
resource "aws_lambda_function" "worker" {
  function_name    = "stepfunc-worker"
  role             = aws_iam_role.function[local.function_role].arn
  runtime          = "python3.13"
  handler          = "index.handler"
  filename         = "function.zip"
  source_code_hash = filebase64sha256("function.zip")
}

# Moves to another security group.
resource "aws_lambda_function" "database_client" {
  function_name    = "stepfunc-database-client"
  role             = aws_iam_role.function["a"].arn
  runtime          = "python3.13"
  handler          = "index.handler"
  filename         = "function.zip"
  source_code_hash = filebase64sha256("function.zip")

  vpc_config {
    subnet_ids         = [aws_subnet.private["a"].id]
    security_group_ids = [aws_security_group.fn[local.function_group].id]
  }
}

# Runs as another role.
resource "aws_sfn_state_machine" "workflow" {
  name     = "stepfunc-workflow"
  role_arn = aws_iam_role.workflow[local.workflow_role].arn
  definition = jsonencode({
    StartAt = "Work"
    States  = { Work = { Type = "Task", Resource = aws_lambda_function.worker.arn, End = true } }
  })
}

resource "aws_apigatewayv2_api" "http" {
  name          = "stepfunc-api"
  protocol_type = "HTTP"
}

# Starts the workflow with the credentials of another role.
resource "aws_apigatewayv2_integration" "start" {
  api_id              = aws_apigatewayv2_api.http.id
  integration_type    = "AWS_PROXY"
  integration_subtype = "StepFunctions-StartExecution"
  credentials_arn     = aws_iam_role.api[local.integration_role].arn
  request_parameters = {
    StateMachineArn = aws_sfn_state_machine.workflow.arn
    Input           = "$request.body"
  }
}
