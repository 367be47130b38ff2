"""Batched, idempotent upserts into the ``pagerduty`` schema.

Every write is a multi-row ``INSERT … SELECT … FROM jsonb_to_recordset(:rows)`` with one JSON
parameter per statement (one round trip per table per batch, server-side parsing). An incident
batch (incidents + assignments + teams + log entries + stub references) is one transaction.
"""

from __future__ import annotations

import contextlib
import time
from datetime import datetime

import orjson

from .db import transaction
from .schema import (ALERTS, DIMENSION_TABLES, DIMENSIONS, INCIDENT_ASSIGNMENTS, INCIDENT_TEAMS, INCIDENTS,
                     LOG_ENTRIES, NOTES, Table, ref_id)


def ref(obj):
    """Reduce an embedded object to a reference {id, type, summary} (stable raw form)."""
    if not isinstance(obj, dict) or "id" not in obj:
        return obj
    typ = obj.get("type") or "object"
    if not typ.endswith("_reference"):
        typ += "_reference"
    return {"id": obj["id"], "type": typ, "summary": obj.get("summary") or obj.get("name")}


def is_full(obj) -> bool:
    return isinstance(obj, dict) and not str(obj.get("type", "")).endswith("_reference")


def normalize_incident(inc: dict) -> dict:
    out = dict(inc)
    for key in ("service", "escalation_policy", "priority", "last_status_change_by", "first_trigger_log_entry"):
        if isinstance(out.get(key), dict):
            out[key] = ref(out[key])
    out["teams"] = [ref(t) for t in inc.get("teams") or []]
    out["assignments"] = [{"at": a.get("at"), "assignee": ref(a.get("assignee"))}
                          for a in inc.get("assignments") or [] if isinstance(a, dict)]
    if isinstance(inc.get("acknowledgements"), list):
        out["acknowledgements"] = [{"at": a.get("at"), "acknowledger": ref(a.get("acknowledger"))}
                                   for a in inc["acknowledgements"] if isinstance(a, dict)]
    return out


def normalize_log_entry(entry: dict) -> dict:
    """The entry as PagerDuty lists it (its other embedded objects are references already), with an
    embedded incident (include[]=incidents) reduced to a reference."""
    inc = entry.get("incident")
    if is_full(inc):
        out = dict(entry)
        out["incident"] = ref(inc)
        return out
    return entry


def parse_ts(value) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _dumps(rows) -> str:
    return orjson.dumps(rows).decode()


def _dim_row(kind: str, obj: dict, stub: bool) -> dict:
    """A dimension row; a stub (an object known only by reference) keeps its name and nothing else."""
    row = DIMENSION_TABLES[kind].row(obj, is_stub=stub, raw=ref(obj) if stub else obj)
    if stub:
        row = {k: (v if k in ("id", "name", "is_stub", "raw") else None) for k, v in row.items()}
    return row


def _recordset_insert(table: Table, tail: str = "") -> str:
    """``INSERT INTO pagerduty.<table> AS t (…) SELECT r.… FROM jsonb_to_recordset(:rows) AS r(…) <tail>``:
    a whole batch in one statement, its rows one JSON parameter the server parses."""
    names = [name for name, _ in table.typed]
    sql = (f"INSERT INTO pagerduty.{table.name} AS t ({', '.join(names)}) "
           f"SELECT {', '.join('r.' + n for n in names)} FROM jsonb_to_recordset(CAST(:rows AS jsonb)) "
           f"AS r({', '.join(f'{n} {t}' for n, t in table.typed)})")
    return f"{sql} {tail}" if tail else sql


def _upsert(table: Table, where: str) -> str:
    """ON CONFLICT clause replacing every column but ``id`` when ``where`` holds."""
    sets = ", ".join(f"{name} = EXCLUDED.{name}" for name, _ in table.typed if name != "id")
    return f"ON CONFLICT (id) DO UPDATE SET {sets} WHERE {where}"


def _dim_sql(kind: str, mode: str) -> str:
    """mode "ensure" only upgrades a stub to a full object (never touches a full row); "full" skips
    rewriting identical rows. ``missing_since`` is absent from the rows, so it is written NULL."""
    where = {"ensure": "t.is_stub AND NOT EXCLUDED.is_stub",
             "full": "t.raw IS DISTINCT FROM EXCLUDED.raw OR t.is_stub OR t.missing_since IS NOT NULL"}[mode]
    table = DIMENSION_TABLES[kind]
    return _recordset_insert(table, _upsert(table, where))


_INCIDENT_SQL = _recordset_insert(INCIDENTS, _upsert(
    INCIDENTS, "t.updated_at IS NULL OR EXCLUDED.updated_at IS NULL OR EXCLUDED.updated_at >= t.updated_at")
    + " RETURNING id, (xmax = 0) AS inserted")
