"""Run bookkeeping: the ``pipeline_runs`` row of each execution, the one-run-at-a-time claim, coverage and the
watermark.

One run at a time: every run upserts the same reference tables and spends the same PagerDuty key (960
requests a minute for everyone using it), so any two scopes overlap and a database serves one run at a time.
The claim is the run's ``running`` status (a partial unique index allows one), taken under a transaction-level
advisory lock. A run whose execution died without a Catch (execution timeout, StopExecution, a crash) would
hold it forever: the next start reconciles it, from the execution's status where it can be read
(``states:DescribeExecution``), else from the run's deadline (execution start + state machine timeout), past
which Step Functions has ended the execution for certain.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Callable

from . import coverage
from .db import transaction
from .errors import PipelineError

RUN_LOCK_KEY = 7_310_452_981_223_002  # pg_advisory_xact_lock key serialising run claims
DEFAULT_EXECUTION_TIMEOUT = timedelta(minutes=45)  # deadline of a run whose envelope gave none
# Step Functions execution status -> the status a reconciled run gets
ENDED_EXECUTION = {"TIMED_OUT": "timed_out", "ABORTED": "aborted", "FAILED": "failed", "SUCCEEDED": "failed"}
ENDED_STATUSES = tuple(sorted(set(ENDED_EXECUTION.values())))  # what record_end may set
ExecutionStatus = Callable[[str], str | None]  # execution id -> RUNNING/SUCCEEDED/... or None when unknown


class RunInProgress(PipelineError):
    code = "run_in_progress"


def claim_run(conn, execution_id: str, execution_name: str | None, raw_input, *, now: datetime,
              deadline: datetime | None, execution_status: ExecutionStatus) -> tuple[int, list[dict]]:
    """Create (or, on a Step Functions retry of step 1, reopen) this execution's run as the running one.

    Returns (run_id, runs reconciled). Raises RunInProgress, naming the holder, when another execution's run
    is still running; this execution's row then records the refusal (status failed) and nothing else is
    written."""
    deadline = deadline or now + DEFAULT_EXECUTION_TIMEOUT
    with transaction(conn):
        conn.run("SELECT pg_advisory_xact_lock(:k)", k=RUN_LOCK_KEY)
        reconciled, holder = [], None
        for run_id, other, other_deadline in conn.run(
                "SELECT run_id, execution_id, deadline FROM pagerduty.pipeline_runs "
                "WHERE status = 'running' AND execution_id <> :e", e=execution_id):
            status = execution_status(other)
            if status == "RUNNING" or (status is None and (other_deadline is None or other_deadline > now)):
                holder = other
                continue
            ended = ENDED_EXECUTION.get(status or "", "timed_out")
            how = f"its execution is {status}" if status else f"its deadline {coverage.iso(other_deadline)} passed"
            conn.run("""UPDATE pagerduty.pipeline_runs SET status = :s, error = 'reconciled', message = :m,
                               finished_at = now(), updated_at = now() WHERE run_id = :r""",
                     s=ended, m=f"marked {ended} by the next start: {how}", r=run_id)
            reconciled.append({"run_id": run_id, "execution_id": other, "status": ended})
        status = "failed" if holder else "running"
        rows = conn.run(
            """INSERT INTO pagerduty.pipeline_runs (execution_id, execution_name, status, step, input, deadline,
                                                    error, message, finished_at)
               VALUES (:eid, :name, :status, 'lambda_1', CAST(:input AS jsonb), :deadline, :error, :message,
                       CASE WHEN :status = 'failed' THEN now() END)
               ON CONFLICT (execution_id) DO UPDATE SET status = EXCLUDED.status, step = 'lambda_1',
                    error = EXCLUDED.error, message = EXCLUDED.message, finished_at = EXCLUDED.finished_at,
                    updated_at = now(), input = EXCLUDED.input, deadline = EXCLUDED.deadline
               RETURNING run_id""",
            eid=execution_id, name=execution_name, status=status, input=json.dumps(raw_input), deadline=deadline,
            error="run_in_progress" if holder else None,
            message=f"another run is in progress: execution {holder}" if holder else None)
    run_id = rows[0][0]
    if holder:
        raise RunInProgress(f"another run is in progress: execution {holder}; this one loaded nothing",
                            holder_execution=holder, run_id=run_id)
    return run_id, reconciled


def set_window(conn, run_id: int, since: str, until: str, filters: dict, scope: str, counts: dict) -> None:
    conn.run("""UPDATE pagerduty.pipeline_runs SET window_since = :s, window_until = :u, filters = CAST(:f AS jsonb),
                       scope = :scope, counts = counts || CAST(:c AS jsonb), updated_at = now()
                 WHERE run_id = :r""",
             s=since, u=until, f=json.dumps(filters), scope=scope, c=json.dumps(counts), r=run_id)


def set_step(conn, run_id: int, step: str, counts: dict | None = None) -> None:
    """Record the step (and counts) on a run that still holds the claim; a run reconciled meanwhile (its
    execution was declared dead) must not go on writing."""
    rows = conn.run("""UPDATE pagerduty.pipeline_runs SET step = :step, counts = counts || CAST(:c AS jsonb),
                              updated_at = now() WHERE run_id = :r AND status = 'running' RETURNING run_id""",
                    step=step, c=json.dumps(counts or {}), r=run_id)
    if not rows:
        raise PipelineError(f"run {run_id} is no longer running (reconciled or finished); {step} stops",
                            "run_not_running")


def record_failure(conn, execution_id: str | None, run_id: int | None, step: str | None, error: str,
                   message: str) -> tuple[int | None, bool]:
    """Record a failure on the run ``run_id``, else on the run of ``execution_id``; returns (the run's id or None,
    whether it was marked failed). A run reconciled as timed out or aborted keeps that status: the failure of its
    late steps (run_not_running) says nothing new. Coverage a run recorded before its execution failed stays: it
    was validated.

    The rule lives in one place, the SECURITY DEFINER function ``pagerduty.record_run_failure`` (migration 4): the
    error handler's role may call it and nothing else, the loader (steps 1-3) calls it too."""
    rows = conn.run("""SELECT run_id, recorded FROM pagerduty.record_run_failure(
                           CAST(:e AS text), CAST(:r AS bigint), CAST(:step AS text), CAST(:err AS text),
                           CAST(:m AS text))""",
                    e=execution_id, r=run_id, step=step, err=error, m=message)
    found, recorded = rows[0]
    return found, bool(recorded)


