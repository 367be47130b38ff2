"""The STANDARD state machine that runs the three steps and the error handler, with its logs and role."""

from __future__ import annotations

import json

from modules.cdk import (
    CloudwatchLogGroup,
    Construct,
    IamRole,
    IamRolePolicy,
    SfnStateMachine,
    SfnStateMachineEncryptionConfiguration,
    SfnStateMachineLoggingConfiguration,
    SfnStateMachineTracingConfiguration,
)
from modules.definition import build_definition
from modules.iam import Statement, assume_role_policy, policy_document, statement
from modules.settings import Settings

# CloudWatch Logs delivery and X-Ray have no resource-level permissions: AWS requires "*" here.
_LOG_DELIVERY_ACTIONS = [
    "logs:CreateLogDelivery", "logs:DeleteLogDelivery", "logs:DescribeLogGroups", "logs:DescribeResourcePolicies",
    "logs:GetLogDelivery", "logs:ListLogDeliveries", "logs:PutResourcePolicy", "logs:UpdateLogDelivery",
]
_TRACING_ACTIONS = ["xray:GetSamplingRules", "xray:GetSamplingTargets", "xray:PutTelemetryRecords",
                    "xray:PutTraceSegments"]
# How long Step Functions reuses a data key before it asks KMS for a new one (AWS allows 60-900 s).
DATA_KEY_REUSE_SECONDS = 300
EXECUTION_DATA_CONTEXT = "kms:EncryptionContext:aws:states:stateMachineArn"


def state_machine_name(settings: Settings) -> str:
    """The state machine's name; known before the machine exists, so a function's role can be scoped to it."""
    return f"{settings.name_prefix}-pipeline"


def state_machine_arn(settings: Settings, account_id: str, partition: str) -> str:
    """The state machine's ARN from its name: policies that must exist before the machine can name it."""
    return f"arn:{partition}:states:{settings.region}:{account_id}:stateMachine:{state_machine_name(settings)}"


def start_execution_key_use(kms_key_arn: str, machine_arn: str) -> Statement:
    """What a principal that calls StartExecution needs of the key that encrypts the machine's execution data.

    Step Functions' "Data at rest encryption": the input is encrypted under a data key generated with the encryption
    context aws:states:stateMachineArn = the machine (kms:GenerateDataKey); the feature's authors also list
    kms:Decrypt for StartExecution, as data keys are reused for DATA_KEY_REUSE_SECONDS. The condition confines both
    to this machine's data."""
    return statement("EncryptPipelineExecutionInput", ["kms:Decrypt", "kms:GenerateDataKey"], [kms_key_arn],
                     {"StringEquals": {EXECUTION_DATA_CONTEXT: machine_arn}})


class Workflow(Construct):
    """Execution data (definition, inputs, outputs, history) is encrypted with the environment's key, as are
    the execution logs; the role may use the key for exactly this machine's data and the log delivery."""

    def __init__(self, scope: Construct, id_: str, settings: Settings, function_arns: dict[str, str], *,
                 kms_key_arn: str, account_id: str, partition: str) -> None:
        super().__init__(scope, id_)
        name = state_machine_name(settings)
        self.name = name
        machine_arn = state_machine_arn(settings, account_id, partition)
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
            # Step Functions "Data at rest encryption": the execution role encrypts and decrypts the execution
            # data under the encryption context aws:states:stateMachineArn = this machine ...
            statement("EncryptOwnExecutionData", ["kms:Decrypt", "kms:GenerateDataKey"], [kms_key_arn],
                      {"StringEquals": {EXECUTION_DATA_CONTEXT: machine_arn}}),
            # ... and, with logging on, generates the data key the log delivery decrypts (encryption context
            # SourceArn = arn:<partition>:logs:<region>:<account>:*; the key policy lets the delivery decrypt it).
            statement("EncryptLogDelivery", ["kms:GenerateDataKey"], [kms_key_arn],
                      {"StringLike": {"kms:EncryptionContext:SourceArn":
                                      f"arn:{partition}:logs:{settings.region}:{account_id}:*"}}),
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
            encryption_configuration=SfnStateMachineEncryptionConfiguration(
                type="CUSTOMER_MANAGED_KMS_KEY", kms_key_id=kms_key_arn,
                kms_data_key_reuse_period_seconds=DATA_KEY_REUSE_SECONDS),
            depends_on=[policy],  # the role must be able to use the key before the machine is created with it
        )
        self.arn = self.state_machine.arn
