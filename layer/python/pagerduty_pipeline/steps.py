"""The four workflow steps. Handlers call these with (event, context).

Every step receives the state machine envelope
``{"execution_id", "execution_name", "state_name", "input"}`` and returns a JSON object with
``success`` (bool) and ``run_id``; failures carry ``error`` (short code) and ``message``.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

from . import aws_secrets, runs
from .checks import run_checks, scope_sql
from .client import MAX_LIMIT, OFFSET_CAP, PagerDutyClient
from .config import Config, load_config
from .db import DB_FAILURES, close_quietly, connect, describe_db_error
from .errors import DatabaseError, InputError, PagerDutyError, PipelineError
from .inputs import MAX_WINDOW, iso, scope_of, validate_input
from .loaders import Loader, _id, parse_ts
from .migrations import migrate

log = logging.getLogger("pagerduty_pipeline")
UTC = timezone.utc

FIRST_RUN_LOOKBACK = timedelta(hours=24)
WATERMARK_OVERLAP = timedelta(hours=1)
SPLIT_TARGET = 8_000  # aim sub-windows at this many rows, leaving room under the 10,000 cap
DETAIL_BATCH = 25
WRITE_BATCH_ITEMS = 1_000  # API items per transaction (10 pages)
INCIDENT_INCLUDES = ["assignees", "services", "teams", "priorities", "escalation_policies",
                     "first_trigger_log_entries"]
DIMENSION_ENDPOINTS = [("teams", "/teams", "teams"), ("users", "/users", "users"),
                       ("escalation_policies", "/escalation_policies", "escalation_policies"),
                       ("priorities", "/priorities", "priorities"), ("services", "/services", "services")]
CARRY_KEYS = ("run_id", "execution_name", "window", "filters", "scope", "expected_incidents")


# ---------------------------------------------------------------------------------------------
# plumbing
# ---------------------------------------------------------------------------------------------
def _log(event: str, **fields) -> None:
    log.info(json.dumps({"event": event, **fields}, default=str))


def _envelope(event) -> tuple[dict, object]:
    if not isinstance(event, dict) or "input" not in event:
        raise InputError("event must be the state machine envelope {execution_id, execution_name, state_name, "
                         "input}", "invalid_envelope")
    return _meta(event), event["input"]


def _meta(event: dict) -> dict:
    return {k: event.get(k) for k in ("execution_id", "execution_name", "state_name")}


def remaining_ms(context) -> float:
    fn = getattr(context, "get_remaining_time_in_millis", None) if context is not None else None
    return float(fn()) if callable(fn) else math.inf


def _db_error(exc: BaseException) -> DatabaseError:
    return DatabaseError(f"database error: {describe_db_error(exc)}", "db_error")


def make_client(cfg: Config, token: str, sleep=time.sleep) -> PagerDutyClient:
    return PagerDutyClient(token, cfg.pagerduty_api_url, rate_per_minute=cfg.rate_limit_per_minute, sleep=sleep)


def _open_db(cfg: Config, step: str):
    user, password = aws_secrets.get_db_credentials(cfg.db_secret_arn)
    return connect(cfg, user, password, application_name=f"pagerduty-pipeline:{step}")


def _filter_params(filters: dict) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for key in ("service_ids", "team_ids", "urgencies"):
        out.extend((f"{key}[]", v) for v in filters.get(key) or [])
    return out


def _matches(inc: dict, filters: dict) -> bool:
    if filters.get("service_ids") and _id(inc.get("service")) not in filters["service_ids"]:
        return False
    if filters.get("urgencies") and inc.get("urgency") not in filters["urgencies"]:
        return False
    if filters.get("team_ids"):
        teams = {_id(t) for t in inc.get("teams") or []}
        if not teams & set(filters["team_ids"]):
            return False
    return True


def _fail(step: str, exc: PipelineError, conn=None, run_id=None, extra: dict | None = None) -> dict:
    result = dict(extra or {})
    result.update(exc.to_result())
    result["run_id"] = run_id
    if conn is not None and run_id is not None:
        try:
            runs.mark_failed(conn, run_id, step, exc.code, exc.message)
        except Exception:  # noqa: BLE001 - the DB itself may be the failure; error handler retries
            pass
    _log("step_failed", step=step, run_id=run_id, error=exc.code, message=exc.message)
    return result


# ---------------------------------------------------------------------------------------------
# step 1
# ---------------------------------------------------------------------------------------------
def start_run(event, context=None, *, env=None, sleep=time.sleep, now: datetime | None = None) -> dict:
    """Validate input, migrate, open the run, load reference data, count the window's incidents."""
    conn = run_id = None
    try:
        meta, raw_input = _envelope(event)
        cfg = load_config(env)
        conn = _open_db(cfg, "lambda_1")
        migrate(conn)
        execution_id = meta.get("execution_id") or f"local:{uuid.uuid4()}"
        run_id = runs.open_run(conn, execution_id, meta.get("execution_name"), raw_input)
        now = (now or datetime.now(UTC)).replace(microsecond=0)
        parsed = validate_input(raw_input, now)
        filters, scope = parsed["filters"], scope_of(parsed["filters"])
        until = parsed["until"] or now
        since = parsed["since"]
        clamped = False
        if since is None:
            wm = runs.get_watermark(conn, scope)
            since = (wm - WATERMARK_OVERLAP) if wm is not None else until - FIRST_RUN_LOOKBACK
            if until - since > MAX_WINDOW:
                since, clamped = until - MAX_WINDOW, True
        if since >= until:
            raise InputError("'since' must be earlier than 'until' (the derived start of the window is not)",
                             "reversed_window", key="until")
        window = {"since": iso(since), "until": iso(until)}
        token = aws_secrets.get_pagerduty_token(cfg.pagerduty_token_secret_arn)
        client = make_client(cfg, token, sleep)
        try:
            loader = Loader(conn)
            dims = {}
            for kind, path, key in DIMENSION_ENDPOINTS:
                dims[kind] = loader.upsert_dimension(kind, list(client.iter_all(path, key)))
            _, _, total = client.page("/incidents", "incidents",
                                      [("since", window["since"]), ("until", window["until"]), ("time_zone", "UTC")]
                                      + _filter_params(filters), offset=0, limit=1, total=True)
            if total is None:
                raise PagerDutyError("PagerDuty did not return 'total' for total=true", "pagerduty_bad_response")
            counts = {"dimensions": dims, "api_requests": client.request_count}
            runs.set_window(conn, run_id, window["since"], window["until"], filters, scope,
                            {"expected_incidents": total, "lambda_1": counts})
        finally:
            client.close()
        result = {"success": True, "run_id": run_id, "execution_name": meta.get("execution_name"),
                  "window": window, "filters": filters, "scope": scope, "expected_incidents": total,
                  "counts": counts, "window_clamped": clamped}
        _log("step_succeeded", step="lambda_1", run_id=run_id, window=window, expected_incidents=total)
        return result
    except DB_FAILURES as exc:  # anywhere after connecting: the database is the failure
        return _fail("lambda_1", _db_error(exc), conn, run_id)
    except PipelineError as exc:
        return _fail("lambda_1", exc, conn, run_id)
    finally:
        close_quietly(conn)


