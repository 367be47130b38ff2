"""The shared layer and the four pipeline functions, each with its own log group, role and inline policy."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from modules import packaging
from modules.cdk import (
    AssetType,
    CloudwatchLogGroup,
    Construct,
    IamRole,
    IamRolePolicy,
    LambdaFunction,
    LambdaFunctionEnvironment,
    LambdaFunctionLoggingConfig,
    LambdaFunctionTracingConfig,
    LambdaFunctionVpcConfig,
    LambdaLayerVersion,
    TerraformAsset,
)
from modules.iam import assume_role_policy, policy_document, statement
from modules.network import Network
from modules.settings import Settings
from modules.workflow import state_machine_name

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class FunctionSpec:
    folder: str
    description: str
    reads_pagerduty_token: bool
    # Describes earlier executions of the pipeline, to release the run lock of one that timed out or was aborted.
    reads_own_executions: bool = False


FUNCTIONS = (
    FunctionSpec("lambda_1", "Validates the request, migrates the schema, loads reference data, counts incidents", True,
                 reads_own_executions=True),
    FunctionSpec("lambda_2", "Loads the window's incidents, log entries, notes and alerts (resumable)", True),
    FunctionSpec("lambda_3", "Validates the loaded data and advances the watermark", False),
    FunctionSpec("lambda_error_handler", "Records the failed step, error and cause on the run", False),
)


@lru_cache(maxsize=None)
def _function_package(folder: str) -> packaging.Package:
    return packaging.package_function(ROOT / "lambdas" / folder, packaging.BUILD_DIR / "packages" / f"{folder}.zip")


@lru_cache(maxsize=None)
def _layer_package(architecture: str) -> packaging.Package:
    return packaging.package_layer(ROOT / "layer", packaging.BUILD_DIR / "packages" / f"layer-{architecture}.zip",
                                   architecture)


class Functions(Construct):
    """Roles are per function and grant only: its own log group, VPC network interfaces in our subnets,
    X-Ray, the secrets that function reads, and decryption with the environment's key; step 1's also
    describes the executions of this environment's state machine."""

    def __init__(self, scope: Construct, id_: str, settings: Settings, network: Network, *, kms_key_arn: str,
                 db_address: str, db_port: str, db_secret_arn: str, pagerduty_token_secret_arn: str,
                 account_id: str, partition: str) -> None:
        super().__init__(scope, id_)
        config = settings.functions
        prefix = settings.name_prefix
        region = settings.region

        layer_package = _layer_package(config.architecture)
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
            "DB_SECRET_ARN": db_secret_arn,
            "DB_SSL": "require",
        }
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
            secrets = [db_secret_arn] + ([pagerduty_token_secret_arn] if spec.reads_pagerduty_token else [])
            role = IamRole(self, f"{spec.folder}_role", name=f"{name}-role",
                           description=f"Execution role of {name}",
                           assume_role_policy=assume_role_policy("lambda.amazonaws.com", account_id))
            executions = ([statement("ReadOwnExecutions", ["states:DescribeExecution"], [executions_arn])]
                          if spec.reads_own_executions else [])
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
                statement("ReadOwnSecrets", ["secretsmanager:GetSecretValue"], secrets),
                statement("DecryptSecretsAndSettings", ["kms:Decrypt"], [kms_key_arn]),
                *executions,
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
                    **environment, **(pagerduty_environment if spec.reads_pagerduty_token else {})}),
                vpc_config=LambdaFunctionVpcConfig(subnet_ids=network.subnet_ids,
                                                   security_group_ids=[network.lambda_sg.id]),
                tracing_config=LambdaFunctionTracingConfig(mode="Active"),
                logging_config=LambdaFunctionLoggingConfig(
                    log_format="JSON", log_group=log_group.name, application_log_level=config.log_level,
                    system_log_level="INFO"),
                depends_on=[log_group, policy],
            )
            self.log_groups[spec.folder] = log_group

    @property
    def arns(self) -> dict[str, str]:
        return {folder: function.arn for folder, function in self.functions.items()}
