"""Step 1: claim the run, check the input, migrate the schema, derive the window, load reference data."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone

from . import analytics, aws_secrets, roles, runs
from .config import load_config
from .coverage import chunks, iso
from .db import DB_FAILURES, close_quietly
from .errors import InputError, PagerDutyError, PipelineError
from .executions import execution_status as aws_execution_status
from .inputs import scope_of, validate_input
from .loaders import Loader
from .metrics import StepMetrics, measured
from .migrations import migrate
from .runtime import budget_for, db_error, failed, log_event, make_client, open_db, parse_envelope
from .schema import DIMENSION_ENDPOINTS, DIMENSIONS

UTC = timezone.utc
FIRST_RUN_LOOKBACK = timedelta(hours=24)  # a scope's first `{}` run loads the last day
WATERMARK_OVERLAP = timedelta(hours=1)  # a `{}` run re-reads this much before the watermark (late writes)
API_MAX_WINDOW = timedelta(days=180)  # PagerDuty's longest since..until on /incidents


def filter_params(filters: dict) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for key in ("service_ids", "team_ids", "urgencies"):
        out.extend((f"{key}[]", v) for v in filters.get(key) or [])
    return out


@measured("lambda_1", calls_api=True)
def start_run(event, context=None, *, env=None, sleep=time.sleep, now: datetime | None = None,
              execution_status=aws_execution_status, metrics: StepMetrics) -> dict:
    """Claim the run (one at a time), validate the input, migrate, load reference data, count the window."""
    conn = run_id = None
    try:
        envelope = parse_envelope(event)
        cfg = load_config(env)
        conn = open_db(cfg, "lambda_1")
        migrate(conn)
        if cfg.working_hours is not None:  # as the master, before the loader takes over
            analytics.apply_working_hours(conn, cfg.working_hours)
        roles.use_loader(conn)  # the rest as the loader steps 2 and 3 log in as: a grant it lacks shows here too
        now = (now or datetime.now(UTC)).replace(microsecond=0)
        execution_id = envelope.execution_id or f"local:{uuid.uuid4()}"
        run_id, reconciled = runs.claim_run(conn, execution_id, envelope.execution_name, envelope.input, now=now,
                                            deadline=envelope.deadline, execution_status=execution_status)
        parsed = validate_input(envelope.input, now)
        filters, scope = parsed["filters"], scope_of(parsed["filters"])
        until = parsed["until"] or now
        since = parsed["since"]
        if since is None:
            watermark = runs.get_watermark(conn, scope)
            since = (watermark - WATERMARK_OVERLAP) if watermark is not None else until - FIRST_RUN_LOOKBACK
        if since >= until:
            raise InputError("'since' must be earlier than 'until' (the derived start of the window is not)",
                             "reversed_window", key="until")
        window = {"since": iso(since), "until": iso(until)}
        token = aws_secrets.get_pagerduty_token(cfg.pagerduty_token_secret_arn)
        client = make_client(cfg, token, sleep, budget_for(cfg, context, envelope))
        metrics.count_api(client)
        try:
            loader = Loader(conn)
            metrics.count_rows(loader)
            dims, truncated = {}, []
            for kind in DIMENSIONS:
                objects, cut = client.list_all(DIMENSION_ENDPOINTS[kind][0], kind)
                dims[kind] = loader.upsert_dimension(kind, objects, complete=not cut)
                if cut:
                    truncated.append(kind)
            expected = 0
            for a, b in chunks(since, until, API_MAX_WINDOW):  # always both since and until
                _, _, total = client.page("/incidents", "incidents", [("since", iso(a)), ("until", iso(b)),
                                                                      ("time_zone", "UTC")] + filter_params(filters),
                                          offset=0, limit=1, total=True)
                if total is None:
                    raise PagerDutyError("PagerDuty did not return 'total' for total=true", "pagerduty_bad_response")
                expected += total
            counts = {"dimensions": dims, "truncated_dimensions": truncated, "api_requests": client.request_count,
                      "api_rate_limited": client.rate_limited_count, "api_retries": client.retry_count}
            runs.set_window(conn, run_id, window["since"], window["until"], filters, scope,
                            {"expected_incidents": expected, "lambda_1": counts})
        finally:
            client.close()
        result = {"success": True, "run_id": run_id, "execution_name": envelope.execution_name, "window": window,
                  "filters": filters, "scope": scope, "expected_incidents": expected,
                  "truncated_dimensions": truncated, "counts": counts, "reconciled": reconciled}
        log_event("step_succeeded", step="lambda_1", run_id=run_id, window=window, expected_incidents=expected,
                  reconciled=reconciled)
        return result
    except DB_FAILURES as exc:  # anywhere after connecting: the database is the failure
        return failed("lambda_1", db_error(exc), conn, run_id)
    except runs.RunInProgress as exc:  # the refusal is recorded on this execution's row already
        return failed("lambda_1", exc, None, exc.details.get("run_id"))
    except PipelineError as exc:
        return failed("lambda_1", exc, conn, run_id)
    finally:
        close_quietly(conn)