# ---------------------------------------------------------------------------------------------
# step 2
# ---------------------------------------------------------------------------------------------
def _phase_time(counts: dict, key: str, t0: float) -> float:
    now = time.perf_counter()
    counts[key] = int(counts.get(key, 0)) + int((now - t0) * 1000)
    return now


def _drain(future) -> None:
    """Wait for an unneeded prefetch (the client must be idle before anything else uses it)."""
    try:
        future.result()
    except Exception:  # noqa: BLE001 - its page is not needed
        pass


def _newer(updated_at: str | None, stored: datetime | None) -> bool:
    """Whether an incident's `updated_at` should replace the stored one (unknown times always do)."""
    return stored is None or updated_at is None or parse_ts(updated_at) > stored


def _split(window: list[str], parts: int) -> list[list[str]]:
    s = int(datetime.fromisoformat(window[0]).timestamp())
    u = int(datetime.fromisoformat(window[1]).timestamp())
    parts = max(2, min(parts, u - s))
    if u - s < 2:
        raise PagerDutyError(f"more than {OFFSET_CAP} items inside one second at {window[0]}; cannot split",
                             "pagerduty_offset_cap")
    edges = [s + (u - s) * k // parts for k in range(parts + 1)]
    fmt = lambda t: iso(datetime.fromtimestamp(t, UTC))  # noqa: E731
    return [[fmt(edges[k]), fmt(edges[k + 1])] for k in range(parts) if edges[k] < edges[k + 1]]


class _Loader2:
    """State of one lambda_2 invocation."""

    def __init__(self, cfg, conn, client, carry, cursor, counts, context):
        self.cfg, self.conn, self.client, self.carry = cfg, conn, client, carry
        self.cursor, self.counts, self.context = cursor, counts, context
        self.filters = carry.get("filters") or {}
        self.loader = Loader(conn)

    def add(self, key: str, n: int) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def out_of_time(self) -> bool:
        return remaining_ms(self.context) < self.cfg.time_margin_ms

    def paged_phase(self, path: str, key: str, base_params: list, write) -> bool:
        """Walk the cursor's sub-windows with classic paging; split a window whose total would pass
        the offset cap. Three stages overlap: a helper thread fetches and decodes the next page
        (one request in flight at most, as PagerDuty advises), this thread collects pages into
        batches of ``WRITE_BATCH_ITEMS`` items, and a writer thread writes each batch in one
        transaction (PostgreSQL's cost is mostly per statement) on the only connection. The cursor
        advances only past committed batches. Returns False when stopped for time."""
        c = self.cursor
        windows, offset = list(c["windows"]), int(c.get("offset", 0))  # position after the collected pages
        collected: list[dict] = []
        totals = 0
        writing: list = []  # futures of submitted batches, oldest first

        def fetch(window, at):
            params = [("since", window[0]), ("until", window[1]), ("time_zone", "UTC")] + base_params
            return self.client.page(path, key, params, at, MAX_LIMIT, total=at == 0)

        failed: list[BaseException] = []

        def commit(items: list[dict], position: tuple[list, int], api_total: int) -> None:
            if failed:  # an earlier batch failed: never commit past it
                raise PipelineError("an earlier batch failed", "db_error")
            try:
                if items:
                    write(items)
            except BaseException as exc:
                failed.append(exc)
                raise
            if api_total:
                self.add(f"{key}_api_total", api_total)
            c["windows"], c["offset"] = position

        def submit() -> None:
            nonlocal collected, totals
            while len(writing) >= 2:  # bound memory: one batch writing, one waiting
                writing.pop(0).result()
            writing.append(writer.submit(commit, collected, (list(windows), offset), totals))
            collected, totals = [], 0

        fetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="writer")
        ahead = None  # ((since, until, offset), future)
        stopped = False
        try:
            while windows:
                if self.out_of_time():
                    stopped = True
                    break
                if writing and writing[0].done():
                    writing.pop(0).result()  # surface a failed write now
                window = windows[0]
                if ahead is not None and ahead[0] == (window[0], window[1], offset):
                    items, more, total = ahead[1].result()
                else:
                    if ahead is not None:
                        _drain(ahead[1])
                    items, more, total = fetch(window, offset)
                ahead = None
                if offset == 0 and total is not None and total > OFFSET_CAP:
                    pieces = _split(window, math.ceil(total / SPLIT_TARGET))
                    _log("window_split", path=path, window=window, total=total, pieces=len(pieces))
                    windows = pieces + windows[1:]
                    self.add(f"{key}_window_splits", 1)
                    continue
                if offset == 0 and total is not None:
                    totals += total
                # where the walk goes after this page
                if more and items:
                    offset += len(items)
                    if offset + MAX_LIMIT > OFFSET_CAP:  # grew past the cap while paging: split the rest
                        windows, offset = _split(window, 2) + windows[1:], 0
                else:
                    windows, offset = windows[1:], 0
                if windows and remaining_ms(self.context) - self.cfg.time_margin_ms > 0:
                    nxt = windows[0]
                    ahead = ((nxt[0], nxt[1], offset), fetcher.submit(fetch, nxt, offset))
                collected.extend(items)
                if len(collected) >= WRITE_BATCH_ITEMS:
                    submit()
            submit()
            while writing:
                writing.pop(0).result()
            return not stopped
        finally:
            if ahead is not None:
                _drain(ahead[1])
            fetcher.shutdown(wait=True)
            writer.shutdown(wait=True, cancel_futures=True)  # after a failure, later batches never run

    def incident_page(self, items: list[dict]) -> None:
        entries = []
        for inc in items:
            fte = inc.get("first_trigger_log_entry")
            if isinstance(fte, dict) and fte.get("created_at") and fte.get("id"):
                entries.append((fte, inc["id"]))
        res = self.loader.write_batch(items, entries)
        self.add("incidents_fetched", len(items))
        self.add("incidents_written", res["incidents_written"])
        self.add("trigger_log_entries", len(entries))

    def log_page(self, items: list[dict]) -> None:
        embedded: dict[str, dict] = {}
        kept: list[tuple[dict, str]] = []
        for entry in items:
            inc = entry.get("incident")
            if not isinstance(inc, dict) or not inc.get("id"):
                self.add("log_entries_without_incident", 1)
                continue
            full = bool(inc.get("created_at"))
            if full and not _matches(inc, self.filters):
                continue
            if full:
                prev = embedded.get(inc["id"])
                if prev is None or (inc.get("updated_at") or "") > (prev.get("updated_at") or ""):
                    embedded[inc["id"]] = inc
            kept.append((entry, inc["id"]))
        seen = self.loader.updated_at  # what this invocation wrote: no need to ask the database
        have = {**self.loader.stored_updated_at([i for i in embedded if i not in seen]), **seen}
        newer = [inc for inc_id, inc in embedded.items()
                 if inc_id not in have or _newer(inc.get("updated_at"), have[inc_id])]

        def known(inc_id: str) -> bool:
            return inc_id in embedded or inc_id in have

        dropped = [e for e in kept if not known(e[1])]
        if dropped:  # reference-only incident we never saw: cannot satisfy the foreign key
            self.add("log_entries_skipped", len(dropped))
            kept = [e for e in kept if known(e[1])]
        res = self.loader.write_batch(newer, kept)
        self.add("log_entries_fetched", len(items))
        self.add("log_entries_api", len(kept))
        self.add("incidents_updated_from_log_entries", res["incidents_written"])

    def details(self) -> bool:
        c = self.cursor
        where, params = scope_sql(self.filters)
        window = self.carry["window"]
        rows = self.conn.run(
            f"""SELECT id, need_notes, need_alerts FROM (
                  SELECT i.id,
                         (SELECT count(*) FROM pagerduty.log_entries l WHERE l.incident_id = i.id
                             AND l.type = 'annotate_log_entry')
                           > (SELECT count(*) FROM pagerduty.notes n WHERE n.incident_id = i.id) AS need_notes,
                         coalesce((i.raw->'alert_counts'->>'all')::int, 0) <> stored.alerts
                         OR coalesce((i.raw->'alert_counts'->>'resolved')::int, 0) <> stored.resolved AS need_alerts
                    FROM pagerduty.incidents i
                    CROSS JOIN LATERAL (SELECT count(*) AS alerts, count(*) FILTER (WHERE a.status = 'resolved')
                                          AS resolved FROM pagerduty.alerts a WHERE a.incident_id = i.id) stored
                   WHERE i.id > :after AND (({where}) OR EXISTS (
                         SELECT 1 FROM pagerduty.log_entries l WHERE l.incident_id = i.id
                            AND l.created_at >= CAST(:since AS timestamptz)
                            AND l.created_at < CAST(:until AS timestamptz)))) q
                WHERE need_notes OR need_alerts ORDER BY id""",
            after=c.get("after_id") or "", since=window["since"], until=window["until"], **params)
        for start in range(0, len(rows), DETAIL_BATCH):
            if self.out_of_time():
                return False
            batch = rows[start:start + DETAIL_BATCH]
            notes: dict[str, list] = {}
            alerts: dict[str, list] = {}
            for inc_id, need_notes, need_alerts in batch:
                try:
                    if need_notes:
                        notes[inc_id] = self.client.get(f"/incidents/{inc_id}/notes").get("notes") or []
                    if need_alerts:
                        alerts[inc_id] = list(self.client.iter_all(f"/incidents/{inc_id}/alerts", "alerts"))
                except PagerDutyError as exc:
                    if exc.status != 404:
                        raise
                    self.add("details_not_found", 1)
            res = self.loader.write_details(notes, alerts)
            self.add("notes", res["notes"])
            self.add("alerts", res["alerts"])
            self.add("incidents_with_details_fetched", len(batch))
            c["after_id"] = batch[-1][0]
        return True


