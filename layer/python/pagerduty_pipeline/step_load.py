"""Step 2: load the window chunk by chunk (incidents, then log entries, then notes, alerts and references known
only by id), resumable from a cursor that moves only past committed work.

Each chunk (``PIPELINE_CHUNK_HOURS``) that is loaded completely is recorded with the API's totals for it
(``run_windows``); step 3 checks those chunks and turns them into coverage. When the Lambda's time runs short
the step returns ``complete: false`` and its cursor (the state machine calls it again); when the execution's
deadline comes near it returns ``complete: true, partial: true``, so the run ends cleanly with the chunks it
loaded and the next run continues from there.
"""

from __future__ import annotations

import copy
import time
from datetime import datetime, timedelta

from . import aws_secrets, runs
from .checks import filter_sql, touched_in_scope
from .config import load_config
from .coverage import chunks, iso
from .db import DB_FAILURES, close_quietly
from .errors import InputError, OutOfTime, PagerDutyError, PipelineError
from .loaders import Loader, is_full, parse_ts
from .metrics import StepMetrics, measured
from .paging import FirstPages, InOrder, WindowWalk
from .runtime import (Budget, budget_for, db_error, failed, log_event, make_client, open_db, parse_envelope,
                      remaining_ms)
from .schema import DIMENSION_ENDPOINTS, DIMENSIONS, ref_id
from .step_start import filter_params

DETAIL_BATCH = 25  # incidents whose notes and alerts are written per transaction
STUB_BATCH = 100  # references looked up by id per transaction
# Only what the loader keeps: the first trigger log entry (present even when the window's log entries start
# later). Services, teams, users, priorities and policies come from step 1's listings; expanding them on every
# incident made a page of 100 over a third bigger (455 KB against 333 KB with the local server's objects) to fill
# rows that already exist. A reference step 1 did not list becomes a stub, filled by the next run's listing or,
# for a listing cut at the offset cap, looked up by id.
INCIDENT_INCLUDES = ["first_trigger_log_entries"]
CARRY_KEYS = ("run_id", "execution_name", "window", "filters", "scope", "expected_incidents",
              "truncated_dimensions")
PHASES = ("incidents", "log_entries", "details")
# When an incident's alerts are fetched (PIPELINE_ALERTS): when its alert_counts differ from the stored alerts;
# under "resolved" only once it is resolved (its alerts can no longer change; an incident's alerts resolve with
# it), so an open incident costs no request per alert change and a resolved one costs one.
_COUNTS_DIFFER = ("(coalesce((i.raw->'alert_counts'->>'all')::int, 0) <> stored.alerts"
                  " OR coalesce((i.raw->'alert_counts'->>'resolved')::int, 0) <> stored.resolved)")
ALERTS_DUE = {"all": _COUNTS_DIFFER, "resolved": f"(i.status = 'resolved' AND {_COUNTS_DIFFER})", "off": "false"}


def matches(inc: dict, filters: dict) -> bool:
    """Whether an incident (as the API returns it) belongs to a filtered run."""
    if filters.get("service_ids") and ref_id(inc.get("service")) not in filters["service_ids"]:
        return False
    if filters.get("urgencies") and inc.get("urgency") not in filters["urgencies"]:
        return False
    if filters.get("team_ids"):
        teams = {ref_id(t) for t in inc.get("teams") or []}
        if not teams & set(filters["team_ids"]):
            return False
    return True


def _newer(updated_at: str | None, stored: datetime | None) -> bool:
    """Whether an incident's `updated_at` should replace the stored one (unknown times always do)."""
    return stored is None or updated_at is None or parse_ts(updated_at) > stored


def first_chunk(since: datetime, until: datetime, length: timedelta) -> tuple[str, str]:
    a, b = chunks(since, until, length)[0]
    return iso(a), iso(b)


def new_cursor(chunk: tuple[str, str]) -> dict:
    """The position at the start of a chunk."""
    return {"chunk": list(chunk), "phase": "incidents", "windows": [list(chunk)], "offset": 0, "api_total": 0,
            "totals": {"incidents": 0, "log_entries": 0, "filtered_out": 0}, "after_id": ""}


