"""The alerts topic and what tells it: executions that end FAILED, TIMED_OUT or ABORTED, and (modules/alarms.py)
the alarms. The same status-change rule invokes the error handler, so a run is recorded as failed or timed out
even when no Catch ran (a timeout, an abort, a failure outside a Task)."""

from __future__ import annotations

import hashlib
import json

from modules.cdk import (
    CloudwatchEventRule,
    CloudwatchEventTarget,
    CloudwatchEventTargetDeadLetterConfig,
    CloudwatchEventTargetInputTransformer,
    CloudwatchEventTargetRetryPolicy,
    Construct,
    LambdaPermission,
    SnsTopic,
    SnsTopicPolicy,
    SnsTopicSubscription,
    SqsQueuePolicy,
)
from modules.settings import Settings

STATUS_CHANGE = "Step Functions Execution Status Change"
ALERTED_STATUSES = ("FAILED", "TIMED_OUT", "ABORTED")
# EventBridge's own defaults (24 hours, 185 attempts), written out so the plan shows them.
TARGET_RETRY = {"maximum_event_age_in_seconds": 86_400, "maximum_retry_attempts": 185}
# What the SNS target takes from the event (the status-change event's detail is the execution's DescribeExecution).
INPUT_PATHS = {
    "name": "$.detail.name",
    "status": "$.detail.status",
    "error": "$.detail.error",
    "cause": "$.detail.cause",
    "executionArn": "$.detail.executionArn",
    "time": "$.time",
}


def alerts_topic_name(settings: Settings) -> str:
    """Known before the topic exists, so the key policy can name the topic's encryption context."""
    return f"{settings.name_prefix}-alerts"


def alerts_topic_arn(settings: Settings, account_id: str, partition: str) -> str:
    return f"arn:{partition}:sns:{settings.region}:{account_id}:{alerts_topic_name(settings)}"


def alarm_arn_pattern(settings: Settings, account_id: str, partition: str) -> str:
    """This environment's alarms (modules/alarms.py names every one with the name prefix)."""
    return f"arn:{partition}:cloudwatch:{settings.region}:{account_id}:alarm:{settings.name_prefix}-*"


def message_template(settings: Settings) -> str:
    """The input transformer's template: one quoted string (EventBridge's "simple string" template), so the topic
    sends plain text. EventBridge replaces each <name> of INPUT_PATHS with the value at its path, escaped inside
    the string; a path that matches nothing gives nothing. Our Fail state's cause is the error handler's message,
    which starts with the failed step ("lambda_2: ..."), so the cause names the step."""
    region = settings.region
    console = f"https://{region}.console.aws.amazon.com/states/home?region={region}#/v2/executions/details/"
    text = (f"PagerDuty pipeline {settings.name_prefix}: execution <name> ended <status> at <time>. "
            "Error: <error>. Cause: <cause>. "
            "The error handler records the run's end in pagerduty.pipeline_runs. "
            f"Execution: {console}<executionArn> . What to do: README, section Alerts.")
    return json.dumps(text)


def _subscription_id(protocol: str, endpoint: str) -> str:
    """Stable per endpoint, not per position: reordering the settings changes nothing (no new confirmation)."""
    return f"{protocol}_{hashlib.sha256(endpoint.lower().encode()).hexdigest()[:12]}"