def record_end(conn, execution_id: str, status: str, error: str, message: str) -> tuple[int | None, bool, str | None]:
    """Record that ``execution_id`` ended ``status`` (failed, timed_out or aborted) without a Catch having seen
    it: only a run still ``running`` takes it. Returns (the run's id or None, whether it changed, the status it has
    now or None). The rule lives in ``pagerduty.record_run_ended`` (migration 5), the one more thing the error
    handler's role may call."""
    if status not in ENDED_STATUSES:
        raise ValueError(f"an ended run's status is one of {', '.join(ENDED_STATUSES)}, not {status!r}")
    rows = conn.run("""SELECT run_id, recorded, run_status FROM pagerduty.record_run_ended(
                           CAST(:e AS text), CAST(:s AS text), CAST(:err AS text), CAST(:m AS text))""",
                    e=execution_id, s=status, err=error, m=message)
    found, recorded, now = rows[0]
    return found, bool(recorded), now


def mark_failed(conn, run_id: int, step: str | None, error: str, message: str) -> bool:
    """Record a failure on run ``run_id`` (see record_failure); whether the run was marked failed."""
    return record_failure(conn, None, run_id, step, error, message)[1]


def find_run(conn, execution_id: str) -> int | None:
    rows = conn.run("SELECT run_id FROM pagerduty.pipeline_runs WHERE execution_id = :e", e=execution_id)
    return rows[0][0] if rows else None


