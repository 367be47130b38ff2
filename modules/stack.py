"""One environment's whole deployment: the constructs of modules/ composed, with outputs and backend."""

from __future__ import annotations

from typing import Any

from modules.alarms import Alarms
from modules.ca_bundle import CaBundle
from modules.cdk import (
    AwsProvider,
    AwsProviderDefaultTags,
    Construct,
    DataAwsCallerIdentity,
    DataAwsPartition,
    S3Backend,
    TerraformOutput,
    TerraformStack,
)
from modules.dashboard import Dashboard
from modules.database import Database
from modules.dead_letters import DeadLetterQueue
from modules.encryption import Encryption
from modules.functions import Functions
from modules.http_api import HttpApi
from modules.network import Network
from modules.notifications import Notifications
from modules.schedule import Schedule
from modules.secrets import PagerDutyToken
from modules.settings import Settings
from modules.workflow import Workflow

# The provider line the tests, the rehearsal and the committed .terraform.lock.hcl use: 5.x from 5.100. The lock
# file fixes the exact release; moving on is deliberate (README, "Moving to a newer provider").
AWS_PROVIDER_VERSION = "~> 5.100"
TERRAFORM_VERSION = ">= 1.10.0"  # the S3 backend's use_lockfile arrived in 1.10


def configure_aws(stack: TerraformStack, region: str, tags: dict[str, str]) -> None:
    """The AWS provider with default tags, and the Terraform/provider versions every stack pins."""
    AwsProvider(stack, "aws", region=region, default_tags=[AwsProviderDefaultTags(tags=tags)])
    stack.add_override("terraform.required_providers.aws", {"source": "hashicorp/aws", "version": AWS_PROVIDER_VERSION})
    stack.add_override("terraform.required_version", TERRAFORM_VERSION)


def use_s3_backend(stack: TerraformStack, backend: dict[str, Any], key_prefix: str) -> None:
    """Apply backend.tf.json's S3 settings as they are, with the state key under ``key_prefix/``."""
    config = {**backend, "key": f"{key_prefix}/{backend['key']}"}
    S3Backend(stack, bucket=config["bucket"], key=config["key"])
    for field, value in config.items():  # every setting, including those S3Backend's typed API lacks
        stack.add_override(f"terraform.backend.s3.{field}", value)


class PipelineStack(TerraformStack):
    def __init__(self, scope: Construct, settings: Settings, backend: dict[str, Any],
                 bundle: CaBundle | None = None) -> None:
        super().__init__(scope, settings.stack_name)
        self.settings = settings
        configure_aws(self, settings.region, {"Project": settings.project, "Environment": settings.environment,
                                              "ManagedBy": "cdktf", **settings.tags})
        use_s3_backend(self, backend, key_prefix=settings.environment)  # state key kept per environment

        account_id = DataAwsCallerIdentity(self, "caller").account_id
        partition = DataAwsPartition(self, "partition").partition
        network = Network(self, "network", settings)
        encryption = Encryption(self, "encryption", settings, account_id, partition)
        database = Database(self, "database", settings, network, encryption.key_arn, partition)
        token = PagerDutyToken(self, "pagerduty_token", settings, encryption.key_arn)
        dead_letters = DeadLetterQueue(self, "dead_letters", settings, kms_key_arn=encryption.key_arn)
        functions = Functions(
            self, "functions", settings, network, kms_key_arn=encryption.key_arn, db_address=database.address,
            db_port=str(database.port), db_secret_arn=database.secret_arn, db_resource_id=database.resource_id,
            pagerduty_token_secret_arn=token.secret_arn, account_id=account_id, partition=partition,
            dead_letter_queue_arn=dead_letters.arn, bundle=bundle)
        self.workflow = Workflow(self, "workflow", settings, functions.arns, kms_key_arn=encryption.key_arn,
                                 account_id=account_id, partition=partition)
        api = HttpApi(self, "http_api", settings, self.workflow.arn, kms_key_arn=encryption.key_arn,
                      account_id=account_id)
        # Operating it unattended: the schedule, the alerts and the failure records of executions no Catch saw,
        # the alarms and the dashboard.
        schedule = Schedule(self, "schedule", settings, state_machine_arn=self.workflow.arn,
                            kms_key_arn=encryption.key_arn, dead_letter_queue_arn=dead_letters.arn,
                            account_id=account_id, partition=partition)
        notifications = Notifications(
            self, "notifications", settings, kms_key_arn=encryption.key_arn, state_machine_arn=self.workflow.arn,
            error_handler_arn=functions.arns["lambda_error_handler"],
            error_handler_name=functions.names["lambda_error_handler"], dead_letter_queue_arn=dead_letters.arn,
            dead_letter_queue_url=dead_letters.url, account_id=account_id, partition=partition)
        watched = {"state_machine_arn": self.workflow.arn, "function_names": functions.names,
                   "db_instance_identifier": database.identifier, "dead_letter_queue_name": dead_letters.name}
        alarms = Alarms(self, "alarms", settings, topic_arn=notifications.topic_arn, **watched)
        dashboard = Dashboard(self, "dashboard", settings, **watched, alarm_specs=alarms.specs,
                              alarm_arns=[alarm.arn for alarm in alarms.alarms.values()])

        project = settings.project
        outputs = {
            f"HttpApiEndpoint-{project}": (api.endpoint, "Base URL of the HTTP API"),
            f"InvokeUrl-{project}": (f"{api.endpoint}/invoke", "POST a JSON body here to start the pipeline"),
            f"DatabaseEndpoint-{project}": (database.address, "PostgreSQL host name (private)"),
            f"DatabaseSecretArn-{project}": (database.secret_arn, "RDS-managed secret with the master login "
                                                                  "(only step 1, which migrates, may read it)"),
            f"DatabaseIamUserArnPrefix-{project}": (
                f"arn:{partition}:rds-db:{settings.region}:{account_id}:dbuser:{database.resource_id}/",
                "rds-db:connect resource of a database user is this + the user name (README, \"Database access\")"),
            f"PagerDutyTokenSecretArn-{project}": (token.secret_arn, "Put the PagerDuty API token here"),
            f"StateMachineArn-{project}": (self.workflow.arn, "The pipeline state machine"),
            f"StateMachineLogGroup-{project}": (self.workflow.log_group.name, "Execution logs"),
            f"ApiAccessLogGroup-{project}": (api.log_group.name, "HTTP API access logs"),
            f"AlertsTopicArn-{project}": (notifications.topic_arn, "SNS topic of the alarms and of executions that "
                                                                   "ended FAILED, TIMED_OUT or ABORTED: subscribe here"),
            f"ScheduleName-{project}": (schedule.name, f"EventBridge Scheduler schedule (group default) of the "
                                                       f"incremental run, {settings.schedule.expression}"),
            f"DashboardName-{project}": (dashboard.name, "CloudWatch dashboard of the pipeline"),
            f"DashboardUrl-{project}": (dashboard.url, "The dashboard in the CloudWatch console"),
            f"DeadLetterQueueUrl-{project}": (dead_letters.url, "Starts, alerts and failure records that could not "
                                                                "be delivered"),
        }
        for name, (value, description) in outputs.items():
            TerraformOutput(self, name, value=value, description=description, static_id=True)