class Notifications(Construct):
    """The topic is encrypted with the environment's key (the key policy lets EventBridge and CloudWatch alarms
    use it for this topic only, modules/encryption.py). Its policy lets EventBridge publish for exactly the
    status-change rule, CloudWatch for this environment's alarms, and the account manage it."""

    def __init__(self, scope: Construct, id_: str, settings: Settings, *, kms_key_arn: str, state_machine_arn: str,
                 error_handler_arn: str, error_handler_name: str, dead_letter_queue_arn: str,
                 dead_letter_queue_url: str, account_id: str, partition: str) -> None:
        super().__init__(scope, id_)
        prefix = settings.name_prefix
        self.topic = SnsTopic(self, "topic", name=alerts_topic_name(settings), display_name=f"{prefix} alerts",
                              kms_master_key_id=kms_key_arn)
        self.topic_arn = self.topic.arn

        self.rule = CloudwatchEventRule(
            self, "execution_ended", name=f"{prefix}-execution-ended-badly",
            description=f"{prefix}: a pipeline execution ended {', '.join(ALERTED_STATUSES)}",
            event_pattern=json.dumps({
                "source": ["aws.states"],
                "detail-type": [STATUS_CHANGE],
                "detail": {"status": list(ALERTED_STATUSES), "stateMachineArn": [state_machine_arn]},
            }))

        self.topic_policy = SnsTopicPolicy(self, "topic_policy", arn=self.topic.arn, policy=json.dumps({
            "Version": "2012-10-17",
            "Statement": [
                {"Sid": "AccountManagesTopic", "Effect": "Allow",
                 "Principal": {"AWS": f"arn:{partition}:iam::{account_id}:root"},
                 "Action": ["sns:AddPermission", "sns:DeleteTopic", "sns:GetTopicAttributes",
                            "sns:ListSubscriptionsByTopic", "sns:Publish", "sns:RemovePermission",
                            "sns:SetTopicAttributes", "sns:Subscribe"],
                 "Resource": self.topic.arn},
                # EventBridge publishes to an SNS target as events.amazonaws.com, and names the rule in
                # aws:SourceArn (EventBridge user guide, "Amazon SNS permissions").
                {"Sid": "StatusChangeRulePublishes", "Effect": "Allow",
                 "Principal": {"Service": "events.amazonaws.com"}, "Action": "sns:Publish",
                 "Resource": self.topic.arn,
                 "Condition": {"ArnEquals": {"aws:SourceArn": self.rule.arn}}},
                # CloudWatch alarms publish as cloudwatch.amazonaws.com, naming the alarm and its account
                # (CloudWatch user guide, "Using Amazon SNS topics with alarms": confused-deputy conditions).
                {"Sid": "EnvironmentAlarmsPublish", "Effect": "Allow",
                 "Principal": {"Service": "cloudwatch.amazonaws.com"}, "Action": "sns:Publish",
                 "Resource": self.topic.arn,
                 "Condition": {"ArnLike": {"aws:SourceArn": alarm_arn_pattern(settings, account_id, partition)},
                               "StringEquals": {"aws:SourceAccount": account_id}}},
            ],
        }))

        # EventBridge sends a target's undeliverable events to its dead-letter queue as events.amazonaws.com;
        # the queue policy must allow it, for this rule only (EventBridge user guide, "Using dead-letter queues").
        SqsQueuePolicy(self, "dead_letter_policy", queue_url=dead_letter_queue_url, policy=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": "StatusChangeRuleSendsUndelivered", "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"}, "Action": "sqs:SendMessage",
                "Resource": dead_letter_queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": self.rule.arn}},
            }],
        }))

        retry = CloudwatchEventTargetRetryPolicy(**TARGET_RETRY)
        dead_letters = CloudwatchEventTargetDeadLetterConfig(arn=dead_letter_queue_arn)
        self.alert_target = CloudwatchEventTarget(
            self, "alert", rule=self.rule.name, target_id="alerts-topic", arn=self.topic.arn,
            input_transformer=CloudwatchEventTargetInputTransformer(
                input_paths=INPUT_PATHS, input_template=message_template(settings)),
            retry_policy=retry, dead_letter_config=dead_letters,
            depends_on=[self.topic_policy])
        # The raw event: the error handler recognises source aws.states / detail-type STATUS_CHANGE and marks the
        # run of that execution failed or timed out (idempotent when a Catch already recorded it).
        permission = LambdaPermission(
            self, "invoke_error_handler", statement_id="StatusChangeRuleRecordsFailure",
            action="lambda:InvokeFunction", function_name=error_handler_name, principal="events.amazonaws.com",
            source_arn=self.rule.arn)
        self.record_target = CloudwatchEventTarget(
            self, "record_failure", rule=self.rule.name, target_id="record-failure", arn=error_handler_arn,
            retry_policy=retry, dead_letter_config=dead_letters, depends_on=[permission])

        config = settings.notifications
        for protocol, endpoints in (("email", config.emails), ("https", config.https_endpoints)):
            for endpoint in endpoints:
                SnsTopicSubscription(self, _subscription_id(protocol, endpoint), topic_arn=self.topic.arn,
                                     protocol=protocol, endpoint=endpoint)
