"""The deploy rehearsal's checks of what runs the pipeline unattended: the schedule and the status-change rule,
read back from the emulator after `terraform apply` and driven the way AWS drives them.

moto stores schedules but never fires them, and delivers a rule's targets only to log groups, SQS and event buses
(tests/rehearsal/test_moto_gaps.py). So, as AWS would:
- `scheduled`: the schedule's target starts an execution with the target's input (StartExecution, the one action
  its role may call), which must succeed and record an incremental run (scope `all`, a watermark);
- `notify`: for a FAILED and a TIMED_OUT execution whose run was left running (no Catch ran), the event must match
  the rule's pattern (moto's own matcher: its TestEventPattern is not implemented), the SNS target's input
  transformer is rendered (tests/support/eventbridge.py) and published to the topic, which an SQS inbox subscribes
  to as an operator's endpoint would; the error-handler target is invoked with the raw event, after checking its resource policy lets
  EventBridge in for exactly this rule. The run must then be marked, and the message read back must be readable.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.support.eventbridge import render_input_transformer
from tools.rehearsal import RehearsalError, expect, listed

Client = Callable[[str], Any]  # service name -> boto3 client on the emulator


@dataclass
class Operations:
    schedule: dict[str, Any]  # GetSchedule
    rule: dict[str, Any]  # DescribeRule
    targets: list[dict[str, Any]]  # ListTargetsByRule
    topic_arn: str


def _output(outputs: dict[str, Any], prefix: str) -> Any:
    (value,) = [value for key, value in outputs.items() if key.startswith(prefix)]
    return value


def read_operations(client: Client, outputs: dict[str, Any], state_machine_arn: str) -> Operations:
    """The schedule named by the outputs, and the one rule whose targets include the alerts topic."""
    schedule = client("scheduler").get_schedule(Name=_output(outputs, "ScheduleName-"))
    topic_arn = _output(outputs, "AlertsTopicArn-")
    events = client("events")
    found = []
    for rule in events.list_rule_names_by_target(TargetArn=topic_arn)["RuleNames"]:
        found.append((events.describe_rule(Name=rule), events.list_targets_by_rule(Rule=rule)["Targets"]))
    expect(len(found) == 1, f"expected one rule notifying {topic_arn}, found {[r['Name'] for r, _ in found]}")
    ((rule, targets),) = found
    pattern = json.loads(rule["EventPattern"])
    expect(pattern.get("detail", {}).get("stateMachineArn") == [state_machine_arn],
           f"the rule {rule['Name']} watches {pattern.get('detail', {}).get('stateMachineArn')}, "
           f"not {state_machine_arn}")
    return Operations(schedule, rule, targets, topic_arn)


def check_schedule(client: Client, operations: Operations, state_machine_arn: str, enabled: bool) -> None:
    """Target, input, state, retry and dead-letter queue as deployed; the role may start only this machine."""
    schedule = operations.schedule
    target = schedule["Target"]
    expect(target["Arn"] == state_machine_arn, f"the schedule starts {target['Arn']}, not {state_machine_arn}")
    expect(json.loads(target.get("Input") or "null") == {}, f"the schedule's input is {target.get('Input')!r}")
    expect(schedule["State"] == ("ENABLED" if enabled else "DISABLED"),
           f"the schedule is {schedule['State']}; the settings say enabled={enabled}")
    expect(schedule["FlexibleTimeWindow"]["Mode"] == "OFF", "the schedule's time window is flexible")
    dlq = (target.get("DeadLetterConfig") or {}).get("Arn")
    expect(bool(dlq), "the schedule has no dead-letter queue")
    queue_url = client("sqs").get_queue_url(QueueName=dlq.rsplit(":", 1)[1])["QueueUrl"]
    attributes = client("sqs").get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    expect(bool(attributes.get("KmsMasterKeyId")), f"the dead-letter queue {dlq} is not encrypted with a KMS key")
    expect("MaximumRetryAttempts" in (target.get("RetryPolicy") or {}), "the schedule has no retry policy")
    iam = client("iam")
    role = target["RoleArn"].rsplit("/", 1)[1]
    statements = [statement for name in iam.list_role_policies(RoleName=role)["PolicyNames"]
                  for statement in iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]["Statement"]]
    states = [(action, resource) for statement in statements for action in listed(statement["Action"])
              if action.startswith("states:") for resource in listed(statement["Resource"])]
    expect(states == [("states:StartExecution", state_machine_arn)],
           f"the scheduler's role may {states}; expected StartExecution on the machine only")
    trust = iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
    principals = [s["Principal"].get("Service") for s in trust["Statement"]]
    expect(principals == ["scheduler.amazonaws.com"], f"the scheduler's role trusts {principals}")


def start_like_the_schedule(client: Client, operations: Operations) -> str:
    """What EventBridge Scheduler does at each firing for a Step Functions target: StartExecution with the
    target's input and no name, for which AWS names the execution with a UUID. moto's executing interpreter
    names it "None" instead (and takes a second unnamed start with the same input for the first one), so the
    UUID is given here (tests/rehearsal/test_moto_gaps.py)."""
    target = operations.schedule["Target"]
    return client("stepfunctions").start_execution(stateMachineArn=target["Arn"], name=str(uuid.uuid4()),
                                                   input=target.get("Input") or "{}")["executionArn"]


def matches(pattern: str, event: dict[str, Any]) -> bool:
    """Whether EventBridge would send ``event`` to a rule with ``pattern``: moto's own matcher (the one its put_events
    uses), called in-process since its TestEventPattern API is not implemented (tests/rehearsal/test_moto_gaps.py)."""
    from moto.events.models import EventPattern

    return EventPattern.load(pattern).matches_event(event)


def subscribe_inbox(client: Client, topic_arn: str, name: str) -> str:
    """An SQS queue subscribed to the topic with raw delivery: what an operator's endpoint would receive."""
    sqs = client("sqs")
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    client("sns").subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn,
                            Attributes={"RawMessageDelivery": "true"})
    return queue_url


