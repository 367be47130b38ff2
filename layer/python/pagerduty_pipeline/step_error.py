"""Error handler: record the failed step, error and cause on the run (best effort: also when the database is
the failure) and return what the Fail state shows."""

from __future__ import annotations

import json
import logging

from . import runs
from .config import load_config
from .db import DB_FAILURES, close_quietly, describe_db_error
from .errors import PipelineError
from .runtime import open_db

log = logging.getLogger("pagerduty_pipeline")

MAX_MESSAGE = 4000


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


def handle_error(event, context=None, *, env=None) -> dict:
    """Mark the run failed (best effort: also works when the database is the failure) and return
    the Fail state's payload (error and message are always strings)."""
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
