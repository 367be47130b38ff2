"""Bootstrap stack: the S3 bucket, DynamoDB table and KMS key that hold the main stacks' Terraform state and locks.

Its own state starts as a local file (the bucket does not exist before its first apply) and then moves into
the bucket it created, under its own key, the way the tfstate-backend modules do it: synthesize with
`--bootstrap-state` for the first apply only, then without it and `terraform init -migrate-state`
(README, "Remote state"). Names (bucket, table, key alias) come from backend.tf.json, so the backend the
stacks use and the one created here never differ.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from modules.cdk import (
    Construct,
    DataAwsCallerIdentity,
    DataAwsPartition,
    DynamodbTable,
    DynamodbTableAttribute,
    DynamodbTablePointInTimeRecovery,
    DynamodbTableServerSideEncryption,
    LocalBackend,
    S3Bucket,
    S3BucketLifecycleConfiguration,
    S3BucketLifecycleConfigurationRule,
    S3BucketLifecycleConfigurationRuleAbortIncompleteMultipartUpload,
    S3BucketLifecycleConfigurationRuleFilter,
    S3BucketLifecycleConfigurationRuleNoncurrentVersionExpiration,
    S3BucketOwnershipControls,
    S3BucketOwnershipControlsRule,
    S3BucketPolicy,
    S3BucketPublicAccessBlock,
    S3BucketServerSideEncryptionConfigurationA,
    S3BucketServerSideEncryptionConfigurationRuleA,
    S3BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultA,
    S3BucketVersioningA,
    S3BucketVersioningVersioningConfiguration,
    TerraformOutput,
    TerraformStack,
)
from modules.encryption import administered_through_iam, rotating_key
from modules.settings import key_alias
from modules.stack import configure_aws, use_s3_backend

STACK_NAME = "stepfuncproject-state"
ROOT = Path(__file__).resolve().parent.parent
# Where the first apply keeps the state until it is migrated into the bucket: state/ at the project root,
# outside cdktf.out so a clean synth never loses it (gitignored: it is migrated, not committed).
LOCAL_STATE_FILE = ROOT / "state" / f"{STACK_NAME}.tfstate"
STATE_KEY_PREFIX = "state-backend"  # no environment can be named this (environment names have no hyphen)
NONCURRENT_VERSION_DAYS = 90  # how long superseded state versions are kept for recovery


class StateBackendStack(TerraformStack):
    """The S3 state bucket, DynamoDB lock table and their KMS key, guarded against destroy.

    ``local_state_dir`` (the stack's output folder) is given for the very first apply only: the state is then
    a local file, to be migrated into the bucket. ``allow_destroy`` is for retiring the backend only
    (README, "Remote state"): it lifts ``prevent_destroy`` and the table's deletion protection and lets
    Terraform empty the bucket.
    """

    def __init__(self, scope: Construct, backend: dict[str, Any], project: str = "stepfuncproject",
                 allow_destroy: bool = False, local_state_dir: Path | None = None) -> None:
        super().__init__(scope, STACK_NAME)
        if local_state_dir is not None:
            LocalBackend(self, path=os.path.relpath(LOCAL_STATE_FILE, local_state_dir.resolve()))
        else:
            use_s3_backend(self, backend, key_prefix=STATE_KEY_PREFIX)
        configure_aws(self, backend["region"], {"Project": project, "Environment": "shared", "ManagedBy": "cdktf",
                                                "Purpose": "terraform-state"})
        account_id = DataAwsCallerIdentity(self, "caller").account_id
        partition = DataAwsPartition(self, "partition").partition

        key = rotating_key(self, "state_key", "state_key_alias", description=f"{project} Terraform state and locks",
                           alias=key_alias(backend["kms_key_id"]),
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
                        description="KMS key encrypting state objects (backend.tf.json kms_key_id) and lock items")
