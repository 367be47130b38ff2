"""Operating it unattended (issue 14): the schedule, the alerts topic and what tells it, the failure records of
executions no Catch saw, the alarms, the dashboard, and the key that encrypts all of it."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from modules.metrics import NAMESPACE
from tests.support.eventbridge import render_input_transformer, status_change_event
from tests.support.synth import load_stack, only, resources, statements_by_sid, synthesize, without_metadata

Stack = dict[str, Any]
MACHINE = "${aws_sfn_state_machine.workflow_state_machine_8DF65173.arn}"
KEY = "${aws_kms_key.encryption_key_EEB70057.arn}"
QUEUE = "${aws_sqs_queue.dead_letters_queue_E372979C.arn}"
ACCOUNT = "${data.aws_caller_identity.caller.account_id}"
PARTITION = "${data.aws_partition.partition.partition}"
FOLDERS = ("lambda_1", "lambda_2", "lambda_3", "lambda_error_handler")


def key_of(stack: Stack, kind: str) -> str:
    (key,) = resources(stack, kind)
    return key


def ref(kind: str, key: str, attribute: str) -> str:
    return f"${{{kind}.{key}.{attribute}}}"


def role_named(stack: Stack, name: str) -> tuple[str, dict[str, Any]]:
    (found,) = [(key, role) for key, role in resources(stack, "aws_iam_role").items() if role["name"] == name]
    return found


def inline_policy(stack: Stack, role_key: str) -> dict[str, Any]:
    (policy,) = [json.loads(policy["policy"]) for policy in resources(stack, "aws_iam_role_policy").values()
                 if policy["role"] == ref("aws_iam_role", role_key, "id")]
    return policy


def function_key(stack: Stack, folder: str) -> str:
    (key,) = [key for key, fn in resources(stack, "aws_lambda_function").items()
              if fn["function_name"].endswith(f"-{folder}")]
    return key


def topic(stack: Stack) -> str:
    return ref("aws_sns_topic", key_of(stack, "aws_sns_topic"), "arn")


def rule(stack: Stack) -> str:
    return ref("aws_cloudwatch_event_rule", key_of(stack, "aws_cloudwatch_event_rule"), "arn")


# --- the schedule -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("env", "state"), [("dev", "DISABLED"), ("prod", "ENABLED")])
def test_schedule_starts_the_incremental_run(stacks: dict[str, Stack], env: str, state: str) -> None:
    stack = stacks[env]
    schedule = only(stack["resource"], "aws_scheduler_schedule")
    role_key, _ = role_named(stack, f"stepfuncproject-{env}-scheduler-start-execution")
    assert schedule["name"] == f"stepfuncproject-{env}-incremental-run" and schedule["group_name"] == "default"
    assert (schedule["schedule_expression"], schedule["schedule_expression_timezone"]) == ("rate(1 hour)", "UTC")
    assert schedule["state"] == state  # exists in dev too: turning it on is an in-place change
    assert schedule["flexible_time_window"] == {"mode": "OFF"}
    assert schedule["kms_key_arn"] == KEY
    assert schedule["target"] == {
        "arn": MACHINE, "input": "{}", "role_arn": ref("aws_iam_role", role_key, "arn"),
        "retry_policy": {"maximum_retry_attempts": 3, "maximum_event_age_in_seconds": 3600},
        "dead_letter_config": {"arn": QUEUE}}


def test_scheduler_role_may_only_start_the_machine(stacks: dict[str, Stack]) -> None:
    stack = stacks["prod"]
    role_key, role = role_named(stack, "stepfuncproject-prod-scheduler-start-execution")
    assert json.loads(role["assume_role_policy"]) == {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "scheduler.amazonaws.com"}, "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"aws:SourceAccount": ACCOUNT}}}]}
    schedule_arn = f"arn:{PARTITION}:scheduler:eu-west-2:{ACCOUNT}:schedule/default/stepfuncproject-prod-incremental-run"
    assert inline_policy(stack, role_key)["Statement"] == [  # the whole list: any broadening fails here
        {"Sid": "StartPipelineExecution", "Effect": "Allow", "Action": ["states:StartExecution"],
         "Resource": [MACHINE]},
        {"Sid": "EncryptPipelineExecutionInput", "Effect": "Allow", "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
         "Resource": [KEY], "Condition": {"StringEquals": {"kms:EncryptionContext:aws:states:stateMachineArn": MACHINE}}},
        {"Sid": "SendFailedStartsToDeadLetterQueue", "Effect": "Allow", "Action": ["sqs:SendMessage"],
         "Resource": [QUEUE]},
        {"Sid": "EncryptDeadLetters", "Effect": "Allow", "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
         "Resource": [KEY], "Condition": {"StringEquals": {"kms:EncryptionContext:aws:sqs:arn": QUEUE}}},
        {"Sid": "DecryptOwnSchedule", "Effect": "Allow", "Action": ["kms:Decrypt"], "Resource": [KEY],
         "Condition": {"StringEquals": {"kms:EncryptionContext:aws:scheduler:schedule:arn": schedule_arn}}},
    ]


# --- the status-change rule and its targets ----------------------------------------------------------------

def test_rule_matches_this_machines_bad_endings(stacks: dict[str, Stack]) -> None:
    for env in ("dev", "prod"):
        matched = only(stacks[env]["resource"], "aws_cloudwatch_event_rule")
        assert json.loads(matched["event_pattern"]) == {
            "source": ["aws.states"], "detail-type": ["Step Functions Execution Status Change"],
            "detail": {"status": ["FAILED", "TIMED_OUT", "ABORTED"], "stateMachineArn": [MACHINE]}}


def test_rule_tells_the_topic_and_records_the_failure(stacks: dict[str, Stack]) -> None:
    stack = stacks["prod"]
    rule_key = key_of(stack, "aws_cloudwatch_event_rule")
    targets = {target["target_id"]: target for target in resources(stack, "aws_cloudwatch_event_target").values()}
    assert set(targets) == {"alerts-topic", "record-failure"}
    for target in targets.values():
        assert target["rule"] == ref("aws_cloudwatch_event_rule", rule_key, "name")
        assert target["retry_policy"] == {"maximum_event_age_in_seconds": 86400, "maximum_retry_attempts": 185}
        assert target["dead_letter_config"] == {"arn": QUEUE}
    assert targets["alerts-topic"]["arn"] == topic(stack)
    assert set(targets["alerts-topic"]["input_transformer"]["input_paths"].values()) >= {
        "$.detail.name", "$.detail.status", "$.detail.error", "$.detail.cause", "$.detail.executionArn", "$.time"}
    handler = function_key(stack, "lambda_error_handler")
    record = targets["record-failure"]
    assert record["arn"] == ref("aws_lambda_function", handler, "arn")
    assert not {"input", "input_path", "input_transformer"} & set(record)  # the raw event
    permission = only(stack["resource"], "aws_lambda_permission")
    assert permission == {**permission, "action": "lambda:InvokeFunction", "principal": "events.amazonaws.com",
                          "function_name": ref("aws_lambda_function", handler, "function_name"),
                          "source_arn": rule(stack)}
    assert "source_account" not in permission or permission["source_account"] == ACCOUNT


_PLACEHOLDER = re.compile(r"<([A-Za-z0-9_.\-]+)>")
EXECUTION = "arn:aws:states:eu-west-2:123456789012:execution:stepfuncproject-prod-pipeline:0b3c-run"


@pytest.mark.parametrize(("status", "error", "cause", "words"), [
    ("FAILED", "pagerduty_forbidden", 'lambda_2: PagerDuty answered 403 "Forbidden" for /log_entries',
     ["lambda_2", 'answered 403 "Forbidden"']),
    ("TIMED_OUT", "States.Timeout", None, []),
    ("ABORTED", None, None, []),
])
def test_alert_message_is_readable(stacks: dict[str, Stack], status: str, error: str | None, cause: str | None,
                                   words: list[str]) -> None:
    target = next(t for t in resources(stacks["prod"], "aws_cloudwatch_event_target").values()
                  if t["target_id"] == "alerts-topic")
    event = {**status_change_event(EXECUTION, status, error=error, cause=cause), "time": "2026-11-02T07:00:41Z"}
    transformer = target["input_transformer"]
    # What EventBridge sends the topic (tests/support/eventbridge.py): a quoted template is a JSON string, whose
    # content is the text the subscribers read.
    message = json.loads(render_input_transformer(transformer["input_paths"], transformer["input_template"], event))
    assert not _PLACEHOLDER.search(message) and "\n" not in message and not message.startswith("{")
    for word in ["stepfuncproject-prod", "0b3c-run", f"ended {status}", "2026-11-02T07:00:41Z",
                 *([f"Error: {error}."] if error else []), *words,
                 "https://eu-west-2.console.aws.amazon.com/states/home?region=eu-west-2#/v2/executions/details/"
                 + event["detail"]["executionArn"]]:
        assert word in message, (word, message)


# --- the topic and the dead-letter queue -------------------------------------------------------------------

def test_topic_is_encrypted_and_only_our_rule_and_alarms_publish(stacks: dict[str, Stack]) -> None:
    stack = stacks["prod"]
    sns = only(stack["resource"], "aws_sns_topic")
    assert sns["name"] == "stepfuncproject-prod-alerts" and sns["kms_master_key_id"] == KEY
    policy = only(stack["resource"], "aws_sns_topic_policy")
    assert policy["arn"] == topic(stack)
    statements = statements_by_sid(json.loads(policy["policy"]))
    assert set(statements) == {"AccountManagesTopic", "StatusChangeRulePublishes", "EnvironmentAlarmsPublish"}
    for statement in statements.values():
        assert statement["Principal"] not in ("*", {"AWS": "*"}) and statement["Resource"] == topic(stack)
    assert statements["AccountManagesTopic"]["Principal"] == {"AWS": f"arn:{PARTITION}:iam::{ACCOUNT}:root"}
    assert statements["StatusChangeRulePublishes"] == {**statements["StatusChangeRulePublishes"],
        "Principal": {"Service": "events.amazonaws.com"}, "Action": "sns:Publish",
        "Condition": {"ArnEquals": {"aws:SourceArn": rule(stack)}}}
    assert statements["EnvironmentAlarmsPublish"] == {**statements["EnvironmentAlarmsPublish"],
        "Principal": {"Service": "cloudwatch.amazonaws.com"}, "Action": "sns:Publish",
        "Condition": {"ArnLike": {"aws:SourceArn": f"arn:{PARTITION}:cloudwatch:eu-west-2:{ACCOUNT}:alarm:"
                                                   "stepfuncproject-prod-*"},
                      "StringEquals": {"aws:SourceAccount": ACCOUNT}}}


def test_dead_letter_queue_is_encrypted_and_only_our_rule_sends_by_policy(stacks: dict[str, Stack]) -> None:
    stack = stacks["prod"]
    queue = only(stack["resource"], "aws_sqs_queue")
    assert queue == {"name": "stepfuncproject-prod-dead-letters", "kms_master_key_id": KEY,
                     "kms_data_key_reuse_period_seconds": 300, "message_retention_seconds": 14 * 24 * 3600}
    policy = only(stack["resource"], "aws_sqs_queue_policy")
    assert policy["queue_url"] == QUEUE.replace(".arn}", ".url}")
    assert json.loads(policy["policy"])["Statement"] == [{
        "Sid": "StatusChangeRuleSendsUndelivered", "Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"},
        "Action": "sqs:SendMessage", "Resource": QUEUE, "Condition": {"ArnEquals": {"aws:SourceArn": rule(stack)}}}]


def test_error_handler_keeps_its_failed_asynchronous_invocations(stacks: dict[str, Stack]) -> None:
    """The rule invokes the error handler asynchronously: what still fails after Lambda's retries is kept."""
    stack = stacks["prod"]
    for folder in FOLDERS:
        key = function_key(stack, folder)
        fn = resources(stack, "aws_lambda_function")[key]
        role_key = fn["role"].split(".")[1]
        statements = statements_by_sid(inline_policy(stack, role_key))
        if folder != "lambda_error_handler":
            assert "dead_letter_config" not in fn and "SendFailedInvocationsToDeadLetterQueue" not in statements
            continue
        assert fn["dead_letter_config"] == {"target_arn": QUEUE}
        assert statements["SendFailedInvocationsToDeadLetterQueue"]["Resource"] == [QUEUE]
        assert statements["EncryptDeadLetters"] == {
            "Sid": "EncryptDeadLetters", "Effect": "Allow", "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": [KEY],
            "Condition": {"StringEquals": {"kms:EncryptionContext:aws:sqs:arn": QUEUE}}}