class ChunkLoader:
    """The work of one step-2 invocation on the run's chunks; ``counts`` add up across invocations."""

    def __init__(self, conn, client, carry: dict, cursor: dict, counts: dict, budget: Budget, *,
                 chunk_length: timedelta, alerts: str = "resolved") -> None:
        self.conn, self.client, self.carry = conn, client, carry
        self.cursor, self.counts, self.budget = cursor, counts, budget
        self.chunk_length = chunk_length
        self.filters = carry.get("filters") or {}
        self.alerts = alerts
        self.loader = Loader(conn)
        self.ahead = FirstPages()

    def add(self, key: str, n: int) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    # -- the walk over chunks and phases ---------------------------------------------------------
    def run(self) -> bool:
        """Load chunks until the window is done (True) or time is short (False)."""
        try:
            while True:
                if not self.chunk():
                    return False
                following = self.next_chunk()
                if following is None:
                    return True
                self.cursor.clear()
                self.cursor.update(new_cursor(following))
        finally:
            self.ahead.close()

    def next_chunk(self) -> tuple[str, str] | None:
        """The chunk after the cursor's, if the window goes on."""
        end = datetime.fromisoformat(self.cursor["chunk"][1])
        until = datetime.fromisoformat(self.carry["window"]["until"])
        return first_chunk(end, until, self.chunk_length) if end < until else None

    def walker(self, phase: str) -> WindowWalk:
        """The paging walk of a list phase, positioned at the cursor."""
        if phase == "incidents":
            params = [("sort_by", "incident_number:asc")] + [("include[]", i) for i in INCIDENT_INCLUDES] \
                + filter_params(self.filters)
            write = self.incident_page
        else:  # /log_entries filters by team only
            params = [("include[]", "incidents")] + filter_params({"team_ids": self.filters.get("team_ids")})
            write = self.log_page
        return WindowWalk(self.client, f"/{phase}", phase, params, write=write, position=self.cursor,
                          out_of_time=self.budget.out_of_time, ahead=self.ahead)

    def fetch_ahead(self, phase: str, chunk: list[str]) -> None:
        if not self.budget.out_of_time():
            self.ahead.fetch(self.walker(phase), chunk)

    def chunk(self) -> bool:
        c = self.cursor
        t0 = time.perf_counter()
        if c["phase"] == "incidents":
            self.fetch_ahead("log_entries", c["chunk"])
            if not self.walk("incidents"):
                return False
            t0 = self._phase_time("incidents_ms", t0)
            c.update(phase="log_entries", windows=[list(c["chunk"])], offset=0, api_total=0)
        if c["phase"] == "log_entries":
            if not self.walk("log_entries"):
                return False
            t0 = self._phase_time("log_entries_ms", t0)
            c.update(phase="details", windows=[], offset=0, after_id="")
        if c["phase"] == "details":
            following = self.next_chunk()
            if following is not None:  # the next chunk's first pages while this one's details are fetched
                self.fetch_ahead("incidents", list(following))
                self.fetch_ahead("log_entries", list(following))
            if not self.details() or not self.resolve_stubs():
                return False
            self._phase_time("details_ms", t0)
            runs.record_window(self.conn, self.carry["run_id"], c["chunk"][0], c["chunk"][1], c["totals"])
            self.add("chunks_loaded", 1)
        return True

    def _phase_time(self, key: str, t0: float) -> float:
        now = time.perf_counter()
        self.add(key, int((now - t0) * 1000))
        return now

    def walk(self, key: str) -> bool:
        c = self.cursor
        walk = self.walker(key)
        done = walk.run()
        self.add(f"{key}_window_splits", walk.splits)
        if done:
            c["totals"][key] = int(c.get("api_total", 0))
            self.add(f"{key}_api_total", c["totals"][key])
        return done

    # -- writers, run on the paging engine's writer thread ---------------------------------------
    def incident_page(self, items: list[dict]) -> None:
        items = [inc for inc in items if ref_id(inc)]  # a record without an id cannot be stored (step 3 counts it)
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
        other = 0
        for entry in items:
            inc = entry.get("incident")
            if not isinstance(inc, dict) or not ref_id(inc):
                self.add("log_entries_without_incident", 1)
                continue
            full = bool(inc.get("created_at")) and is_full(inc)
            if full and not matches(inc, self.filters):
                other += 1
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
        dropped = [e for e in kept if e[1] not in embedded and e[1] not in have]
        if dropped:  # an incident known only by reference that we never saw: the foreign key cannot hold
            self.add("log_entries_skipped", len(dropped))
            kept = [e for e in kept if e[1] in embedded or e[1] in have]
        res = self.loader.write_batch(newer, kept)
        self.cursor["totals"]["filtered_out"] += other  # counted once the batch is written
        self.add("log_entries_fetched", len(items))
        self.add("log_entries_other_incidents", other)
        self.add("incidents_updated_from_log_entries", res["incidents_written"])

    # -- per-incident details ---------------------------------------------------------------------
    def details(self) -> bool:
        """Notes for incidents with an annotate entry whose note is not fetched yet (by log entry id); alerts as
        the alert policy says (``ALERTS_DUE``); incidents created in the chunk or with log entries in it. Up to
        the client's in-flight bound of incidents are fetched at once; they are written in id order, and the
        cursor moves past an incident only once its details are committed."""
        c = self.cursor
        rows = self.conn.run(
            f"""SELECT i.id, ARRAY(SELECT l.id FROM pagerduty.log_entries l WHERE l.incident_id = i.id
                                     AND l.type = 'annotate_log_entry' AND l.note_fetched_at IS NULL) AS notes_due,
                       {ALERTS_DUE[self.alerts]} AS alerts_due
                  FROM pagerduty.incidents i
                 CROSS JOIN LATERAL (SELECT count(*) AS alerts, count(*) FILTER (WHERE a.status = 'resolved')
                                       AS resolved FROM pagerduty.alerts a WHERE a.incident_id = i.id) stored
                 WHERE i.id > :after AND {touched_in_scope(self.filters)}
                 ORDER BY i.id""",
            after=c.get("after_id") or "", since=c["chunk"][0], until=c["chunk"][1],
            **filter_sql(self.filters)[1])
        todo = iter([r for r in rows if r[1] or r[2]])
        notes: dict[str, list] = {}
        alerts: dict[str, list] = {}
        noted: list[str] = []
        done_upto = None  # the last incident whose details are fetched

        def flush() -> None:
            if done_upto is None:
                return
            res = self.loader.write_details(notes, alerts, noted)
            self.add("notes", res["notes"])
            self.add("alerts", res["alerts"])
            c["after_id"] = done_upto
            notes.clear(), alerts.clear(), noted.clear()

        fetches = InOrder(self.client.max_in_flight, "details")
        fetched, exhausted, stopped = 0, False, False
        try:
            while True:
                while not exhausted and not fetches.full() and not self.budget.out_of_time():
                    row = next(todo, None)
                    if row is None:
                        exhausted = True
                    else:
                        fetches.submit(row, self._fetch_details, row[0], bool(row[1]), row[2])
                if not len(fetches):
                    break
                try:
                    (inc_id, notes_due, _), (inc_notes, inc_alerts, found, cut) = fetches.take()
                except OutOfTime:
                    stopped = True
                    break
                if not found:
                    self.add("details_not_found", 1)
                if cut:  # the API serves 10,000 alerts of one incident at most
                    self.add("incidents_with_alerts_truncated", 1)
                if inc_notes is not None:
                    notes[inc_id] = inc_notes
                if inc_alerts is not None:
                    alerts[inc_id] = inc_alerts
                noted.extend(notes_due)
                done_upto = inc_id
                fetched += 1
                self.add("incidents_with_details_fetched", 1)
                if fetched % DETAIL_BATCH == 0:
                    flush()
        finally:
            fetches.close()
        flush()
        return exhausted and not stopped

    def _fetch_details(self, inc_id: str, notes_due: bool,
                       alerts_due: bool) -> tuple[list | None, list | None, bool, bool]:
        """One incident's notes and alerts, as due: (notes or None, alerts or None, found, alerts truncated).
        Runs on a worker thread: it only reads the API."""
        inc_notes = inc_alerts = None
        cut = False
        try:
            if notes_due:
                inc_notes = self.client.get(f"/incidents/{inc_id}/notes").get("notes") or []
            if alerts_due:
                inc_alerts, cut = self.client.list_all(f"/incidents/{inc_id}/alerts", "alerts")
        except PagerDutyError as exc:
            if exc.status != 404:
                raise
            return None, None, False, False
        return inc_notes, inc_alerts, True, cut

    def resolve_stubs(self) -> bool:
        """References to objects a dimension listing cut at the offset cap did not return: look each up by id
        (a deleted one stays a stub, marked missing, and is not looked up again)."""
        for kind in DIMENSIONS:
            if kind not in (self.carry.get("truncated_dimensions") or []):
                continue
            path, singular = DIMENSION_ENDPOINTS[kind]
            while True:
                ids = [r[0] for r in self.conn.run(
                    f"SELECT id FROM pagerduty.{kind} WHERE is_stub AND missing_since IS NULL ORDER BY id LIMIT :n",
                    n=STUB_BATCH)]
                if not ids:
                    break
                found: dict[str, dict | None] = {}
                try:
                    for ident in ids:
                        if self.budget.out_of_time():
                            return False
                        try:
                            found[ident] = self.client.get(f"{path}/{ident}").get(singular)
                        except PagerDutyError as exc:
                            if exc.status != 404:
                                raise
                            found[ident] = None
                except OutOfTime:
                    return False
                self.add("references_resolved_by_id", self.loader.resolve_stubs(kind, found))
        return True


