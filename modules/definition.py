"""The state machine definition (Amazon States Language) as plain data, testable without AWS.

Flow: FetchInitialData -> FetchIncidents (again while it reports `complete: false`) -> ValidateData.
After each step a Choice continues only when `success` is present, boolean and true; anything else,
and any error caught after retries, goes through a `<Step>Failed` Pass state that records which step
failed, to the error handler, and then to a Fail state carrying the handler's error and message.

Every function receives the same envelope, so each can record the execution it belongs to and knows
the execution's deadline: `{"execution_id", "execution_name", "execution_start_time" (ISO 8601, from the
context object), "execution_timeout_seconds" (the state machine's TimeoutSeconds), "state_name",
"input": <the state>}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modules.settings import RetrySettings

LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"
# Transient Lambda service faults and throttling; function errors are not retried (handlers report them).
RETRIED_ERRORS = [
    "Lambda.AWSLambdaException",
    "Lambda.ClientExecutionTimeoutException",
    "Lambda.SdkClientException",
    "Lambda.ServiceException",
    "Lambda.TooManyRequestsException",
]
STEPS = (  # state name, function folder, next state when the step succeeded
    ("FetchInitialData", "lambda_1", "FetchIncidents"),
    ("FetchIncidents", "lambda_2", "ValidateData"),
    ("ValidateData", "lambda_3", "PipelineSucceeded"),
)
ERROR_HANDLER_STATE = "HandleError"
FAIL_STATE = "PipelineFailed"


def _invoke(function_arn: str, retry: RetrySettings, *, timeout_seconds: int,
            task_timeout_seconds: int) -> dict[str, Any]:
    """A Lambda task; timeout_seconds is the state machine's, passed to the function with the start time."""
    retrier: dict[str, Any] = {
        "ErrorEquals": RETRIED_ERRORS,
        "IntervalSeconds": retry.interval_seconds,
        "MaxAttempts": retry.max_attempts,
        "BackoffRate": retry.backoff_rate,
    }
    if retry.jitter != "NONE":
        retrier["JitterStrategy"] = retry.jitter
    return {
        "Type": "Task",
        "Resource": LAMBDA_INVOKE,
        "Parameters": {
            "FunctionName": function_arn,
            "Payload": {
                "execution_id.$": "$$.Execution.Id",
                "execution_name.$": "$$.Execution.Name",
                "execution_start_time.$": "$$.Execution.StartTime",
                "execution_timeout_seconds": timeout_seconds,
                "state_name.$": "$$.State.Name",
                "input.$": "$",
            },
        },
        "OutputPath": "$.Payload",
        "TimeoutSeconds": task_timeout_seconds,
        "Retry": [retrier],
    }


def _unsuccessful(failed_state: str) -> list[dict[str, Any]]:
    """Choice rules, in order, that send a missing, non-boolean or false `success` to failed_state."""
    return [
        {"Variable": "$.success", "IsPresent": False, "Next": failed_state},
        {"Not": {"Variable": "$.success", "IsBoolean": True}, "Next": failed_state},
        {"Variable": "$.success", "BooleanEquals": False, "Next": failed_state},
    ]


def build_definition(function_arns: Mapping[str, str], *, retry: RetrySettings, timeout_seconds: int,
                     task_timeout_seconds: int) -> dict[str, Any]:
    """function_arns maps lambda_1, lambda_2, lambda_3 and lambda_error_handler to ARNs (or tokens)."""
    missing = {"lambda_1", "lambda_2", "lambda_3", "lambda_error_handler"} - set(function_arns)
    if missing:
        raise ValueError(f"function ARNs missing for: {', '.join(sorted(missing))}")
    states: dict[str, Any] = {}
    for state, folder, next_state in STEPS:
        failed = f"{state}Failed"
        task = _invoke(function_arns[folder], retry, timeout_seconds=timeout_seconds,
                       task_timeout_seconds=task_timeout_seconds)
        task["Catch"] = [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": failed}]
        task["Next"] = f"Check{state}"
        rules = _unsuccessful(failed)
        if folder == "lambda_2":  # a resumable step: call it again from its cursor until complete
            rules += [
                {"Variable": "$.complete", "IsPresent": False, "Next": next_state},
                {"Not": {"Variable": "$.complete", "IsBoolean": True}, "Next": failed},
                {"Variable": "$.complete", "BooleanEquals": False, "Next": state},
            ]
        states[state] = task
        states[f"Check{state}"] = {"Type": "Choice", "Choices": rules, "Default": next_state}
        states[failed] = {
            "Type": "Pass",
            "Comment": "Names the failed step for the error handler; state is the caught error or the step's result",
            "Parameters": {"failed_step": state, "state.$": "$"},
            "Next": ERROR_HANDLER_STATE,
        }
    handler = _invoke(function_arns["lambda_error_handler"], retry, timeout_seconds=timeout_seconds,
                      task_timeout_seconds=task_timeout_seconds)
    handler["Catch"] = [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.handler_error", "Next": "ErrorHandlerFailed"}]
    handler["Next"] = FAIL_STATE
    states[ERROR_HANDLER_STATE] = handler
    states[FAIL_STATE] = {
        "Type": "Fail",
        "Comment": "error and message come from the error handler, which recorded them on the run",
        "ErrorPath": "$.error",
        "CausePath": "$.message",
    }
    states["ErrorHandlerFailed"] = {
        "Type": "Fail",
        "Error": "ErrorHandlerFailed",
        "Cause": "A pipeline step failed and the error handler could not record it; see the state machine logs",
    }
    states["PipelineSucceeded"] = {"Type": "Succeed"}
    return {
        "Comment": "PagerDuty incidents into PostgreSQL: fetch and migrate, load, validate",
        "StartAt": STEPS[0][0],
        "TimeoutSeconds": timeout_seconds,
        "States": states,
    }
