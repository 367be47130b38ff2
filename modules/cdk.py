"""The one seam to the CDK packages: every module imports CDK classes from here, never from the packages.

The package behind it is CDKTF (the default, `cdktf` + `cdktf-cdktf-provider-aws` in the Pipfile) or CDK
Terrain (`cdktn` + `cdktn-provider-aws`), chosen by modules/cdk_flavour.py. Both expose the same class
names; `make cdk-terrain-check` synthesizes the app with each and compares the Terraform JSON.
A class the stack starts using is added to PROVIDER_CLASSES (its provider submodule and name).
"""

from __future__ import annotations

import importlib
from typing import Any

from constructs import Construct

from modules.cdk_flavour import selected

FLAVOUR = selected()
_core = importlib.import_module(FLAVOUR.core_package)

App = _core.App
AssetType = _core.AssetType
DataResource = _core.DataResource  # terraform_data
Fn = _core.Fn
LocalBackend = _core.LocalBackend
S3Backend = _core.S3Backend
TerraformAsset = _core.TerraformAsset
TerraformOutput = _core.TerraformOutput
TerraformStack = _core.TerraformStack

# provider submodule -> the classes the stack uses from it
PROVIDER_CLASSES: dict[str, tuple[str, ...]] = {
    "apigatewayv2_api": ("Apigatewayv2Api",),
    "apigatewayv2_authorizer": ("Apigatewayv2Authorizer", "Apigatewayv2AuthorizerJwtConfiguration"),
    "apigatewayv2_integration": ("Apigatewayv2Integration",),
    "apigatewayv2_route": ("Apigatewayv2Route",),
    "apigatewayv2_stage": (
        "Apigatewayv2Stage", "Apigatewayv2StageAccessLogSettings", "Apigatewayv2StageDefaultRouteSettings",
    ),
    "cloudwatch_dashboard": ("CloudwatchDashboard",),
    "cloudwatch_event_rule": ("CloudwatchEventRule",),
    "cloudwatch_event_target": (
        "CloudwatchEventTarget", "CloudwatchEventTargetDeadLetterConfig", "CloudwatchEventTargetInputTransformer",
        "CloudwatchEventTargetRetryPolicy",
    ),
    "cloudwatch_log_group": ("CloudwatchLogGroup",),
    "cloudwatch_metric_alarm": ("CloudwatchMetricAlarm",),
    "data_aws_caller_identity": ("DataAwsCallerIdentity",),
    "data_aws_partition": ("DataAwsPartition",),
    "data_aws_subnet": ("DataAwsSubnet",),
    "data_aws_vpc": ("DataAwsVpc",),
    "db_instance": ("DbInstance",),
    "db_parameter_group": ("DbParameterGroup", "DbParameterGroupParameter"),
    "db_subnet_group": ("DbSubnetGroup",),
    "dynamodb_table": (
        "DynamodbTable", "DynamodbTableAttribute", "DynamodbTablePointInTimeRecovery",
        "DynamodbTableServerSideEncryption",
    ),
    "iam_role": ("IamRole",),
    "iam_role_policy": ("IamRolePolicy",),
    "iam_role_policy_attachment": ("IamRolePolicyAttachment",),
    "kms_alias": ("KmsAlias",),
    "kms_key": ("KmsKey",),
    "lambda_function": (
        "LambdaFunction", "LambdaFunctionDeadLetterConfig", "LambdaFunctionEnvironment", "LambdaFunctionLoggingConfig",
        "LambdaFunctionTracingConfig", "LambdaFunctionVpcConfig",
    ),
    "lambda_layer_version": ("LambdaLayerVersion",),
    "lambda_permission": ("LambdaPermission",),
    "provider": ("AwsProvider", "AwsProviderDefaultTags"),
    "s3_bucket": ("S3Bucket",),
    "scheduler_schedule": (
        "SchedulerSchedule", "SchedulerScheduleFlexibleTimeWindow", "SchedulerScheduleTarget",
        "SchedulerScheduleTargetDeadLetterConfig", "SchedulerScheduleTargetRetryPolicy",
    ),
    "s3_bucket_lifecycle_configuration": (
        "S3BucketLifecycleConfiguration", "S3BucketLifecycleConfigurationRule",
        "S3BucketLifecycleConfigurationRuleAbortIncompleteMultipartUpload", "S3BucketLifecycleConfigurationRuleFilter",
        "S3BucketLifecycleConfigurationRuleNoncurrentVersionExpiration",
    ),
    "s3_bucket_ownership_controls": ("S3BucketOwnershipControls", "S3BucketOwnershipControlsRule"),
    "s3_bucket_policy": ("S3BucketPolicy",),
    "s3_bucket_public_access_block": ("S3BucketPublicAccessBlock",),
    "s3_bucket_server_side_encryption_configuration": (
        "S3BucketServerSideEncryptionConfigurationA", "S3BucketServerSideEncryptionConfigurationRuleA",
        "S3BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultA",
    ),
    "s3_bucket_versioning": ("S3BucketVersioningA", "S3BucketVersioningVersioningConfiguration"),
    "secretsmanager_secret": ("SecretsmanagerSecret",),
    "security_group": ("SecurityGroup",),
    "sfn_state_machine": (
        "SfnStateMachine", "SfnStateMachineEncryptionConfiguration", "SfnStateMachineLoggingConfiguration",
        "SfnStateMachineTracingConfiguration",
    ),
    "sns_topic": ("SnsTopic",),
    "sns_topic_policy": ("SnsTopicPolicy",),
    "sns_topic_subscription": ("SnsTopicSubscription",),
    "sqs_queue": ("SqsQueue",),
    "sqs_queue_policy": ("SqsQueuePolicy",),
    "vpc_security_group_egress_rule": ("VpcSecurityGroupEgressRule",),
    "vpc_security_group_ingress_rule": ("VpcSecurityGroupIngressRule",),
}


def _provider_class(submodule: str, name: str) -> Any:
    return getattr(importlib.import_module(f"{FLAVOUR.provider_package}.{submodule}"), name)


globals().update({name: _provider_class(submodule, name)
                  for submodule, names in PROVIDER_CLASSES.items() for name in names})

__all__ = ["App", "AssetType", "Construct", "DataResource", "FLAVOUR", "Fn", "LocalBackend", "S3Backend",
           "TerraformAsset", "TerraformOutput", "TerraformStack",
           *(name for names in PROVIDER_CLASSES.values() for name in names)]
