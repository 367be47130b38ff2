"""The dead-letter queue of everything that starts or reacts to the pipeline without a caller waiting for it.

Three senders share it, so an operator has one place to look (README, "Alerts"): the schedule's starts that
failed after their retries, the status-change rule's deliveries (to the alerts topic and to the error handler)
that failed after theirs, and the error handler's asynchronous invocations that failed. An alarm
(modules/alarms.py) tells the alerts topic as soon as anything lands here.
"""

from __future__ import annotations

from modules.cdk import Construct, SqsQueue
from modules.iam import Statement, statement
from modules.settings import Settings

RETENTION_SECONDS = 14 * 24 * 3600  # SQS's maximum: two weeks to look at what was not delivered


def dead_letter_queue_name(settings: Settings) -> str:
    """Known before the queue exists, so the key policy can name the queue's encryption context."""
    return f"{settings.name_prefix}-dead-letters"


def dead_letter_queue_arn(settings: Settings, account_id: str, partition: str) -> str:
    return f"arn:{partition}:sqs:{settings.region}:{account_id}:{dead_letter_queue_name(settings)}"


def send_to_dead_letters(sid: str, queue_arn: str, kms_key_arn: str) -> list[Statement]:
    """What a role needs to send to the queue: SendMessage on it, and the key under exactly its encryption context
    (aws:sqs:arn = the queue). SQS asks KMS with the sender's identity; its developer guide ("Configuring KMS
    permissions for producers") gives producers kms:GenerateDataKey and kms:Decrypt."""
    return [statement(sid, ["sqs:SendMessage"], [queue_arn]),
            statement("EncryptDeadLetters", ["kms:Decrypt", "kms:GenerateDataKey"], [kms_key_arn],
                      {"StringEquals": {"kms:EncryptionContext:aws:sqs:arn": queue_arn}})]


class DeadLetterQueue(Construct):
    """Encrypted with the environment's key. Its resource policy (who may send) is written where the senders
    are known: EventBridge's in modules/notifications.py; the scheduler and the error handler send with their
    roles' own permissions."""

    def __init__(self, scope: Construct, id_: str, settings: Settings, *, kms_key_arn: str) -> None:
        super().__init__(scope, id_)
        self.queue = SqsQueue(
            self, "queue", name=dead_letter_queue_name(settings), kms_master_key_id=kms_key_arn,
            kms_data_key_reuse_period_seconds=300, message_retention_seconds=RETENTION_SECONDS)
        self.arn = self.queue.arn
        self.url = self.queue.url
        self.name = self.queue.name
