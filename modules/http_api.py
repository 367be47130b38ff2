"""The HTTP API: POST /invoke starts an execution with the request body as its input."""

from __future__ import annotations

import json

from modules.cdk import (
    Apigatewayv2Api,
    Apigatewayv2Authorizer,
    Apigatewayv2AuthorizerJwtConfiguration,
    Apigatewayv2Integration,
    Apigatewayv2Route,
    Apigatewayv2Stage,
    Apigatewayv2StageAccessLogSettings,
    Apigatewayv2StageDefaultRouteSettings,
    CloudwatchLogGroup,
    Construct,
    IamRole,
    IamRolePolicy,
)
from modules.iam import assume_role_policy, policy_document, statement
from modules.settings import Settings
from modules.workflow import start_execution_key_use

ROUTE_KEY = "POST /invoke"
# One JSON object per request; integrationErrorMessage says why StartExecution was refused.
ACCESS_LOG_FORMAT = json.dumps({
    "requestId": "$context.requestId",
    "ip": "$context.identity.sourceIp",
    "caller": "$context.identity.caller",
    "requestTime": "$context.requestTime",
    "routeKey": "$context.routeKey",
    "status": "$context.status",
    "responseLength": "$context.responseLength",
    "integrationStatus": "$context.integrationStatus",
    "integrationErrorMessage": "$context.integrationErrorMessage",
    "errorMessage": "$context.error.message",
}, separators=(",", ":"))


class HttpApi(Construct):
    def __init__(self, scope: Construct, id_: str, settings: Settings, state_machine_arn: str, *,
                 kms_key_arn: str, account_id: str) -> None:
        super().__init__(scope, id_)
        prefix = settings.name_prefix
        config = settings.api
        self.api = Apigatewayv2Api(self, "api", name=f"{prefix}-api", protocol_type="HTTP",
                                   description=f"{prefix}: POST /invoke starts the pipeline")
        role = IamRole(self, "role", name=f"{prefix}-api-start-execution",
                       description="Lets the HTTP API start executions of the pipeline state machine",
                       assume_role_policy=assume_role_policy("apigateway.amazonaws.com", account_id))
        IamRolePolicy(self, "policy", name=f"{prefix}-start-pipeline-execution", role=role.id,
                      policy=policy_document(
                          statement("StartPipelineExecution", ["states:StartExecution"], [state_machine_arn]),
                          start_execution_key_use(kms_key_arn, state_machine_arn)))
        integration = Apigatewayv2Integration(
            self, "start_execution", api_id=self.api.id, integration_type="AWS_PROXY",
            integration_subtype="StepFunctions-StartExecution", credentials_arn=role.arn,
            payload_format_version="1.0",
            request_parameters={"StateMachineArn": state_machine_arn, "Input": "$request.body"},
            description="StartExecution with the request body as the execution input")

        authorizer_id = None
        if config.authorization == "JWT":
            authorizer = Apigatewayv2Authorizer(
                self, "jwt", api_id=self.api.id, name=f"{prefix}-jwt", authorizer_type="JWT",
                identity_sources=["$request.header.Authorization"],
                jwt_configuration=Apigatewayv2AuthorizerJwtConfiguration(
                    issuer=config.jwt_issuer, audience=list(config.jwt_audience)))
            authorizer_id = authorizer.id
        self.route = Apigatewayv2Route(
            self, "invoke", api_id=self.api.id, route_key=ROUTE_KEY, target=f"integrations/{integration.id}",
            authorization_type=config.authorization, authorizer_id=authorizer_id)

        self.log_group = CloudwatchLogGroup(
            self, "access_logs", name=f"/aws/apigateway/{prefix}-api", retention_in_days=settings.log_retention_days,
            kms_key_id=kms_key_arn)
        self.stage = Apigatewayv2Stage(
            self, "default_stage", api_id=self.api.id, name="$default", auto_deploy=True,
            access_log_settings=Apigatewayv2StageAccessLogSettings(
                destination_arn=self.log_group.arn, format=ACCESS_LOG_FORMAT),
            default_route_settings=Apigatewayv2StageDefaultRouteSettings(
                throttling_burst_limit=config.throttling_burst_limit,
                throttling_rate_limit=config.throttling_rate_limit))
        self.endpoint = self.api.api_endpoint
