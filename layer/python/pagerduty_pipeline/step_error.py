"""Error handler: record the failed step, error and cause on the run (best effort: also when the database is
the failure) and return what the Fail state shows.

It takes two events: the state machine's Catch envelope (a step failed), and EventBridge's "Step Functions
Execution Status Change" for an execution that ended FAILED, TIMED_OUT or ABORTED, so that a run is recorded as
ended also when no Catch ran (the execution's own timeout, StopExecution)."""

from __future__ import annotations

import json
import logging

from . import runs
from .config import load_config
from .db import DB_FAILURES, close_quietly, describe_db_error
from .errors import PipelineError
from .metrics import StepMetrics, measured
from .runtime import open_db

log = logging.getLogger("pagerduty_pipeline")

MAX_MESSAGE = 4000
STATUS_CHANGE = "Step Functions Execution Status Change"  # EventBridge's detail-type
# The execution's status in the event -> (the error recorded when the event names none, the message when it gives
# no cause); the run's status comes from runs.ENDED_EXECUTION, the mapping the next start's reconciliation uses.
ENDED_BY_EVENT = {
    "FAILED": ("States.Failed", "the execution failed and no Catch recorded why (the status change event gave no "
                                "cause)"),
    "TIMED_OUT": ("States.Timeout", "the execution reached the state machine's TimeoutSeconds and Step Functions "
                                    "ended it; no Catch ran"),
    "ABORTED": ("States.Aborted", "the execution was stopped (StopExecution); no Catch ran"),
}


def _describe_failure(state) -> tuple[str, str]:
    if isinstance(state, dict) and isinstance(state.get("error"), dict) and \
            ("Error" in state["error"] or "Cause" in state["error"]):
        err = state["error"]
        name = str(err.get("Error") or "States.TaskFailed")
        cause = err.get("Cause")
        message = cause if isinstance(cause, str) else json.dumps(cause)
        try:
            parsed = json.loads(cause) if isinstance(cause, str) else None
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and parsed.get("errorMessage") is not None:
            message = f"{parsed.get('errorType') or name}: {parsed['errorMessage']}"
        return name, (message or name)
    if isinstance(state, dict):
        code = state.get("error") if isinstance(state.get("error"), str) and state.get("error") else None
        if code is None:
            code = "step_failed" if state.get("success") is False else "missing_success"
        message = state.get("message")
        if not isinstance(message, str) or not message:
            message = f"step returned success={state.get('success')!r} without a message"
        return code, message
    return "step_failed", f"step failed with state {json.dumps(state)[:500]}"


def is_status_change(event) -> bool:
    """Whether ``event`` comes from EventBridge (not the Catch's envelope): then it must be a status change."""
    return isinstance(event, dict) and (event.get("source") == "aws.states" or "detail-type" in event)


def _status_change_problem(event: dict) -> str | None:
    """Why a would-be status change event cannot end a run (None: it can)."""
    if event.get("source") != "aws.states" or event.get("detail-type") != STATUS_CHANGE:
        return (f"not a Step Functions status change: source {event.get('source')!r}, detail-type "
                f"{event.get('detail-type')!r} (expected 'aws.states', {STATUS_CHANGE!r})")
    detail = event.get("detail")
    if not isinstance(detail, dict):
        return "the event's detail is missing or not an object"
    if not isinstance(detail.get("executionArn"), str) or not detail["executionArn"].strip():
        return "the event's detail has no executionArn"
    if detail.get("status") not in ENDED_BY_EVENT:
        return (f"status {detail.get('status')!r} does not end a run here (only {', '.join(ENDED_BY_EVENT)}; the "
                "rule should not send others)")
    return None


class StatusChangeNotRecorded(Exception):
    """The database could not be reached or refused the write: raised so that Lambda retries the asynchronous
    invocation (twice), then sends the event to the function's dead-letter queue, which raises the dead-letters
    alarm. Should it stay unrecorded, the next start reconciles the run from the execution's status."""