def test_committed_environments_subscribe_no_one(stacks: dict[str, Stack]) -> None:
    for env in ("dev", "prod"):
        assert "aws_sns_topic_subscription" not in stacks[env]["resource"]


# --- settings variants ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def operated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Stack]:
    """A dev with a cron schedule switched on, subscribers and tuned alarms; a prod with its schedule off."""
    folder = tmp_path_factory.mktemp("operated")
    settings = folder / "environments.json"
    settings.write_text(json.dumps({
        "dev": {"schedule": {"enabled": True, "expression": "cron(15 6 ? * MON-FRI *)", "timezone": "Europe/London",
                             "max_retry_attempts": 10, "max_event_age_seconds": 7200},
                "notifications": {"emails": ["oncall@example.com", "data-team@example.org"],
                                  "https_endpoints": ["https://events.example.com/pagerduty-pipeline"]},
                "alarms": {"freshness_max_age_minutes": 1440, "period_seconds": 60, "evaluation_periods": 5,
                           "db_cpu_percent": 90, "db_freeable_memory_mb": 200, "db_free_storage_share": 0.2},
                "database": {"max_allocated_storage_gb": 100, "deletion_protection": False,
                             "final_snapshot": False}},
        "prod": {"schedule": {"enabled": False}},
    }))
    outdir = synthesize(folder / "out", "--settings", str(settings))
    return {env: without_metadata(load_stack(outdir, f"stepfuncproject-{env}")) for env in ("dev", "prod")}


