"""The STANDARD state machine that runs the three steps and the error handler, with its logs and role."""

from __future__ import annotations

import json

from modules.cdk import (
    CloudwatchLogGroup,
    Construct,
    IamRole,
    IamRolePolicy,
    SfnStateMachine,
    SfnStateMachineLoggingConfiguration,
    SfnStateMachineTracingConfiguration,
)
from modules.definition import build_definition
from modules.iam import assume_role_policy, policy_document, statement
from modules.settings import Settings

# CloudWatch Logs delivery and X-Ray have no resource-level permissions: AWS requires "*" here.
_LOG_DELIVERY_ACTIONS = [
    "logs:CreateLogDelivery", "logs:DeleteLogDelivery", "logs:DescribeLogGroups", "logs:DescribeResourcePolicies",
    "logs:GetLogDelivery", "logs:ListLogDeliveries", "logs:PutResourcePolicy", "logs:UpdateLogDelivery",
]
_TRACING_ACTIONS = ["xray:GetSamplingRules", "xray:GetSamplingTargets", "xray:PutTelemetryRecords",
                    "xray:PutTraceSegments"]


def state_machine_name(settings: Settings) -> str:
    """The state machine's name; known before the machine exists, so a function's role can be scoped to it."""
    return f"{settings.name_prefix}-pipeline"


class Workflow(Construct):
    def __init__(self, scope: Construct, id_: str, settings: Settings, function_arns: dict[str, str], *,
                 kms_key_arn: str, account_id: str) -> None:
        super().__init__(scope, id_)
        name = state_machine_name(settings)
        config = settings.workflow
        self.log_group = CloudwatchLogGroup(
            self, "logs", name=f"/aws/vendedlogs/states/{name}", retention_in_days=settings.log_retention_days,
            kms_key_id=kms_key_arn)
        role = IamRole(self, "role", name=f"{name}-role", description=f"Execution role of the {name} state machine",
                       assume_role_policy=assume_role_policy("states.amazonaws.com", account_id))
        policy = IamRolePolicy(self, "policy", name=f"{name}-invoke-pipeline-functions", role=role.id,
                               policy=policy_document(
            statement("InvokePipelineFunctions", ["lambda:InvokeFunction"], sorted(function_arns.values())),
            statement("DeliverLogs", _LOG_DELIVERY_ACTIONS, ["*"]),
            statement("Tracing", _TRACING_ACTIONS, ["*"]),
        ))
        self.definition = build_definition(
            function_arns, retry=config.retry, timeout_seconds=config.timeout_seconds,
            task_timeout_seconds=settings.functions.timeout_seconds + 60)
        self.state_machine = SfnStateMachine(
            self, "state_machine",
            name=name,
            type="STANDARD",
            role_arn=role.arn,
            definition=json.dumps(self.definition, indent=2),
            logging_configuration=SfnStateMachineLoggingConfiguration(
                log_destination=f"{self.log_group.arn}:*", level=config.log_level,
                include_execution_data=config.include_execution_data),
            tracing_configuration=SfnStateMachineTracingConfiguration(enabled=True),
            depends_on=[policy],
        )
        self.arn = self.state_machine.arn