_ASSIGN_SQL = _recordset_insert(INCIDENT_ASSIGNMENTS)
_TEAMS_SQL = _recordset_insert(INCIDENT_TEAMS)
_LOG_SQL = _recordset_insert(LOG_ENTRIES, "ON CONFLICT (id) DO NOTHING")
_NOTES_SQL = _recordset_insert(NOTES, _upsert(NOTES, "t.raw IS DISTINCT FROM EXCLUDED.raw"))
_ALERTS_SQL = _recordset_insert(ALERTS, _upsert(ALERTS, "t.raw IS DISTINCT FROM EXCLUDED.raw"))


def incident_row(inc: dict) -> dict:
    return INCIDENTS.row(inc, raw=normalize_incident(inc))


def log_entry_row(entry: dict, incident_id: str) -> dict:
    return LOG_ENTRIES.row(entry, incident_id=incident_id, raw=normalize_log_entry(entry))


def note_row(inc_id: str, note: dict) -> dict:
    return NOTES.row(note, incident_id=inc_id, raw={**note, "user": ref(note.get("user"))})


def alert_row(inc_id: str, alert: dict) -> dict:
    return ALERTS.row(alert, incident_id=inc_id, raw={**alert, "service": ref(alert.get("service")),
                                                      "incident": ref(alert.get("incident"))})


def _child_rows(by_incident: dict[str, list[dict]], embedded: str, refs: dict[str, dict], row) -> list[dict]:
    """Rows of an incident's notes or alerts (items without an id are skipped); the object each
    embeds (a note's user, an alert's service) is collected into ``refs`` for the FK."""
    rows = []
    for inc_id, items in by_incident.items():
        for item in items:
            if not ref_id(item):
                continue
            if ref_id(item.get(embedded)):
                refs.setdefault(item[embedded]["id"], item[embedded])
            rows.append(row(inc_id, item))
    return rows