def test_subscriptions_come_from_the_settings(operated: dict[str, Stack]) -> None:
    stack = operated["dev"]
    subscriptions = resources(stack, "aws_sns_topic_subscription")
    assert sorted((s["protocol"], s["endpoint"]) for s in subscriptions.values()) == [
        ("email", "data-team@example.org"), ("email", "oncall@example.com"),
        ("https", "https://events.example.com/pagerduty-pipeline")]
    assert {s["topic_arn"] for s in subscriptions.values()} == {topic(stack)}


def test_schedule_settings_reach_the_schedule(operated: dict[str, Stack]) -> None:
    dev = only(operated["dev"]["resource"], "aws_scheduler_schedule")
    assert (dev["state"], dev["schedule_expression"], dev["schedule_expression_timezone"]) == (
        "ENABLED", "cron(15 6 ? * MON-FRI *)", "Europe/London")
    assert dev["target"]["retry_policy"] == {"maximum_retry_attempts": 10, "maximum_event_age_in_seconds": 7200}
    assert only(operated["prod"]["resource"], "aws_scheduler_schedule")["state"] == "DISABLED"


def alarms_by_suffix(stack: Stack, env: str) -> dict[str, dict[str, Any]]:
    prefix = f"stepfuncproject-{env}-"
    return {alarm["alarm_name"].removeprefix(prefix): alarm
            for alarm in resources(stack, "aws_cloudwatch_metric_alarm").values()}


