"""Step 3: check the chunks step 2 loaded; when no blocking check fails they become coverage and the run ends
succeeded (or partial, when the execution's deadline cut the window short)."""

from __future__ import annotations

import time
from datetime import datetime

from . import runs
from .checks import Scope, run_checks
from .config import load_config
from .db import DB_FAILURES, close_quietly
from .errors import InputError, PipelineError
from .inputs import scope_of
from .metrics import StepMetrics, measured
from .runtime import db_error, failed, log_event, open_db, parse_envelope
from .step_load import CARRY_KEYS


@measured("lambda_3")
def validate_run(event, context=None, *, env=None, clock=time.time, metrics: StepMetrics) -> dict:
    conn = run_id = None
    carry: dict = {}
    try:
        envelope = parse_envelope(event)
        inp = envelope.input
        if not isinstance(inp, dict) or not isinstance(inp.get("run_id"), int) or \
                not isinstance(inp.get("window"), dict):
            raise InputError("lambda_3 input must be lambda_2's final result (run_id, window, counts)",
                             "invalid_input")
        carry = {k: inp.get(k) for k in CARRY_KEYS}
        run_id = carry["run_id"]
        cfg = load_config(env, need_pagerduty=False)
        conn = open_db(cfg, "lambda_3")
        if inp.get("complete") is not True:
            raise PipelineError("lambda_3 needs a complete load (lambda_2 returned complete: false)",
                                "incomplete_load")
        partial = inp.get("partial") is True
        counts = inp.get("counts") or {}
        runs.set_step(conn, run_id, "lambda_3")
        windows = runs.loaded_windows(conn, run_id)
        if not windows:
            raise PipelineError("the execution's deadline came before step 2 loaded one whole chunk; lower "
                                "PIPELINE_CHUNK_HOURS or give the state machine more time", "no_progress")
        filters = carry.get("filters") or {}
        scope = Scope(windows[0]["since"], windows[-1]["until"], filters,
                      sum(w["incidents"] for w in windows), sum(w["log_entries"] for w in windows),
                      sum(w["filtered_out"] for w in windows))
        results = run_checks(conn, run_id, scope)
        blocking = [r["name"] for r in results if r["blocking"] and not r["passed"]]
        summary = {"checks": {r["name"]: r["passed"] for r in results}, "failed_checks": blocking,
                   "warnings": [r["name"] for r in results if r["status"] == "warn"]}
        metrics.checked(len(blocking), len(summary["warnings"]))  # a failed validation reports them too
        if blocking:
            raise PipelineError(f"blocking data checks failed: {', '.join(blocking)}", "validation_failed",
                                **summary)
        scope_name = carry.get("scope") or scope_of(filters)
        described = runs.finish(conn, run_id, scope_name, windows, partial=partial, counts={"lambda_3": summary})
        if described["watermark"] is not None:  # how far the scope's data lags behind now
            metrics.fresh(scope_name, clock() - datetime.fromisoformat(described["watermark"]).timestamp())
        result = {**carry, "success": True, "partial": partial, "counts": counts, **summary,
                  "loaded": {"since": windows[0]["since"].isoformat(), "until": windows[-1]["until"].isoformat()},
                  "coverage": described, "watermark": described["watermark"]}
        log_event("step_succeeded", step="lambda_3", run_id=run_id, partial=partial, coverage=described)
        return result
    except DB_FAILURES as exc:
        return failed("lambda_3", db_error(exc), conn, run_id, carry)
    except PipelineError as exc:
        return failed("lambda_3", exc, conn, run_id, carry)
    finally:
        close_quietly(conn)
