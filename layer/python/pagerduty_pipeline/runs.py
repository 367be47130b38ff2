"""Run bookkeeping: pipeline_runs rows, watermarks."""

from __future__ import annotations

import json
from datetime import datetime

from .db import transaction


def open_run(conn, execution_id: str, execution_name: str | None, raw_input) -> int:
    """Create (or, on a Step Functions retry of step 1, reopen) the run of this execution."""
    rows = conn.run(
        """INSERT INTO pagerduty.pipeline_runs (execution_id, execution_name, status, step, input)
           VALUES (:eid, :name, 'running', 'lambda_1', CAST(:input AS jsonb))
           ON CONFLICT (execution_id) DO UPDATE SET status = 'running', step = 'lambda_1', error = NULL,
                message = NULL, finished_at = NULL, updated_at = now(), input = EXCLUDED.input
           RETURNING run_id""",
        eid=execution_id, name=execution_name, input=json.dumps(raw_input))
    return rows[0][0]


def set_window(conn, run_id: int, since: str, until: str, filters: dict, scope: str, counts: dict) -> None:
    conn.run("""UPDATE pagerduty.pipeline_runs SET window_since = :s, window_until = :u, filters = CAST(:f AS jsonb),
                       scope = :scope, counts = counts || CAST(:c AS jsonb), updated_at = now()
                 WHERE run_id = :r""",
             s=since, u=until, f=json.dumps(filters), scope=scope, c=json.dumps(counts), r=run_id)


def set_step(conn, run_id: int, step: str, counts: dict | None = None) -> None:
    conn.run("""UPDATE pagerduty.pipeline_runs SET step = :step, counts = counts || CAST(:c AS jsonb),
                       updated_at = now() WHERE run_id = :r""",
             step=step, c=json.dumps(counts or {}), r=run_id)


def mark_failed(conn, run_id: int, step: str | None, error: str, message: str) -> bool:
    rows = conn.run("""UPDATE pagerduty.pipeline_runs SET status = 'failed', step = coalesce(:step, step),
                              error = :e, message = :m, finished_at = now(), updated_at = now()
                        WHERE run_id = :r RETURNING run_id""",
                    step=step, e=error, m=message, r=run_id)
    return bool(rows)


def find_run(conn, execution_id: str) -> int | None:
    rows = conn.run("SELECT run_id FROM pagerduty.pipeline_runs WHERE execution_id = :e", e=execution_id)
    return rows[0][0] if rows else None


def get_watermark(conn, scope: str) -> datetime | None:
    rows = conn.run("SELECT watermark FROM pagerduty.watermarks WHERE scope = :s", s=scope)
    return rows[0][0] if rows else None


def succeed(conn, run_id: int, scope: str, until: str, counts: dict) -> datetime:
    """Mark the run succeeded and advance the scope's watermark (never backwards). Returns it."""
    with transaction(conn):
        conn.run("""UPDATE pagerduty.pipeline_runs SET status = 'succeeded', step = 'lambda_3', error = NULL,
                           message = NULL, counts = counts || CAST(:c AS jsonb), finished_at = now(),
                           updated_at = now() WHERE run_id = :r""", c=json.dumps(counts), r=run_id)
        rows = conn.run("""INSERT INTO pagerduty.watermarks AS w (scope, watermark, run_id)
                           VALUES (:s, CAST(:u AS timestamptz), :r)
                           ON CONFLICT (scope) DO UPDATE SET
                               run_id = CASE WHEN EXCLUDED.watermark > w.watermark THEN EXCLUDED.run_id ELSE w.run_id END,
                               watermark = GREATEST(w.watermark, EXCLUDED.watermark), updated_at = now()
                           RETURNING watermark""", s=scope, u=until, r=run_id)
    return rows[0][0]