def test_freshness_alarm_only_while_the_schedule_runs(stacks: dict[str, Stack], operated: dict[str, Stack]) -> None:
    assert "data-freshness" not in alarms_by_suffix(stacks["dev"], "dev")  # no schedule: it would always fire
    assert "data-freshness" not in alarms_by_suffix(operated["prod"], "prod")
    prod = alarms_by_suffix(stacks["prod"], "prod")["data-freshness"]
    assert (prod["period"], prod["threshold"], prod["evaluation_periods"]) == (7200, 7200, 1)  # 2 x rate(1 hour)
    dev = alarms_by_suffix(operated["dev"], "dev")["data-freshness"]  # cron: the bound set explicitly
    assert (dev["period"], dev["threshold"], dev["treat_missing_data"]) == (86400, 86400, "breaching")


def test_alarm_settings_reach_the_alarms(operated: dict[str, Stack]) -> None:
    alarms = alarms_by_suffix(operated["dev"], "dev")
    assert (alarms["executions-failed"]["period"], alarms["executions-failed"]["evaluation_periods"]) == (60, 5)
    assert alarms["db-cpu"]["threshold"] == 90
    assert alarms["db-freeable-memory"]["threshold"] == 200 * 1024 ** 2
    assert alarms["db-free-storage"]["threshold"] == round(0.2 * 100 * 1024 ** 3)


# --- the alarms -------------------------------------------------------------------------------------------

