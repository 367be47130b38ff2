"""Bootstrap stack: the S3 bucket and DynamoDB table that hold the main stacks' Terraform state and locks.

It keeps its own state locally (it cannot live in the bucket it creates); see README "Remote state".
Names come from backend.tf.json, so the backend the main stacks use and the one created here never differ.
"""

from __future__ import annotations

import json
from typing import Any

from cdktf import LocalBackend, TerraformOutput, TerraformStack
from cdktf_cdktf_provider_aws.data_aws_caller_identity import DataAwsCallerIdentity
from cdktf_cdktf_provider_aws.data_aws_partition import DataAwsPartition
from cdktf_cdktf_provider_aws.dynamodb_table import (
    DynamodbTable,
    DynamodbTableAttribute,
    DynamodbTablePointInTimeRecovery,
    DynamodbTableServerSideEncryption,
)
from cdktf_cdktf_provider_aws.s3_bucket import S3Bucket
from cdktf_cdktf_provider_aws.s3_bucket_lifecycle_configuration import (
    S3BucketLifecycleConfiguration,
    S3BucketLifecycleConfigurationRule,
    S3BucketLifecycleConfigurationRuleAbortIncompleteMultipartUpload,
    S3BucketLifecycleConfigurationRuleFilter,
    S3BucketLifecycleConfigurationRuleNoncurrentVersionExpiration,
)
from cdktf_cdktf_provider_aws.s3_bucket_ownership_controls import (
    S3BucketOwnershipControls,
    S3BucketOwnershipControlsRule,
)
from cdktf_cdktf_provider_aws.s3_bucket_policy import S3BucketPolicy
from cdktf_cdktf_provider_aws.s3_bucket_public_access_block import S3BucketPublicAccessBlock
from cdktf_cdktf_provider_aws.s3_bucket_server_side_encryption_configuration import (
    S3BucketServerSideEncryptionConfigurationA,
    S3BucketServerSideEncryptionConfigurationRuleA,
    S3BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultA,
)
from cdktf_cdktf_provider_aws.s3_bucket_versioning import S3BucketVersioningA, S3BucketVersioningVersioningConfiguration
from constructs import Construct

from modules.encryption import administered_through_iam, rotating_key
from modules.stack import configure_aws

STACK_NAME = "stepfuncproject-state"
# Relative to the stack's working directory (cdktf.out/stacks/<stack>): state/ at the project root,
# outside cdktf.out so a clean synth never loses it.
LOCAL_STATE_PATH = f"../../../state/{STACK_NAME}.tfstate"
NONCURRENT_VERSION_DAYS = 90  # how long superseded state versions are kept for recovery


class StateBackendStack(TerraformStack):
    """The S3 state bucket and DynamoDB lock table, guarded against destroy.

    ``allow_destroy`` is for retiring the backend only (README, "Remote state"): it lifts
    ``prevent_destroy`` and the table's deletion protection and lets Terraform empty the bucket.
    """

    def __init__(self, scope: Construct, backend: dict[str, Any], project: str = "stepfuncproject",
                 allow_destroy: bool = False) -> None:
        super().__init__(scope, STACK_NAME)
        LocalBackend(self, path=LOCAL_STATE_PATH)
        configure_aws(self, backend["region"], {"Project": project, "Environment": "shared", "ManagedBy": "cdktf",
                                                "Purpose": "terraform-state"})
        account_id = DataAwsCallerIdentity(self, "caller").account_id
        partition = DataAwsPartition(self, "partition").partition

        key = rotating_key(self, "state_key", "state_key_alias", description=f"{project} Terraform state and locks",
                           alias=f"alias/{project}-terraform-state",
                           statements=[administered_through_iam(account_id, partition)])

        bucket = S3Bucket(self, "state_bucket", bucket=backend["bucket"], force_destroy=allow_destroy or None,
                          lifecycle={"prevent_destroy": not allow_destroy})
        S3BucketOwnershipControls(self, "state_bucket_ownership", bucket=bucket.id,
                                  rule=S3BucketOwnershipControlsRule(object_ownership="BucketOwnerEnforced"))
        S3BucketVersioningA(self, "state_bucket_versioning", bucket=bucket.id,
                            versioning_configuration=S3BucketVersioningVersioningConfiguration(status="Enabled"))
        S3BucketServerSideEncryptionConfigurationA(
            self, "state_bucket_encryption", bucket=bucket.id,
            rule=[S3BucketServerSideEncryptionConfigurationRuleA(
                bucket_key_enabled=True,
                apply_server_side_encryption_by_default=(
                    S3BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultA(
                        sse_algorithm="aws:kms", kms_master_key_id=key.arn)))])
        public_access = S3BucketPublicAccessBlock(
            self, "state_bucket_public_access", bucket=bucket.id, block_public_acls=True, block_public_policy=True,
            ignore_public_acls=True, restrict_public_buckets=True)
        S3BucketPolicy(self, "state_bucket_tls_only", bucket=bucket.id, depends_on=[public_access],
                       policy=json.dumps({
                           "Version": "2012-10-17",
                           "Statement": [{
                               "Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
                               "Resource": [bucket.arn, f"{bucket.arn}/*"],
                               "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                           }],
                       }))
        S3BucketLifecycleConfiguration(self, "state_bucket_lifecycle", bucket=bucket.id, rule=[
            S3BucketLifecycleConfigurationRule(
                id="expire-superseded-state", status="Enabled", filter=[S3BucketLifecycleConfigurationRuleFilter()],
                noncurrent_version_expiration=[S3BucketLifecycleConfigurationRuleNoncurrentVersionExpiration(
                    noncurrent_days=NONCURRENT_VERSION_DAYS)],
                abort_incomplete_multipart_upload=[
                    S3BucketLifecycleConfigurationRuleAbortIncompleteMultipartUpload(days_after_initiation=7)]),
        ])

        table = DynamodbTable(
            self, "lock_table", name=backend["dynamodb_table"], billing_mode="PAY_PER_REQUEST", hash_key="LockID",
            attribute=[DynamodbTableAttribute(name="LockID", type="S")],
            point_in_time_recovery=DynamodbTablePointInTimeRecovery(enabled=True),
            server_side_encryption=DynamodbTableServerSideEncryption(enabled=True, kms_key_arn=key.arn),
            deletion_protection_enabled=not allow_destroy)

        TerraformOutput(self, "StateBucket", value=bucket.bucket, static_id=True,
                        description="S3 bucket holding the main stacks' state (backend.tf.json bucket)")
        TerraformOutput(self, "LockTable", value=table.name, static_id=True,
                        description="DynamoDB lock table (backend.tf.json dynamodb_table)")
        TerraformOutput(self, "StateKeyArn", value=key.arn, static_id=True,
                        description="KMS key encrypting state objects and lock items")