def load_incidents(event, context=None, *, env=None, sleep=time.sleep) -> dict:
    """Fetch and upsert every incident (+ log entries, notes, alerts) of the window; resumable."""
    conn = client = None
    carry: dict = {}
    state = None
    try:
        meta, inp = _envelope(event)
        if not isinstance(inp, dict) or not isinstance(inp.get("run_id"), int) or \
                not isinstance(inp.get("window"), dict) or not isinstance(inp.get("filters", {}), dict):
            raise InputError("lambda_2 input must be lambda_1's result (run_id, window, filters)", "invalid_input")
        carry = {k: inp.get(k) for k in CARRY_KEYS}
        run_id = carry["run_id"]
        window = carry["window"]
        # a copy: the walk replaces the cursor's values (never mutates them), so the caller's object stays as it was
        cursor = dict(inp["cursor"]) if isinstance(inp.get("cursor"), dict) else None
        cursor = cursor or {"phase": "incidents", "windows": [[window["since"], window["until"]]], "offset": 0}
        if cursor.get("phase") not in ("incidents", "log_entries", "details") or \
                not isinstance(cursor.get("windows", []), list):
            raise InputError("lambda_2 input has an invalid 'cursor' (not one lambda_2 returned)", "invalid_input",
                             key="cursor")
        counts = {k: v for k, v in (inp.get("counts") or {}).items() if isinstance(v, int)} \
            if inp.get("cursor") else {}
        invocations = int(inp.get("invocations") or 0) + 1
        cfg = load_config(env)
        conn = _open_db(cfg, "lambda_2")
        token = aws_secrets.get_pagerduty_token(cfg.pagerduty_token_secret_arn)
        client = make_client(cfg, token, sleep)
        requests_before = int(counts.get("api_requests", 0))
        cursor_before = dict(cursor)
        state = _Loader2(cfg, conn, client, carry, cursor, counts, context)
        runs.set_step(conn, run_id, "lambda_2")
        filters = state.filters
        done = True
        t0 = time.perf_counter()
        if cursor["phase"] == "incidents":
            done = state.paged_phase("/incidents", "incidents",
                                     [("sort_by", "incident_number:asc")]
                                     + [("include[]", i) for i in INCIDENT_INCLUDES] + _filter_params(filters),
                                     state.incident_page)
            t0 = _phase_time(counts, "incidents_ms", t0)
            if done:
                cursor.update(phase="log_entries", windows=[[window["since"], window["until"]]], offset=0)
        if done and cursor["phase"] == "log_entries":
            done = state.paged_phase("/log_entries", "log_entries", [("include[]", "incidents")], state.log_page)
            t0 = _phase_time(counts, "log_entries_ms", t0)
            if done:
                cursor.update(phase="details", windows=[], offset=0, after_id="")
        if done and cursor["phase"] == "details":
            done = state.details()
            _phase_time(counts, "details_ms", t0)
        if not done and cursor == cursor_before:
            # the workflow would call step 2 again and again until its own timeout
            raise PipelineError(f"lambda_2 stopped for time before loading anything: "
                                f"{remaining_ms(context):.0f} ms left is within PIPELINE_TIME_MARGIN_MS "
                                f"({cfg.time_margin_ms} ms); raise the function timeout or lower the margin",
                                "no_progress")
        counts["db_ms"] = int(counts.get("db_ms", 0)) + int(state.loader.db_seconds * 1000)
        counts["rows_written"] = int(counts.get("rows_written", 0)) + state.loader.rows_written
        counts["api_requests"] = requests_before + client.request_count
        counts["api_retries"] = int(counts.get("api_retries", 0)) + client.retry_count
        runs.set_step(conn, run_id, "lambda_2", {"lambda_2": counts})
        result = {**carry, "success": True, "complete": done, "cursor": None if done else cursor,
                  "counts": counts, "invocations": invocations}
        _log("step_progress", step="lambda_2", run_id=run_id, complete=done, counts=counts)
        return result
    except (*DB_FAILURES, PipelineError) as exc:
        extra = dict(carry)
        if state is not None:  # where the load got to: the committed cursor and the counts so far
            extra.update(cursor=state.cursor, counts=state.counts)
        err = exc if isinstance(exc, PipelineError) else _db_error(exc)
        return _fail("lambda_2", err, conn, carry.get("run_id"), extra)
    finally:
        if client is not None:
            client.close()
        close_quietly(conn)