def expected_alarms(stack: Stack) -> dict[str, tuple]:
    """suffix -> (namespace, metric, dimensions, statistic, comparison, threshold, period, periods, missing data)."""
    machine = {"StateMachineArn": MACHINE}
    pipeline = {"Pipeline": "stepfuncproject-prod"}
    db = {"DBInstanceIdentifier": "${aws_db_instance.database_instance_D7FC2283.identifier}"}
    happened = ("Sum", "GreaterThanOrEqualToThreshold", 1, 300, 1, "notBreaching")
    table = {
        "executions-failed": ("AWS/States", "ExecutionsFailed", machine, *happened),
        "executions-timed-out": ("AWS/States", "ExecutionsTimedOut", machine, *happened),
        "checks-failed": (NAMESPACE, "ChecksFailed", pipeline, *happened),
        "dead-letters": ("AWS/SQS", "ApproximateNumberOfMessagesVisible", {"QueueName": QUEUE.replace(".arn}", ".name}")},
                         "Maximum", *happened[1:]),
        "data-freshness": (NAMESPACE, "DataFreshness", {**pipeline, "Scope": "all"}, "Minimum",
                           "GreaterThanThreshold", 7200, 7200, 1, "breaching"),
        "db-cpu": ("AWS/RDS", "CPUUtilization", db, "Average", "GreaterThanThreshold", 80, 300, 3, "missing"),
        "db-freeable-memory": ("AWS/RDS", "FreeableMemory", db, "Minimum", "LessThanThreshold", 128 * 1024 ** 2,
                               300, 3, "missing"),
        "db-free-storage": ("AWS/RDS", "FreeStorageSpace", db, "Minimum", "LessThanThreshold",
                            round(0.1 * 30 * 1024 ** 3), 300, 3, "missing"),
    }
    for folder in FOLDERS:
        function = {"FunctionName": ref("aws_lambda_function", function_key(stack, folder), "function_name")}
        table[f"{folder}-errors"] = ("AWS/Lambda", "Errors", function, *happened)
        table[f"{folder}-throttles"] = ("AWS/Lambda", "Throttles", function, *happened)
    return table


def test_every_alarm_watches_what_it_should_and_tells_the_topic(stacks: dict[str, Stack]) -> None:
    stack = stacks["prod"]
    alarms = alarms_by_suffix(stack, "prod")
    expected = expected_alarms(stack)
    assert set(alarms) == set(expected)
    for suffix, (namespace, metric, dimensions, statistic, comparison, threshold, period, periods,
                 missing) in expected.items():
        alarm = alarms[suffix]
        assert (alarm["namespace"], alarm["metric_name"], alarm["dimensions"]) == (namespace, metric, dimensions), suffix
        assert (alarm["statistic"], alarm["comparison_operator"], alarm["threshold"]) == (
            statistic, comparison, threshold), suffix
        assert (alarm["period"], alarm["evaluation_periods"], alarm["treat_missing_data"]) == (
            period, periods, missing), suffix
        assert alarm["alarm_actions"] == alarm["ok_actions"] == [topic(stack)], suffix
        assert alarm["actions_enabled"] is True and alarm["alarm_description"], suffix
        assert alarm["period"] * alarm["evaluation_periods"] <= 86400, suffix


# --- the dashboard ----------------------------------------------------------------------------------------

