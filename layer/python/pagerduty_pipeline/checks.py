"""The data checks of step 3: each compares the loaded rows of the run's windows with the API or with another
source than the one the rows were taken from, so each can fail; each is scoped to the windows the run loaded,
so step 3's time follows the run's size, not the history's.

A check is a record (name, severity, what it compares, how); one runner writes every result (status, failure
count, a sample of offending ids and the figures compared) to ``validation_results``. Severity ``error``
blocks the run (completeness); ``warn`` lists records that break a data rule but are kept, so one odd record
never wedges later windows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from .db import transaction
from .schema import STATUS_LOG_ENTRIES, STATUSES, URGENCIES

SAMPLE = 100  # offending records listed per check (the count covers all)


@dataclass(frozen=True)
class Scope:
    """What a check looks at: the run's loaded range [since, until), its filters and the API's totals."""

    since: datetime
    until: datetime
    filters: dict
    incidents_total: int
    log_entries_total: int
    log_entries_filtered_out: int

    def params(self) -> dict:
        params = {"since": self.since, "until": self.until}
        params.update(filter_sql(self.filters)[1])
        return params


@dataclass(frozen=True)
class Outcome:
    failures: int
    details: dict


@dataclass(frozen=True)
class Check:
    name: str
    severity: str  # "error" blocks the run; "warn" reports
    compares: str  # one line for docs and results
    evaluate: Callable[[object, Scope], Outcome]


def filter_sql(filters: dict, alias: str = "i") -> tuple[str, dict]:
    """' AND …' fragment for the run's filters (empty without filters)."""
    sql = ""
    params: dict = {}
    if filters.get("service_ids"):
        sql += f" AND {alias}.service_id = ANY(CAST(:svc AS text[]))"
        params["svc"] = filters["service_ids"]
    if filters.get("urgencies"):
        sql += f" AND {alias}.urgency = ANY(CAST(:urg AS text[]))"
        params["urg"] = filters["urgencies"]
    if filters.get("team_ids"):
        sql += (f" AND EXISTS (SELECT 1 FROM pagerduty.incident_teams it WHERE it.incident_id = {alias}.id "
                f"AND it.team_id = ANY(CAST(:teams AS text[])))")
        params["teams"] = filters["team_ids"]
    return sql, params


def created_in_scope(filters: dict, alias: str = "i") -> str:
    """WHERE fragment: incidents created in the range and matching the filters."""
    return (f"{alias}.created_at >= CAST(:since AS timestamptz) AND {alias}.created_at < CAST(:until AS timestamptz)"
            + filter_sql(filters, alias)[0])


def touched_in_scope(filters: dict, alias: str = "i") -> str:
    """WHERE fragment: incidents created in the range or with log entries in it, matching the filters. Built from
    the two indexed sets (created_at of incidents, created_at of log entries), so its cost follows the range."""
    return (f"{alias}.id IN (SELECT c.id FROM pagerduty.incidents c WHERE c.created_at >= CAST(:since AS timestamptz)"
            f" AND c.created_at < CAST(:until AS timestamptz) UNION SELECT le.incident_id FROM pagerduty.log_entries le"
            f" WHERE le.created_at >= CAST(:since AS timestamptz) AND le.created_at < CAST(:until AS timestamptz))"
            + filter_sql(filters, alias)[0])


def _ids(conn, sql: str, scope: Scope, **constants) -> Outcome:
    """An offending-rows query (first column the id, second the reason): its count and a sample."""
    rows = conn.run(sql, **scope.params(), **constants)
    return Outcome(len(rows), {"records": [{"id": r[0], "reason": r[1]} for r in rows[:SAMPLE]]})


def incident_count(conn, scope: Scope) -> Outcome:
    stored = conn.run(f"SELECT count(*) FROM pagerduty.incidents i WHERE {created_in_scope(scope.filters)}",
                      **scope.params())[0][0]
    return Outcome(abs(stored - scope.incidents_total), {"database": stored, "api_total": scope.incidents_total})