def read_inbox(client: Client, queue_url: str) -> list[str]:
    messages = client("sqs").receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                             WaitTimeSeconds=1).get("Messages", [])
    for message in messages:
        client("sqs").delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return [message["Body"] for message in messages]


def deliver(client: Client, operations: Operations, event: dict[str, Any]) -> dict[str, Any]:
    """Deliver ``event`` to every target of the rule as EventBridge would; returns target kind -> what it gave
    (the SNS message sent, the error handler's result)."""
    rule = operations.rule
    expect(matches(rule["EventPattern"], event), f"the rule's pattern does not match a {event['detail']['status']} "
                                                 f"event: {rule['EventPattern']}")
    delivered: dict[str, Any] = {}
    for target in operations.targets:
        service = target["Arn"].split(":")[2]
        if service == "sns":
            transformer = target.get("InputTransformer")
            expect(transformer is not None, "the topic's target has no input transformer: the raw event is unreadable")
            message = render_input_transformer(transformer.get("InputPathsMap") or {}, transformer["InputTemplate"],
                                               event, rule_arn=rule["Arn"], rule_name=rule["Name"])
            client("sns").publish(TopicArn=target["Arn"], Message=message)
            delivered["sns"] = message
        elif service == "lambda":
            expect("InputTransformer" not in target and "Input" not in target,
                   "the error handler's target changes the event; it needs the raw event")
            policy = json.loads(client("lambda").get_policy(FunctionName=target["Arn"])["Policy"])
            allowed = [s for s in policy["Statement"]
                       if s.get("Principal", {}).get("Service") == "events.amazonaws.com"
                       and s.get("Condition", {}).get("ArnLike", {}).get("AWS:SourceArn") == rule["Arn"]]
            expect(len(allowed) == 1, f"the error handler's policy does not let exactly the rule {rule['Name']} "
                                      f"invoke it: {policy['Statement']}")
            answer = client("lambda").invoke(FunctionName=target["Arn"], Payload=json.dumps(event).encode())
            delivered["lambda"] = json.loads(answer["Payload"].read() or b"null")
        else:
            raise RehearsalError(f"unexpected target {target['Arn']}")
    expect(set(delivered) == {"sns", "lambda"}, f"the rule has targets {sorted(delivered)}, expected sns and lambda")
    return delivered