# ---------------------------------------------------------------------------------------------
# step 3
# ---------------------------------------------------------------------------------------------
def validate_run(event, context=None, *, env=None) -> dict:
    conn = run_id = None
    carry: dict = {}
    try:
        meta, inp = _envelope(event)
        if not isinstance(inp, dict) or not isinstance(inp.get("run_id"), int) or \
                not isinstance(inp.get("window"), dict):
            raise InputError("lambda_3 input must be lambda_2's final result (run_id, window, counts)",
                             "invalid_input")
        carry = {k: inp.get(k) for k in CARRY_KEYS}
        run_id = carry["run_id"]
        cfg = load_config(env, need_pagerduty=False)
        conn = _open_db(cfg, "lambda_3")
        if inp.get("complete") is not True:
            raise PipelineError("lambda_3 needs a complete load (lambda_2 returned complete: false)",
                                "incomplete_load")
        counts = inp.get("counts") or {}
        runs.set_step(conn, run_id, "lambda_3")
        results = run_checks(conn, run_id, carry["window"]["since"], carry["window"]["until"],
                             carry.get("filters") or {}, carry.get("expected_incidents"),
                             counts.get("log_entries_api"))
        failed = [r["name"] for r in results if r["blocking"] and not r["passed"]]
        summary = {"checks": {r["name"]: r["passed"] for r in results}, "failed_checks": failed}
        if failed:
            raise PipelineError(f"blocking data checks failed: {', '.join(failed)}", "validation_failed",
                                **summary)
        watermark = runs.succeed(conn, run_id, carry.get("scope") or scope_of(carry.get("filters") or {}),
                                 carry["window"]["until"], {"lambda_3": summary})
        result = {**carry, "success": True, "counts": counts, **summary,
                  "watermark": iso(watermark)}
        _log("step_succeeded", step="lambda_3", run_id=run_id, watermark=result["watermark"])
        return result
    except DB_FAILURES as exc:
        return _fail("lambda_3", _db_error(exc), conn, run_id, carry)
    except PipelineError as exc:
        return _fail("lambda_3", exc, conn, run_id, carry)
    finally:
        close_quietly(conn)


# ---------------------------------------------------------------------------------------------
# error handler
# ---------------------------------------------------------------------------------------------
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
    meta = _meta(event) if isinstance(event, dict) else {}
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
        conn = _open_db(cfg, "lambda_error_handler")
        if run_id is None and meta.get("execution_id"):
            run_id = runs.find_run(conn, meta["execution_id"])
        if run_id is not None:
            recorded = runs.mark_failed(conn, run_id, failed_step, error, message)
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