def test_dashboard_shows_runs_loads_api_freshness_checks_functions_and_database(stacks: dict[str, Stack]) -> None:
    stack = stacks["prod"]
    dashboard = only(stack["resource"], "aws_cloudwatch_dashboard")
    assert dashboard["dashboard_name"] == "stepfuncproject-prod-pipeline"
    body = json.loads(dashboard["dashboard_body"])
    widgets = body["widgets"]
    for widget in widgets:
        assert widget["x"] + widget["width"] <= 24 and widget["height"] > 0
    graphs = [w["properties"] for w in widgets if w["type"] == "metric"]
    lines = [line for graph in graphs for line in graph["metrics"]]
    plotted = {(line[0], line[1]) for line in lines if isinstance(line, list)}
    assert plotted >= {("AWS/States", name) for name in (
        "ExecutionsStarted", "ExecutionsSucceeded", "ExecutionsFailed", "ExecutionsTimedOut", "ExecutionTime")}
    assert plotted >= {(NAMESPACE, name) for name in (
        "StepDuration", "ApiRequests", "ApiRateLimited", "ApiRetries", "DataFreshness", "ChecksFailed", "ChecksWarned")}
    assert plotted >= {("AWS/Lambda", "Errors"), ("AWS/Lambda", "Throttles"), ("AWS/RDS", "CPUUtilization"),
                       ("AWS/RDS", "FreeableMemory"), ("AWS/RDS", "FreeStorageSpace")}
    (search,) = [line["expression"] for line in lines if isinstance(line, dict)]
    assert search == ("SEARCH('{PagerDutyPipeline,Pipeline,Table} MetricName=\"RowsWritten\" "
                      "Pipeline=\"stepfuncproject-prod\"', 'Sum', 3600)")
    machine_lines = [line for line in lines if isinstance(line, list) and line[0] == "AWS/States"]
    assert all(line[2:4] == ["StateMachineArn", MACHINE] for line in machine_lines)
    functions = {line[3] for line in lines if isinstance(line, list) and line[0] == "AWS/Lambda"}
    assert functions == {ref("aws_lambda_function", function_key(stack, f), "function_name") for f in FOLDERS}
    assert {g["region"] for g in graphs} == {"eu-west-2"}
    (alarm_widget,) = [w["properties"] for w in widgets if w["type"] == "alarm"]
    assert sorted(alarm_widget["alarms"]) == sorted(
        ref("aws_cloudwatch_metric_alarm", key, "arn") for key in resources(stack, "aws_cloudwatch_metric_alarm"))
    assert "%{" not in dashboard["dashboard_body"]  # Terraform would read it as a template directive


# --- encryption -------------------------------------------------------------------------------------------

def test_execution_data_is_encrypted_with_the_environment_key(stacks: dict[str, Stack]) -> None:
    stack = stacks["prod"]
    machine = only(stack["resource"], "aws_sfn_state_machine")
    assert machine["encryption_configuration"] == {
        "type": "CUSTOMER_MANAGED_KMS_KEY", "kms_key_id": KEY, "kms_data_key_reuse_period_seconds": 300}
    role_key, _ = role_named(stack, "stepfuncproject-prod-pipeline-role")
    statements = statements_by_sid(inline_policy(stack, role_key))
    built_arn = f"arn:{PARTITION}:states:eu-west-2:{ACCOUNT}:stateMachine:stepfuncproject-prod-pipeline"
    assert statements["EncryptOwnExecutionData"] == {
        "Sid": "EncryptOwnExecutionData", "Effect": "Allow", "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
        "Resource": [KEY], "Condition": {"StringEquals": {"kms:EncryptionContext:aws:states:stateMachineArn":
                                                          built_arn}}}
    assert statements["EncryptLogDelivery"] == {
        "Sid": "EncryptLogDelivery", "Effect": "Allow", "Action": ["kms:GenerateDataKey"], "Resource": [KEY],
        "Condition": {"StringLike": {"kms:EncryptionContext:SourceArn": f"arn:{PARTITION}:logs:eu-west-2:{ACCOUNT}:*"}}}
    # step 1 describes executions (the run lock's reconciliation): it decrypts with the key already
    step1 = resources(stack, "aws_lambda_function")[function_key(stack, "lambda_1")]
    step1_statements = statements_by_sid(inline_policy(stack, step1["role"].split(".")[1]))
    assert step1_statements["DecryptSecretsAndSettings"]["Action"] == ["kms:Decrypt"]


