"""The rehearsal's stand-in for EventBridge's input transformer follows the documented rules."""

from __future__ import annotations

import json

import pytest

from tests.support.eventbridge import STATUS_CHANGE, render_input_transformer, status_change_event

ARN = "arn:aws:states:eu-west-2:123456789012:execution:stepfuncproject-dev-pipeline:nightly-42"
PATHS = {"name": "$.detail.name", "status": "$.detail.status", "error": "$.detail.error",
         "cause": "$.detail.cause", "first": "$.resources.0"}


def test_a_status_change_event_names_the_execution_and_its_machine():
    event = status_change_event(ARN, "TIMED_OUT", error="States.Timeout")
    assert event["source"] == "aws.states" and event["detail-type"] == STATUS_CHANGE
    assert event["detail"]["stateMachineArn"].endswith(":stateMachine:stepfuncproject-dev-pipeline")
    assert event["detail"]["name"] == "nightly-42" and event["resources"] == [ARN]


def test_a_plain_text_template_takes_values_as_they_are():
    event = status_change_event(ARN, "FAILED", error="validation_failed", cause='lambda_3: checks "a" failed')
    text = render_input_transformer(PATHS, "<name> <status>: <error> (<cause>) [<first>]", event)
    assert text == f'nightly-42 FAILED: validation_failed (lambda_3: checks "a" failed) [{ARN}]'


def test_a_missing_or_null_value_is_empty_in_text_and_null_in_json():
    event = status_change_event(ARN, "TIMED_OUT")  # no error, no cause
    assert render_input_transformer(PATHS, "<status>: <error>.", event) == "TIMED_OUT: ."
    rendered = render_input_transformer(PATHS, '{"status": <status>, "error": <error>, "text": "<cause>"}', event)
    assert json.loads(rendered) == {"status": "TIMED_OUT", "error": None, "text": ""}


def test_values_inside_a_json_string_are_escaped():
    event = status_change_event(ARN, "FAILED", cause='a "quoted"\nline')
    rendered = render_input_transformer(PATHS, '"<status> because <cause>"', event)
    assert json.loads(rendered) == 'FAILED because a "quoted"\nline'


def test_predefined_variables_are_filled():
    event = status_change_event(ARN, "ABORTED")
    text = render_input_transformer({}, "<aws.events.rule-name> <aws.events.rule-arn>", event,
                                    rule_arn="arn:aws:events:eu-west-2:1:rule/r", rule_name="r")
    assert text == "r arn:aws:events:eu-west-2:1:rule/r"


def test_a_json_template_that_does_not_render_to_json_is_refused():
    with pytest.raises(ValueError):
        render_input_transformer(PATHS, '{"status": <status>', status_change_event(ARN, "FAILED"))