def _read_input(inp) -> tuple[dict, dict | None, dict, int]:
    if not isinstance(inp, dict) or not isinstance(inp.get("run_id"), int) or \
            not isinstance(inp.get("window"), dict) or not isinstance(inp.get("filters", {}), dict):
        raise InputError("lambda_2 input must be lambda_1's result (run_id, window, filters)", "invalid_input")
    carry = {k: inp.get(k) for k in CARRY_KEYS}
    cursor = inp.get("cursor")
    if cursor is not None and (not isinstance(cursor, dict) or cursor.get("phase") not in PHASES
                               or not isinstance(cursor.get("windows"), list)
                               or not isinstance(cursor.get("chunk"), list)):
        raise InputError("lambda_2 input has an invalid 'cursor' (not one lambda_2 returned)", "invalid_input",
                         key="cursor")
    counts = {k: v for k, v in (inp.get("counts") or {}).items() if isinstance(v, int)} if cursor else {}
    return carry, cursor, counts, int(inp.get("invocations") or 0) + 1


@measured("lambda_2", calls_api=True)
def load_incidents(event, context=None, *, env=None, sleep=time.sleep, clock=time.time,
                   metrics: StepMetrics) -> dict:
    """Load the window's chunks (incidents, log entries, notes, alerts); resumable, and partial near the
    execution's deadline."""
    conn = client = state = None
    carry: dict = {}
    try:
        envelope = parse_envelope(event)
        carry, cursor, counts, invocations = _read_input(envelope.input)
        run_id, window = carry["run_id"], carry["window"]
        cfg = load_config(env)
        chunk_length = timedelta(hours=cfg.chunk_hours)
        # a copy: the caller's object stays as it was
        cursor = copy.deepcopy(cursor) if cursor else new_cursor(first_chunk(
            datetime.fromisoformat(window["since"]), datetime.fromisoformat(window["until"]), chunk_length))
        budget = budget_for(cfg, context, envelope, clock)
        conn = open_db(cfg, "lambda_2")
        runs.set_step(conn, run_id, "lambda_2")
        client = make_client(cfg, aws_secrets.get_pagerduty_token(cfg.pagerduty_token_secret_arn), sleep, budget)
        metrics.count_api(client)
        requests_before = int(counts.get("api_requests", 0))
        before = copy.deepcopy(cursor)
        state = ChunkLoader(conn, client, carry, cursor, counts, budget, chunk_length=chunk_length,
                            alerts=cfg.alerts)
        metrics.count_rows(state.loader)
        done = state.run()
        partial = not done and budget.execution_bound()
        if not done and not partial and cursor == before:
            # the workflow would call step 2 again and again until its own timeout
            raise PipelineError(f"lambda_2 stopped for time before loading anything: "
                                f"{remaining_ms(context):.0f} ms left is within PIPELINE_TIME_MARGIN_MS "
                                f"({cfg.time_margin_ms} ms); raise the function timeout or lower the margin",
                                "no_progress")
        counts["db_ms"] = int(counts.get("db_ms", 0)) + int(state.loader.db_seconds * 1000)
        counts["rows_written"] = int(counts.get("rows_written", 0)) + state.loader.rows_written
        counts["api_requests"] = requests_before + client.request_count
        counts["api_retries"] = int(counts.get("api_retries", 0)) + client.retry_count
        counts["api_rate_limited"] = int(counts.get("api_rate_limited", 0)) + client.rate_limited_count
        runs.set_step(conn, run_id, "lambda_2", {"lambda_2": counts})
        finished = done or partial
        result = {**carry, "success": True, "complete": finished, "partial": partial,
                  "cursor": None if finished else cursor, "counts": counts, "invocations": invocations}
        log_event("step_progress", step="lambda_2", run_id=run_id, complete=finished, partial=partial, counts=counts)
        return result
    except (*DB_FAILURES, PipelineError) as exc:
        extra = dict(carry)
        if state is not None:  # where the load got to: the committed cursor and the counts so far
            extra.update(cursor=state.cursor, counts=state.counts)
        err = exc if isinstance(exc, PipelineError) else db_error(exc)
        return failed("lambda_2", err, conn, carry.get("run_id"), extra)
    finally:
        if client is not None:
            client.close()
        close_quietly(conn)
