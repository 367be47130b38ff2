"""One customer-managed KMS key per environment for data at rest: database, secrets, logs, function settings,
execution data, the alerts topic, the dead-letter queue and the schedule."""

from __future__ import annotations

import json

from modules.cdk import Construct, KmsAlias, KmsKey
from modules.dead_letters import dead_letter_queue_arn
from modules.notifications import alerts_topic_arn
from modules.settings import Settings

# What a service needs to put a message into an SNS topic or SQS queue encrypted with a customer managed key.
SEND_ENCRYPTED = ["kms:Decrypt", "kms:GenerateDataKey*"]


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
    """The key's policy delegates to IAM in this account (so role policies decide who may use it) and lets the
    AWS services that act without a role of ours use it, each for exactly what it does: CloudWatch Logs for this
    account's log groups in this region, log delivery for the state machine's logs, EventBridge and CloudWatch
    alarms for the alerts topic, EventBridge for the dead-letter queue. Service principals are not IAM
    principals of the account, so only the key policy can let them in."""

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
        # Step Functions "Data at rest encryption", logging with a customer managed key: the execution role
        # generates the data key under the encryption context SourceArn = arn:<partition>:logs:<region>:<account>:*
        # and the log delivery service decrypts it to write the execution logs. Decrypt must present the same
        # context, so the condition admits that and nothing else (the same pattern EventBridge documents for
        # its logs: "kms:EncryptionContext:SourceArn": "arn:partition:logs:region:account:*").
        log_delivery = {
            "Sid": "LogDeliveryDecryptsStateMachineLogs",
            "Effect": "Allow",
            "Principal": {"Service": "delivery.logs.amazonaws.com"},
            "Action": "kms:Decrypt",
            "Resource": "*",
            "Condition": {"StringLike": {
                "kms:EncryptionContext:SourceArn": f"arn:{partition}:logs:{region}:{account_id}:*"}},
        }
        # SNS encrypts each message under a data key with the encryption context aws:sns:topicArn = the topic, asked
        # for with the publisher's identity (SNS developer guide, "Enable compatibility between event sources
        # from AWS services and encrypted topics": the service principal needs kms:Decrypt and
        # kms:GenerateDataKey* in the key policy). EventBridge publishes the status-change alerts ...
        topic_context = {"StringEquals": {
            "kms:EncryptionContext:aws:sns:topicArn": alerts_topic_arn(settings, account_id, partition)}}
        events_topic = {"Sid": "EventBridgePublishesToAlertsTopic", "Effect": "Allow",
                        "Principal": {"Service": "events.amazonaws.com"}, "Action": SEND_ENCRYPTED,
                        "Resource": "*", "Condition": topic_context}
        # ... and CloudWatch the alarms' state changes (CloudWatch user guide: alarms and encrypted topics).
        alarms_topic = {"Sid": "CloudWatchAlarmsPublishToAlertsTopic", "Effect": "Allow",
                        "Principal": {"Service": "cloudwatch.amazonaws.com"}, "Action": SEND_ENCRYPTED,
                        "Resource": "*", "Condition": topic_context}
        # SQS likewise, with the encryption context aws:sqs:arn = the queue: EventBridge sends the events it could
        # not deliver to a target's dead-letter queue as events.amazonaws.com (EventBridge user guide, "Using
        # dead-letter queues": an encrypted queue needs the key policy to allow it).
        events_queue = {"Sid": "EventBridgeSendsToDeadLetterQueue", "Effect": "Allow",
                        "Principal": {"Service": "events.amazonaws.com"}, "Action": SEND_ENCRYPTED,
                        "Resource": "*", "Condition": {"StringEquals": {
                            "kms:EncryptionContext:aws:sqs:arn": dead_letter_queue_arn(settings, account_id,
                                                                                       partition)}}}
        self.key = rotating_key(self, "key", "alias", description=f"{settings.name_prefix} data at rest",
                                alias=f"alias/{settings.name_prefix}",
                                statements=[administered_through_iam(account_id, partition), logs, log_delivery,
                                            events_topic, alarms_topic, events_queue])
        self.key_arn = self.key.arn