class Loader:
    """Writes API objects; remembers which reference ids exist so stub inserts are rare."""

    def __init__(self, conn):
        self.conn = conn
        self.known: dict[str, set] = {kind: {r[0] for r in conn.run(f"SELECT id FROM pagerduty.{kind}")}
                                      for kind in DIMENSIONS}
        self._pending: dict[str, set] = {kind: set() for kind in DIMENSIONS}  # written by the open transaction
        self.updated_at: dict[str, datetime | None] = {}  # incident id -> updated_at written in this invocation
        self.log_ids: set[str] = set()  # log entries written in this invocation (immutable upstream)
        self.rows_written = 0  # rows sent in write statements (the work done, for throughput)
        self.changed: dict[str, int] = {}  # table -> rows inserted or changed, by committed transactions
        self._changed_pending: dict[str, int] = {}  # the same, of the open transaction
        self.db_seconds = 0.0
        self._prepared: dict = {}

    def _statement(self, sql: str):
        """The statement, prepared once per connection (saves pg8000's SQL rewriting and the server's parse/plan
        on every batch)."""
        stmt = self._prepared.get(sql)
        if stmt is None:
            stmt = self._prepared[sql] = self.conn.prepare(sql)
        return stmt

    def _run(self, sql: str, **params):
        return self._statement(sql).run(**params)

    def _write(self, table: str, sql: str, sent: int, **params):
        """Run a write of ``table`` and count the rows PostgreSQL says it inserted or updated (the command tag's
        count: an upsert whose WHERE skips an unchanged row, or DO NOTHING on a conflict, does not count it), for
        ``changed`` (the RowsWritten metric). pg8000 1.31 keeps that count on the statement's last context; should
        it not, the rows sent are counted."""
        stmt = self._statement(sql)
        result = stmt.run(**params)
        count = getattr(getattr(stmt, "_context", None), "row_count", None)
        count = count if isinstance(count, int) and count >= 0 else sent
        self._changed_pending[table] = self._changed_pending.get(table, 0) + count
        return result

    @contextlib.contextmanager
    def _tx(self):
        """A transaction whose duration (statements + COMMIT) is added to ``db_seconds``. Reference ids
        it writes become ``known`` only once it commits (a rollback takes the rows with it)."""
        t0 = time.perf_counter()
        try:
            with transaction(self.conn):
                yield
            for kind, ids in self._pending.items():
                self.known[kind].update(ids)
            for table, n in self._changed_pending.items():
                self.changed[table] = self.changed.get(table, 0) + n
        finally:
            for ids in self._pending.values():
                ids.clear()
            self._changed_pending.clear()
            self.db_seconds += time.perf_counter() - t0

    # -- dimensions --------------------------------------------------------------------------
    def upsert_dimension(self, kind: str, objects: list[dict], complete: bool = True) -> int:
        """A listing of one dimension: upsert all; when the listing is complete, mark rows it no longer returns
        as missing (a listing cut at the offset cap proves nothing about the rest)."""
        objects = [o for o in objects if ref_id(o)]
        with self._tx():
            if kind == "services":  # services reference escalation policies
                self._ensure({"escalation_policies": {ref_id(o["escalation_policy"]): o["escalation_policy"]
                                                      for o in objects if ref_id(o.get("escalation_policy"))}})
            if objects:
                rows = [_dim_row(kind, o, stub=False) for o in objects]
                self._write(kind, _dim_sql(kind, "full"), len(rows), rows=_dumps(rows))
                self.rows_written += len(rows)
            if complete:
                self._run(f"UPDATE pagerduty.{kind} SET missing_since = now() WHERE missing_since IS NULL "
                          f"AND NOT is_stub AND NOT (id = ANY(CAST(:ids AS text[])))", ids=[ref_id(o) for o in objects])
            self._pending[kind].update(ref_id(o) for o in objects)
        return len(objects)

    def _missing(self, kind: str, objects: dict[str, dict]) -> dict[str, dict]:
        return {i: o for i, o in objects.items() if i and i not in self.known[kind] and i not in self._pending[kind]}

    def _ensure(self, refs: dict[str, dict[str, dict]]) -> None:
        """Insert missing referenced objects (full ones from include[], else stubs), in FK order (the
        escalation policies of new full services first). In a transaction."""
        refs = dict(refs)
        policies = dict(refs.get("escalation_policies") or {})
        for service in self._missing("services", refs.get("services") or {}).values():
            policy = service.get("escalation_policy") if is_full(service) else None
            if ref_id(policy) and not is_full(policies.get(policy["id"])):
                policies[policy["id"]] = policy
        refs["escalation_policies"] = policies
        for kind in DIMENSIONS:
            todo = self._missing(kind, refs.get(kind) or {})
            if not todo:
                continue
            rows = [_dim_row(kind, o, stub=not is_full(o)) for o in todo.values()]
            self._write(kind, _dim_sql(kind, "ensure"), len(rows), rows=_dumps(rows))
            self.rows_written += len(rows)
            self._pending[kind].update(todo)

    # -- incidents (+ children) --------------------------------------------------------------
    @staticmethod
    def collect_refs(incidents: list[dict]) -> dict[str, dict[str, dict]]:
        refs: dict[str, dict[str, dict]] = {k: {} for k in DIMENSIONS}
        for inc in incidents:
            for kind, key in (("services", "service"), ("escalation_policies", "escalation_policy"),
                              ("priorities", "priority")):
                obj = inc.get(key)
                if ref_id(obj) and (is_full(obj) or ref_id(obj) not in refs[kind]):
                    refs[kind][obj["id"]] = obj
            for t in inc.get("teams") or []:
                if ref_id(t):
                    refs["teams"].setdefault(t["id"], t)
            for a in inc.get("assignments") or []:
                u = a.get("assignee") if isinstance(a, dict) else None
                if ref_id(u):
                    refs["users"].setdefault(u["id"], u)
        return refs

    @staticmethod
    def agent_refs(log_entries: list[tuple[dict, str]], refs: dict[str, dict[str, dict]]) -> None:
        """Users and services that act in log entries (their agents), and the users notify entries were sent to,
        become known rows too (stubs if need be), so every reference the data holds can be followed: a deleted user
        who was only ever notified keeps a name in analytics.responder_weekly."""
        for entry, _inc in log_entries:
            agent = entry.get("agent")
            kind = {"user_reference": "users", "user": "users", "service_reference": "services",
                    "service": "services"}.get(agent.get("type")) if isinstance(agent, dict) else None
            if kind and ref_id(agent):
                refs[kind].setdefault(agent["id"], agent)
            notified = entry.get("user")
            if entry.get("type") == "notify_log_entry" and ref_id(notified):
                refs["users"].setdefault(notified["id"], notified)

    def write_batch(self, incidents: list[dict], log_entries: list[tuple[dict, str]] = ()) -> dict:
        """One transaction: referenced objects, incidents (only if not older than stored), their
        assignments and teams (replaced), and log entries ``(entry, incident_id)``."""
        written: list[str] = []
        written_set: set = set()
        refs = self.collect_refs(incidents)
        self.agent_refs(log_entries, refs)
        with self._tx():
            self._ensure(refs)
            if incidents:
                dedup = {}
                for inc in incidents:
                    prev = dedup.get(inc["id"])
                    if prev is None or (inc.get("updated_at") or "") >= (prev.get("updated_at") or ""):
                        dedup[inc["id"]] = inc
                incidents = list(dedup.values())
                rows = [incident_row(i) for i in incidents]
                result = self._write("incidents", _INCIDENT_SQL, len(rows), rows=_dumps(rows))
                written = [r[0] for r in result]
                updated = [r[0] for r in result if not r[1]]  # existing rows: replace their children
                self.rows_written += len(written)
                written_set = set(written)
                if written:
                    if updated:
                        self._run("DELETE FROM pagerduty.incident_assignments "
                                  "WHERE incident_id = ANY(CAST(:ids AS text[]))", ids=updated)
                        self._run("DELETE FROM pagerduty.incident_teams WHERE incident_id = ANY(CAST(:ids AS text[]))",
                                  ids=updated)
                    arows, trows = [], []
                    for inc in incidents:
                        if inc["id"] not in written_set:
                            continue
                        seen = set()
                        for a in inc.get("assignments") or []:
                            uid = ref_id(a.get("assignee")) if isinstance(a, dict) else None
                            if uid and uid not in seen:
                                seen.add(uid)
                                arows.append({"incident_id": inc["id"], "user_id": uid, "assigned_at": a.get("at")})
                        tseen = set()
                        for t in inc.get("teams") or []:
                            tid = ref_id(t)
                            if tid and tid not in tseen:
                                tseen.add(tid)
                                trows.append({"incident_id": inc["id"], "team_id": tid})
                    if arows:
                        self._write("incident_assignments", _ASSIGN_SQL, len(arows), rows=_dumps(arows))
                    if trows:
                        self._write("incident_teams", _TEAMS_SQL, len(trows), rows=_dumps(trows))
                    self.rows_written += len(arows) + len(trows)
            entries = {}
            for entry, inc_id in log_entries:
                if ref_id(entry) and inc_id and entry["id"] not in self.log_ids:
                    entries[entry["id"]] = log_entry_row(entry, inc_id)
            if entries:
                self._write("log_entries", _LOG_SQL, len(entries), rows=_dumps(list(entries.values())))
                self.rows_written += len(entries)
        self.log_ids.update(entries)
        for inc in incidents:
            if inc["id"] in written_set:
                self.updated_at[inc["id"]] = parse_ts(inc.get("updated_at"))
        return {"incidents_written": len(written), "log_entries": len(entries)}

    def stored_updated_at(self, ids: list[str]) -> dict[str, datetime | None]:
        if not ids:
            return {}
        rows = self._run("SELECT id, updated_at FROM pagerduty.incidents WHERE id = ANY(CAST(:ids AS text[]))", ids=ids)
        return {r[0]: r[1] for r in rows}

    # -- notes & alerts ----------------------------------------------------------------------
    def write_details(self, notes: dict[str, list[dict]], alerts: dict[str, list[dict]],
                      noted_entries: list[str] = ()) -> dict:
        """One transaction for a batch of incidents: notes (replaced per incident), alerts (upserted), and the
        annotate log entries whose notes this fetch covered (``noted_entries``: ids) marked as done."""
        refs: dict[str, dict[str, dict]] = {"users": {}, "services": {}}
        nrows = _child_rows(notes, "user", refs["users"], note_row)
        arows = _child_rows(alerts, "service", refs["services"], alert_row)
        with self._tx():
            self._ensure(refs)
            if notes:
                self._run("DELETE FROM pagerduty.notes WHERE incident_id = ANY(CAST(:inc AS text[])) "
                          "AND NOT (id = ANY(CAST(:keep AS text[])))", inc=list(notes), keep=[r["id"] for r in nrows])
            if nrows:
                self._write("notes", _NOTES_SQL, len(nrows), rows=_dumps(nrows))
            if arows:
                self._write("alerts", _ALERTS_SQL, len(arows), rows=_dumps(arows))
            if noted_entries:
                self._run("UPDATE pagerduty.log_entries SET note_fetched_at = now() "
                          "WHERE id = ANY(CAST(:ids AS text[]))", ids=list(noted_entries))
        self.rows_written += len(nrows) + len(arows)
        return {"notes": len(nrows), "alerts": len(arows)}

    # -- references known only by id (a dimension listing cut at the offset cap) ------------------
    def resolve_stubs(self, kind: str, found: dict[str, dict | None]) -> int:
        """Stubs looked up by id: a found object replaces its stub; one the API no longer has (None) is marked
        missing, so it is not looked up again. Returns how many became full rows."""
        full = [o for o in found.values() if o is not None and ref_id(o)]
        gone = [i for i, o in found.items() if o is None]
        with self._tx():
            if full:
                self._write(kind, _dim_sql(kind, "full"), len(full),
                            rows=_dumps([_dim_row(kind, o, stub=False) for o in full]))
                self.rows_written += len(full)
            if gone:
                self._run(f"UPDATE pagerduty.{kind} SET missing_since = now() WHERE id = ANY(CAST(:ids AS text[]))",
                          ids=gone)
        return len(full)