def log_entry_count(conn, scope: Scope) -> Outcome:
    """All log entries the API lists for the range are stored (with filters: those of matching incidents, and
    the API's total less the entries of other incidents)."""
    fsql = filter_sql(scope.filters)[0]
    stored = conn.run(f"""SELECT count(*) FROM pagerduty.log_entries l JOIN pagerduty.incidents i ON i.id = l.incident_id
                           WHERE l.created_at >= CAST(:since AS timestamptz)
                             AND l.created_at < CAST(:until AS timestamptz) {fsql}""", **scope.params())[0][0]
    expected = scope.log_entries_total - scope.log_entries_filtered_out
    return Outcome(abs(stored - expected), {"database": stored, "api_total": scope.log_entries_total,
                                            "other_incidents": scope.log_entries_filtered_out})


def trigger_entries(conn, scope: Scope) -> Outcome:
    return _ids(conn, f"""SELECT i.id, 'no trigger log entry stored' FROM pagerduty.incidents i
                           WHERE {created_in_scope(scope.filters)} AND NOT EXISTS (
                                 SELECT 1 FROM pagerduty.log_entries l
                                  WHERE l.incident_id = i.id AND l.type = 'trigger_log_entry')
                           ORDER BY i.id""", scope)


_STATUS_OF_ENTRY = " ".join(f"WHEN '{t}' THEN '{s}'" for t, s in STATUS_LOG_ENTRIES.items())


def status_matches_log(conn, scope: Scope) -> Outcome:
    """An incident whose last status change lies inside the range has the status its latest stored status-changing
    log entry sets: the range's entries are all loaded, so the entry that made the change is among them (entries
    of the same second may come in either order)."""
    return _ids(conn, f"""
        WITH touched AS (SELECT i.id, i.status FROM pagerduty.incidents i
                          WHERE {touched_in_scope(scope.filters)} AND i.status IS NOT NULL
                            AND coalesce(i.last_status_change_at, i.updated_at) >= CAST(:since AS timestamptz)
                            AND coalesce(i.last_status_change_at, i.updated_at) < CAST(:until AS timestamptz)),
             entries AS (SELECT t.id, t.status, l.created_at,
                                CASE l.type {_STATUS_OF_ENTRY} END AS sets,
                                max(l.created_at) OVER (PARTITION BY t.id) AS latest
                           FROM touched t JOIN pagerduty.log_entries l ON l.incident_id = t.id
                          WHERE l.type = ANY(CAST(:status_types AS text[])))
        SELECT id, 'status ' || min(status) || ' but the latest status log entry sets '
                   || string_agg(DISTINCT sets, '/')
          FROM entries WHERE created_at = latest GROUP BY id HAVING bool_and(sets <> status) ORDER BY id""",
                scope, status_types=list(STATUS_LOG_ENTRIES))


def references_present(conn, scope: Scope) -> Outcome:
    """Every user or service that acts in the range's log entries has a row (a stub counts: PagerDuty no
    longer returns deleted objects); stubs are counted."""
    rows = conn.run("""
        WITH refs AS (SELECT DISTINCT l.agent_type, l.agent_id FROM pagerduty.log_entries l
                       WHERE l.created_at >= CAST(:since AS timestamptz) AND l.created_at < CAST(:until AS timestamptz)
                         AND l.agent_id IS NOT NULL AND l.agent_type IN ('user_reference', 'user',
                                                                           'service_reference', 'service'))
        SELECT r.agent_id, r.agent_type, coalesce(u.is_stub, s.is_stub) AS stub
          FROM refs r
          LEFT JOIN pagerduty.users u ON r.agent_type LIKE 'user%' AND u.id = r.agent_id
          LEFT JOIN pagerduty.services s ON r.agent_type LIKE 'service%' AND s.id = r.agent_id""",
                    since=scope.since, until=scope.until)
    missing = [{"id": r[0], "reason": f"{r[1]} has no row"} for r in rows if r[2] is None]
    return Outcome(len(missing), {"records": missing[:SAMPLE], "referenced": len(rows),
                                  "stubs": sum(1 for r in rows if r[2])})