def get_watermark(conn, scope: str) -> datetime | None:
    rows = conn.run("SELECT watermark FROM pagerduty.watermarks WHERE scope = :s", s=scope)
    return rows[0][0] if rows else None


def record_window(conn, run_id: int, since: str, until: str, totals: dict) -> None:
    """Step 2 loaded [since, until) completely; ``totals`` are the API's counts for it (for step 3)."""
    conn.run("""INSERT INTO pagerduty.run_windows (run_id, since, until, incidents_total, log_entries_total,
                                                   log_entries_filtered_out)
                VALUES (:r, CAST(:s AS timestamptz), CAST(:u AS timestamptz), :i, :l, :f)
                ON CONFLICT (run_id, since) DO UPDATE SET until = EXCLUDED.until,
                     incidents_total = EXCLUDED.incidents_total, log_entries_total = EXCLUDED.log_entries_total,
                     log_entries_filtered_out = EXCLUDED.log_entries_filtered_out, loaded_at = now()""",
             r=run_id, s=since, u=until, i=totals.get("incidents", 0), l=totals.get("log_entries", 0),
             f=totals.get("filtered_out", 0))


def loaded_windows(conn, run_id: int) -> list[dict]:
    rows = conn.run("""SELECT since, until, incidents_total, log_entries_total, log_entries_filtered_out
                         FROM pagerduty.run_windows WHERE run_id = :r ORDER BY since""", r=run_id)
    return [{"since": r[0], "until": r[1], "incidents": r[2], "log_entries": r[3], "filtered_out": r[4]}
            for r in rows]


def scope_coverage(conn, scope: str) -> list[coverage.Interval]:
    return coverage.merge([(r[0], r[1]) for r in conn.run(
        "SELECT since, until FROM pagerduty.coverage WHERE scope = :s", s=scope)])


def finish(conn, run_id: int, scope: str, windows: list[dict], *, partial: bool, counts: dict) -> dict:
    """One transaction: the validated windows become coverage, the watermark moves to the end of the contiguous
    coverage that holds it, the run ends succeeded (or partial). Returns the scope's coverage description."""
    with transaction(conn):
        conn.run("SELECT pg_advisory_xact_lock(:k)", k=RUN_LOCK_KEY)
        for w in windows:
            conn.run("""INSERT INTO pagerduty.coverage (scope, since, until, run_id) VALUES (:s, :a, :b, :r)
                        ON CONFLICT (scope, since, until) DO UPDATE SET run_id = EXCLUDED.run_id,
                             recorded_at = now()""", s=scope, a=w["since"], b=w["until"], r=run_id)
        merged = scope_coverage(conn, scope)
        old = get_watermark(conn, scope)
        anchor = old if old is not None else (windows[0]["since"] if windows else None)
        watermark = coverage.contiguous_end(merged, anchor) or old
        if watermark is not None and watermark != old:
            conn.run("""INSERT INTO pagerduty.watermarks AS w (scope, watermark, run_id) VALUES (:s, :w, :r)
                        ON CONFLICT (scope) DO UPDATE SET watermark = EXCLUDED.watermark, run_id = EXCLUDED.run_id,
                             updated_at = now()""", s=scope, w=watermark, r=run_id)
        described = coverage.describe(scope, merged, watermark)
        conn.run("""UPDATE pagerduty.pipeline_runs SET status = :st, step = 'lambda_3', error = NULL, message = NULL,
                           counts = counts || CAST(:c AS jsonb), coverage = CAST(:cov AS jsonb), finished_at = now(),
                           updated_at = now() WHERE run_id = :r""",
                 st="partial" if partial else "succeeded", c=json.dumps(counts), cov=json.dumps(described), r=run_id)
    return described
