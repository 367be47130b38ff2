"""One customer-managed KMS key per environment for data at rest: database, secrets, logs, function settings."""

from __future__ import annotations

import json

from modules.cdk import Construct, KmsAlias, KmsKey
from modules.settings import Settings


def administered_through_iam(account_id: str, partition: str) -> dict:
    """The key policy statement that hands the key's use to IAM policies in this account."""
    return {"Sid": "AccountAdministersKeyThroughIam", "Effect": "Allow",
            "Principal": {"AWS": f"arn:{partition}:iam::{account_id}:root"}, "Action": "kms:*", "Resource": "*"}


def rotating_key(scope: Construct, key_id: str, alias_id: str, *, description: str, alias: str,
                 statements: list[dict]) -> KmsKey:
    """A customer-managed key with yearly rotation, a 30-day deletion window and an alias."""
    key = KmsKey(scope, key_id, description=description, enable_key_rotation=True, deletion_window_in_days=30,
                 policy=json.dumps({"Version": "2012-10-17", "Statement": statements}))
    KmsAlias(scope, alias_id, name=alias, target_key_id=key.key_id)
    return key


class Encryption(Construct):
    """The key's policy delegates to IAM in this account (so role policies decide who may use it) and
    lets CloudWatch Logs encrypt only this account's log groups in this region."""

    def __init__(self, scope: Construct, id_: str, settings: Settings, account_id: str, partition: str) -> None:
        super().__init__(scope, id_)
        region = settings.region
        logs = {
            "Sid": "CloudWatchLogsEncryptsThisAccountsLogGroups",
            "Effect": "Allow",
            "Principal": {"Service": f"logs.{region}.amazonaws.com"},
            "Action": ["kms:Decrypt*", "kms:Describe*", "kms:Encrypt*", "kms:GenerateDataKey*", "kms:ReEncrypt*"],
            "Resource": "*",
            "Condition": {"ArnLike": {
                "kms:EncryptionContext:aws:logs:arn": f"arn:{partition}:logs:{region}:{account_id}:log-group:*"}},
        }
        self.key = rotating_key(self, "key", "alias", description=f"{settings.name_prefix} data at rest",
                                alias=f"alias/{settings.name_prefix}",
                                statements=[administered_through_iam(account_id, partition), logs])
        self.key_arn = self.key.arn