def data_rules(conn, scope: Scope) -> Outcome:
    """Records the API returned with values that break a rule: kept and listed, never blocking."""
    return _ids(conn, f"""
        SELECT i.id, concat_ws('; ',
                 CASE WHEN i.title IS NULL THEN 'title is null' END,
                 CASE WHEN i.urgency IS NULL OR NOT (i.urgency = ANY(CAST(:urgencies AS text[])))
                      THEN 'urgency is ' || coalesce(i.urgency, 'null') END,
                 CASE WHEN i.status IS NULL OR NOT (i.status = ANY(CAST(:statuses AS text[])))
                      THEN 'status is ' || coalesce(i.status, 'null') END,
                 CASE WHEN i.incident_number IS NULL THEN 'incident_number is null' END,
                 CASE WHEN i.service_id IS NULL THEN 'no service' END,
                 CASE WHEN i.resolved_at < i.created_at THEN 'resolved before it was created' END,
                 CASE WHEN (i.status = 'resolved') <> (i.resolved_at IS NOT NULL)
                      THEN 'status ' || i.status || ' with resolved_at ' || coalesce(i.resolved_at::text, 'null') END)
          FROM pagerduty.incidents i
         WHERE {created_in_scope(scope.filters)} AND (i.title IS NULL OR i.urgency IS NULL OR i.status IS NULL
               OR NOT (i.urgency = ANY(CAST(:urgencies AS text[]))) OR NOT (i.status = ANY(CAST(:statuses AS text[])))
               OR i.incident_number IS NULL OR i.service_id IS NULL OR i.resolved_at < i.created_at
               OR (i.status = 'resolved') <> (i.resolved_at IS NOT NULL))
         ORDER BY i.id""", scope, urgencies=list(URGENCIES), statuses=list(STATUSES))


CHECKS: tuple[Check, ...] = (
    Check("incident_count_matches_api", "error",
          "incidents created in the loaded range = the API's total=true counts for it", incident_count),
    Check("log_entry_count_matches_api", "error",
          "log entries created in the loaded range = the API's totals for it", log_entry_count),
    Check("incidents_have_trigger_entry", "error",
          "every incident created in the range has its trigger log entry", trigger_entries),
    Check("status_matches_latest_log_entry", "error",
          "each incident's status = what its latest status log entry sets", status_matches_log),
    Check("references_present", "error",
          "users and services acting in the range's log entries have rows (stubs counted)", references_present),
    Check("data_rules", "warn",
          "incidents with null or unknown title, urgency, status, number or service, or inconsistent resolution",
          data_rules),
)


def run_checks(conn, run_id: int, scope: Scope, checks: tuple[Check, ...] = CHECKS) -> list[dict]:
    """Evaluate every check and record the results (replacing this run's earlier ones) in one transaction."""
    results = []
    for check in checks:
        outcome = check.evaluate(conn, scope)
        passed = outcome.failures == 0
        results.append({"name": check.name, "severity": check.severity, "passed": passed,
                        "status": "pass" if passed else ("fail" if check.severity == "error" else "warn"),
                        "failures": outcome.failures, "blocking": check.severity == "error",
                        "details": {"compares": check.compares, **outcome.details}})
    with transaction(conn):
        for r in results:
            conn.run("""INSERT INTO pagerduty.validation_results (run_id, check_name, passed, blocking, severity,
                                                                  failures, details)
                        VALUES (:r, :n, :p, :b, :s, :f, CAST(:d AS jsonb))
                        ON CONFLICT (run_id, check_name) DO UPDATE SET passed = EXCLUDED.passed,
                            blocking = EXCLUDED.blocking, severity = EXCLUDED.severity, failures = EXCLUDED.failures,
                            details = EXCLUDED.details, checked_at = now()""",
                     r=run_id, n=r["name"], p=r["passed"], b=r["blocking"], s=r["severity"], f=r["failures"],
                     d=json.dumps(r["details"], default=str))
    return results