def record_status_change(event: dict, env=None, metrics: StepMetrics | None = None) -> dict:
    """End the run of the event's execution with its status (only a run still running: see runs.record_end).
    An odd event is logged and answered, never raised: sent again it would be as odd. A database failure raises
    StatusChangeNotRecorded after logging, so the asynchronous invocation is retried."""
    detail = event.get("detail") if isinstance(event.get("detail"), dict) else {}
    arn = detail.get("executionArn") if isinstance(detail.get("executionArn"), str) else None
    status = detail.get("status") if isinstance(detail.get("status"), str) else None
    result = {"success": False, "source": "status_change", "execution_arn": arn, "status": status, "run_id": None,
              "recorded": False, "run_status": None}
    if metrics is not None:
        metrics.note(execution_id=arn)
    problem = _status_change_problem(event)
    if problem:
        result["reason"] = problem
        log.warning(json.dumps({"event": "status_change_ignored", "execution_arn": arn, "status": status,
                                "reason": problem, "id": event.get("id")}))
        return result
    ended = runs.ENDED_EXECUTION[status]
    default_error, default_message = ENDED_BY_EVENT[status]
    error = detail.get("error") if isinstance(detail.get("error"), str) and detail["error"].strip() else default_error
    cause = detail.get("cause")
    message = (cause if isinstance(cause, str) and cause.strip() else default_message)[:MAX_MESSAGE]
    conn = None
    try:
        cfg = load_config(env, need_pagerduty=False)
        conn = open_db(cfg, "lambda_error_handler")
        run_id, recorded, run_status = runs.record_end(conn, arn, ended, error, message)
        result.update(run_id=run_id, recorded=recorded, run_status=run_status)
        if run_id is None:
            result["reason"] = "no run has this execution id (its input was refused before step 1 recorded one)"
        elif not recorded:
            result["reason"] = f"the run is {run_status} already: kept as it is"
    except (PipelineError, *DB_FAILURES) as exc:
        result["reason"] = f"not recorded: {exc.message if isinstance(exc, PipelineError) else describe_db_error(exc)}"
    finally:
        close_quietly(conn)
    level = logging.ERROR if result["recorded"] else logging.WARNING
    log.log(level, json.dumps({"event": "execution_ended", "execution_arn": arn, "status": status, "error": error,
                               "message": message, **{k: result[k] for k in ("run_id", "recorded", "run_status")},
                               "reason": result.get("reason")}))
    if result.get("reason", "").startswith("not recorded:"):
        raise StatusChangeNotRecorded(f"{arn} ended {status}; {result['reason']}")
    return result


@measured("lambda_error_handler")
def handle_error(event, context=None, *, env=None, metrics: StepMetrics) -> dict:
    """Mark the run failed (best effort: also works when the database is the failure) and return
    the Fail state's payload (error and message are always strings). An EventBridge status change event
    ends its execution's run instead (record_status_change)."""
    if is_status_change(event):
        return record_status_change(event, env, metrics)
    meta = {k: event.get(k) for k in ("execution_id", "execution_name", "state_name")} \
        if isinstance(event, dict) else {}
    inp = event.get("input") if isinstance(event, dict) else None
    inp = inp if isinstance(inp, dict) else {}
    failed_step = inp.get("failed_step") if isinstance(inp.get("failed_step"), str) else \
        (meta.get("state_name") or "unknown")
    state = inp.get("state", inp if "failed_step" not in inp else None)
    error, message = _describe_failure(state)
    message = message[:MAX_MESSAGE]
    run_id = state.get("run_id") if isinstance(state, dict) and isinstance(state.get("run_id"), int) else None
    recorded = False
    conn = None
    try:
        cfg = load_config(env, need_pagerduty=False)
        conn = open_db(cfg, "lambda_error_handler")
        execution_id = meta.get("execution_id") or None
        if run_id is not None or execution_id is not None:  # the run given, else the execution's
            run_id, recorded = runs.record_failure(conn, execution_id, run_id, failed_step, error, message)
    except (PipelineError, *DB_FAILURES) as exc:
        detail = exc.message if isinstance(exc, PipelineError) else describe_db_error(exc)
        log.error(json.dumps({"event": "failure_not_recorded", "reason": detail, "run_id": run_id}))
    finally:
        close_quietly(conn)
    log.error(json.dumps({"event": "run_failed", "execution_id": meta.get("execution_id"), "run_id": run_id,
                          "failed_step": failed_step, "error": error, "message": message, "recorded": recorded}))
    # the message becomes the failed execution's cause: name the step there too
    return {"success": False, "error": error, "message": f"{failed_step}: {message}", "failed_step": failed_step,
            "run_id": run_id, "recorded": recorded}