def test_key_policy_lets_each_service_in_for_exactly_its_job(stacks: dict[str, Stack]) -> None:
    policy = json.loads(only(stacks["prod"]["resource"], "aws_kms_key")["policy"])
    statements = statements_by_sid(policy)
    send = ["kms:Decrypt", "kms:GenerateDataKey*"]
    topic_arn = f"arn:{PARTITION}:sns:eu-west-2:{ACCOUNT}:stepfuncproject-prod-alerts"
    queue_arn = f"arn:{PARTITION}:sqs:eu-west-2:{ACCOUNT}:stepfuncproject-prod-dead-letters"
    assert {sid: (s["Principal"], s["Action"], s.get("Condition")) for sid, s in statements.items()
            if sid not in ("AccountAdministersKeyThroughIam", "CloudWatchLogsEncryptsThisAccountsLogGroups")} == {
        "LogDeliveryDecryptsStateMachineLogs": (
            {"Service": "delivery.logs.amazonaws.com"}, "kms:Decrypt",
            {"StringLike": {"kms:EncryptionContext:SourceArn": f"arn:{PARTITION}:logs:eu-west-2:{ACCOUNT}:*"}}),
        "EventBridgePublishesToAlertsTopic": (
            {"Service": "events.amazonaws.com"}, send,
            {"StringEquals": {"kms:EncryptionContext:aws:sns:topicArn": topic_arn}}),
        "CloudWatchAlarmsPublishToAlertsTopic": (
            {"Service": "cloudwatch.amazonaws.com"}, send,
            {"StringEquals": {"kms:EncryptionContext:aws:sns:topicArn": topic_arn}}),
        "EventBridgeSendsToDeadLetterQueue": (
            {"Service": "events.amazonaws.com"}, send,
            {"StringEquals": {"kms:EncryptionContext:aws:sqs:arn": queue_arn}}),
    }
    for statement in policy["Statement"]:
        assert statement["Principal"] != "*" and statement["Effect"] == "Allow"
    # the names in the key policy are the resources' own (built from the names, since the key comes first)
    assert only(stacks["prod"]["resource"], "aws_sns_topic")["name"] == topic_arn.rsplit(":", 1)[1]
    assert only(stacks["prod"]["resource"], "aws_sqs_queue")["name"] == queue_arn.rsplit(":", 1)[1]


# --- metrics and outputs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("env", ["dev", "prod"])
def test_every_function_is_told_where_its_metrics_go(stacks: dict[str, Stack], env: str) -> None:
    functions = resources(stacks[env], "aws_lambda_function").values()
    assert len(functions) == 4
    for fn in functions:
        variables = fn["environment"]["variables"]
        assert (variables["METRICS_NAMESPACE"], variables["PIPELINE_NAME"]) == (
            "PagerDutyPipeline", f"stepfuncproject-{env}")


def test_the_metric_contract_is_the_layers() -> None:
    import sys

    from modules import metrics
    from tests.support.synth import ROOT

    sys.path.insert(0, str(ROOT / "layer" / "python"))
    try:
        from pagerduty_pipeline import metrics as layer
    finally:
        sys.path.remove(str(ROOT / "layer" / "python"))
    assert (layer.NAMESPACE_VARIABLE, layer.PIPELINE_VARIABLE, layer.DEFAULT_NAMESPACE) == (
        metrics.NAMESPACE_VARIABLE, metrics.PIPELINE_VARIABLE, metrics.NAMESPACE)
    assert {name: dims for name, (_, dims) in layer.CONTRACT.items()} == {
        metrics.STEP_DURATION: ("Pipeline", "Step"), metrics.API_REQUESTS: ("Pipeline", "Step"),
        metrics.API_RATE_LIMITED: ("Pipeline", "Step"), metrics.API_RETRIES: ("Pipeline", "Step"),
        metrics.ROWS_WRITTEN: ("Pipeline", "Table"), metrics.CHECKS_FAILED: ("Pipeline",),
        metrics.CHECKS_WARNED: ("Pipeline",), metrics.DATA_FRESHNESS: ("Pipeline", "Scope")}


def test_outputs_name_the_topic_schedule_dashboard_and_queue(stacks: dict[str, Stack]) -> None:
    outputs = stacks["prod"]["output"]
    assert outputs["AlertsTopicArn-stepfuncproject"]["value"] == topic(stacks["prod"])
    assert outputs["ScheduleName-stepfuncproject"]["value"] == "stepfuncproject-prod-incremental-run"
    assert outputs["DashboardName-stepfuncproject"]["value"] == "stepfuncproject-prod-pipeline"
    assert outputs["DashboardUrl-stepfuncproject"]["value"] == (
        "https://eu-west-2.console.aws.amazon.com/cloudwatch/home?region=eu-west-2"
        "#dashboards/dashboard/stepfuncproject-prod-pipeline")
    assert outputs["DeadLetterQueueUrl-stepfuncproject"]["value"] == QUEUE.replace(".arn}", ".url}")


def test_readme_explains_every_alarm(stacks: dict[str, Stack]) -> None:
    from tests.support.synth import ROOT

    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Alerts", 1)[1].split("\n### ", 1)[0]
    for suffix in alarms_by_suffix(stacks["prod"], "prod"):
        generic = re.sub(r"^lambda_(1|2|3|error_handler)-", "<function>-", suffix)
        assert f"`{generic}`" in section, suffix
    assert "aws sns subscribe" in section and "notifications.emails" in section
