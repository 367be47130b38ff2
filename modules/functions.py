"""The shared layer and the four pipeline functions, each with its own log group, role and inline policy."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from modules import metrics, packaging
from modules.ca_bundle import ARCHIVE_NAME, FUNCTION_PATH, CaBundle
from modules.cdk import (
    AssetType,
    CloudwatchLogGroup,
    Construct,
    IamRole,
    IamRolePolicy,
    LambdaFunction,
    LambdaFunctionDeadLetterConfig,
    LambdaFunctionEnvironment,
    LambdaFunctionLoggingConfig,
    LambdaFunctionTracingConfig,
    LambdaFunctionVpcConfig,
    LambdaLayerVersion,
    TerraformAsset,
)
from modules.dead_letters import send_to_dead_letters
from modules.iam import assume_role_policy, policy_document, statement
from modules.network import Network
from modules.settings import Settings
from modules.workflow import state_machine_name

ROOT = Path(__file__).resolve().parent.parent


# Database roles the migrations create (layer/python/pagerduty_pipeline/roles.py; a test keeps them equal).
LOADER_USER = "pagerduty_loader"
ERROR_RECORDER_USER = "pagerduty_error_recorder"
MIGRATES = None  # database_user of the function that logs in as the master user, because it migrates


@dataclass(frozen=True)
class FunctionSpec:
    folder: str
    description: str
    reads_pagerduty_token: bool
    # The database user it logs in as with an IAM token, or MIGRATES: the master login from the RDS-managed
    # secret, which creates the schema and the roles (so only that function may read the master secret).
    database_user: str | None
    # Describes earlier executions of the pipeline, to release the run lock of one that timed out or was aborted.
    reads_own_executions: bool = False
    # Also invoked asynchronously (by the execution-status rule, modules/notifications.py): an invocation that
    # still fails after Lambda's retries goes to the dead-letter queue instead of being dropped.
    invoked_asynchronously: bool = False


FUNCTIONS = (
    FunctionSpec("lambda_1", "Validates the request, migrates the schema, loads reference data, counts incidents", True,
                 MIGRATES, reads_own_executions=True),
    FunctionSpec("lambda_2", "Loads the window's incidents, log entries, notes and alerts (resumable)", True,
                 LOADER_USER),
    FunctionSpec("lambda_3", "Validates the loaded data and advances the watermark", False, LOADER_USER),
    FunctionSpec("lambda_error_handler", "Records the failed step, error and cause on the run", False,
                 ERROR_RECORDER_USER, invoked_asynchronously=True),
)


@lru_cache(maxsize=None)
def _function_package(folder: str) -> packaging.Package:
    return packaging.package_function(ROOT / "lambdas" / folder, packaging.BUILD_DIR / "packages" / f"{folder}.zip")


@lru_cache(maxsize=None)
def _layer_package(architecture: str, bundle: CaBundle | None) -> packaging.Package:
    name = f"layer-{architecture}{'' if bundle is None else '-' + bundle.sha256[:12]}"
    return packaging.package_layer(ROOT / "layer", packaging.BUILD_DIR / "packages" / f"{name}.zip", architecture,
                                   {ARCHIVE_NAME: bundle.path} if bundle is not None else {})


class Functions(Construct):
    """Roles are per function and grant only: its own log group, VPC network interfaces in our subnets,
    X-Ray, the secrets that function reads, decryption with the environment's key, and `rds-db:connect` as
    exactly its database user; step 1's also reads the master secret and describes the executions of this
    environment's state machine; the error handler's sends its failed asynchronous invocations to the
    dead-letter queue. Metrics are EMF log lines (modules/metrics.py): no permission needed."""

    def __init__(self, scope: Construct, id_: str, settings: Settings, network: Network, *, kms_key_arn: str,
                 db_address: str, db_port: str, db_secret_arn: str, db_resource_id: str,
                 pagerduty_token_secret_arn: str, account_id: str, partition: str, dead_letter_queue_arn: str,
                 bundle: CaBundle | None = None) -> None:
        super().__init__(scope, id_)
        config = settings.functions
        prefix = settings.name_prefix
        region = settings.region
        verify = settings.database.tls == "verify-full"
        if verify and bundle is None:
            raise ValueError(f"{settings.environment}: database.tls = verify-full needs the RDS CA bundle "
                             "(modules/ca_bundle.py)")

        layer_package = _layer_package(config.architecture, bundle if verify else None)
        layer_asset = TerraformAsset(self, "layer_code", path=str(layer_package.path), type=AssetType.FILE)
        self.layer = LambdaLayerVersion(
            self, "layer", layer_name=f"{prefix}-shared", filename=layer_asset.path,
            source_code_hash=layer_package.sha256_base64, compatible_runtimes=[config.runtime],
            compatible_architectures=[config.architecture],
            description="pagerduty_pipeline package and its pinned dependencies")

        environment = {
            "DB_HOST": db_address,
            "DB_PORT": db_port,
            "DB_NAME": settings.database.database_name,
            "DB_SSL": settings.database.tls,
            **({"DB_SSL_ROOT_CERT": FUNCTION_PATH} if verify else {}),
            **metrics.environment_variables(settings),
        }
        # The migrating function logs in as master with the RDS-managed secret; the others with IAM tokens as
        # their own database user (the instance's DbiResourceId names it in the policy, not its identifier).
        # Step 1 migrates, so it also writes the analytics views' working-hours setting (docs/analytics.md).
        master_login = {"DB_AUTH": "password", "DB_SECRET_ARN": db_secret_arn,
                        "ANALYTICS_WORKING_HOURS": settings.analytics.environment_value()}
        dbuser_arn = f"arn:{partition}:rds-db:{region}:{account_id}:dbuser:{db_resource_id}"
        # Only the functions that call PagerDuty are told where its token is (and may read it, below).
        pagerduty_environment = {
            "PAGERDUTY_TOKEN_SECRET_ARN": pagerduty_token_secret_arn,
            "PAGERDUTY_API_URL": settings.pagerduty.api_url,
            "PAGERDUTY_RATE_LIMIT_PER_MINUTE": str(settings.pagerduty.rate_limit_per_minute),
            "PAGERDUTY_MAX_IN_FLIGHT": str(settings.pagerduty.max_in_flight),
            "PIPELINE_ALERTS": settings.pagerduty.alerts,
        }
        ec2_arn = f"arn:{partition}:ec2:{region}:{account_id}"
        # Built from the name, not the state machine resource, which itself depends on these functions' ARNs.
        executions_arn = f"arn:{partition}:states:{region}:{account_id}:execution:{state_machine_name(settings)}:*"
        self.functions: dict[str, LambdaFunction] = {}
        self.log_groups: dict[str, CloudwatchLogGroup] = {}
        for spec in FUNCTIONS:
            name = f"{prefix}-{spec.folder}"
            log_group = CloudwatchLogGroup(
                self, f"{spec.folder}_logs", name=f"/aws/lambda/{name}",
                retention_in_days=settings.log_retention_days, kms_key_id=kms_key_arn)
            migrates = spec.database_user is MIGRATES
            secrets = ([db_secret_arn] if migrates else []) + \
                ([pagerduty_token_secret_arn] if spec.reads_pagerduty_token else [])
            database_login = (master_login if migrates else {"DB_AUTH": "iam", "DB_USER": spec.database_user})
            connect = ([] if migrates else [statement("ConnectAsOwnDatabaseUser", ["rds-db:connect"],
                                                      [f"{dbuser_arn}/{spec.database_user}"])])
            role = IamRole(self, f"{spec.folder}_role", name=f"{name}-role",
                           description=f"Execution role of {name}",
                           assume_role_policy=assume_role_policy("lambda.amazonaws.com", account_id))
            executions = ([statement("ReadOwnExecutions", ["states:DescribeExecution"], [executions_arn])]
                          if spec.reads_own_executions else [])
            # Lambda sends a failed asynchronous invocation to the queue with the function's role.
            dead_letters = (send_to_dead_letters("SendFailedInvocationsToDeadLetterQueue", dead_letter_queue_arn,
                                                 kms_key_arn) if spec.invoked_asynchronously else [])
            # CreateFunction checks the role may manage network interfaces: attach the policy first.
            policy = IamRolePolicy(self, f"{spec.folder}_policy", name=f"{name}-least-privilege", role=role.id,
                          policy=policy_document(
                statement("WriteOwnLogs", ["logs:CreateLogStream", "logs:PutLogEvents"], [f"{log_group.arn}:*"]),
                statement("DescribeNetworkInterfaces", ["ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets"],
                          ["*"]),
                statement("ManageOwnNetworkInterfaces",
                          ["ec2:AssignPrivateIpAddresses", "ec2:CreateNetworkInterface",
                           "ec2:DeleteNetworkInterface", "ec2:UnassignPrivateIpAddresses"],
                          [f"{ec2_arn}:network-interface/*", f"{ec2_arn}:security-group/{network.lambda_sg.id}",
                           *(f"{ec2_arn}:subnet/{subnet_id}" for subnet_id in settings.network.private_subnet_ids)]),
                statement("Tracing", ["xray:PutTelemetryRecords", "xray:PutTraceSegments"], ["*"]),
                *([statement("ReadOwnSecrets", ["secretsmanager:GetSecretValue"], secrets)] if secrets else []),
                statement("DecryptSecretsAndSettings", ["kms:Decrypt"], [kms_key_arn]),
                *connect,
                *executions,
                *dead_letters,
            ))
            package = _function_package(spec.folder)
            code = TerraformAsset(self, f"{spec.folder}_code", path=str(package.path), type=AssetType.FILE)
            self.functions[spec.folder] = LambdaFunction(
                self, spec.folder,
                function_name=name,
                description=spec.description,
                role=role.arn,
                runtime=config.runtime,
                architectures=[config.architecture],
                handler="handler.handler",
                filename=code.path,
                source_code_hash=package.sha256_base64,
                layers=[self.layer.arn],
                timeout=config.timeout_seconds,
                memory_size=config.memory_mb,
                reserved_concurrent_executions=config.reserved_concurrency,
                kms_key_arn=kms_key_arn,
                environment=LambdaFunctionEnvironment(variables={
                    **environment, **database_login,
                    **(pagerduty_environment if spec.reads_pagerduty_token else {})}),
                vpc_config=LambdaFunctionVpcConfig(subnet_ids=network.subnet_ids,
                                                   security_group_ids=[network.lambda_sg.id]),
                tracing_config=LambdaFunctionTracingConfig(mode="Active"),
                dead_letter_config=(LambdaFunctionDeadLetterConfig(target_arn=dead_letter_queue_arn)
                                    if spec.invoked_asynchronously else None),
                logging_config=LambdaFunctionLoggingConfig(
                    log_format="JSON", log_group=log_group.name, application_log_level=config.log_level,
                    system_log_level="INFO"),
                depends_on=[log_group, policy],
            )
            self.log_groups[spec.folder] = log_group

    @property
    def arns(self) -> dict[str, str]:
        return {folder: function.arn for folder, function in self.functions.items()}

    @property
    def names(self) -> dict[str, str]:
        return {folder: function.function_name for folder, function in self.functions.items()}
