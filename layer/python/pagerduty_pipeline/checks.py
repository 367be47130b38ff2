"""Data checks of step 3, recorded in pagerduty.validation_results."""

from __future__ import annotations

import json

from .db import transaction
from .loaders import DIMENSIONS


def scope_sql(filters: dict, alias: str = "i") -> tuple[str, dict]:
    """WHERE fragment selecting the run's incidents (created in the window, matching the filters)."""
    fsql, params = filter_sql(filters, alias)
    return (f"{alias}.created_at >= CAST(:since AS timestamptz) AND {alias}.created_at < CAST(:until AS timestamptz)"
            + fsql), params


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


_FK_CHECKS = [
    ("incidents", "service_id", "services"), ("incidents", "escalation_policy_id", "escalation_policies"),
    ("incidents", "priority_id", "priorities"), ("services", "escalation_policy_id", "escalation_policies"),
    ("incident_assignments", "incident_id", "incidents"), ("incident_assignments", "user_id", "users"),
    ("incident_teams", "incident_id", "incidents"), ("incident_teams", "team_id", "teams"),
    ("log_entries", "incident_id", "incidents"), ("notes", "incident_id", "incidents"), ("notes", "user_id", "users"),
    ("alerts", "incident_id", "incidents"), ("alerts", "service_id", "services"),
]


def run_checks(conn, run_id: int, since: str, until: str, filters: dict, expected_incidents: int | None,
               api_log_entries: int | None) -> list[dict]:
    where, params = scope_sql(filters)
    params.update(since=since, until=until)
    results: list[dict] = []

    def one(sql: str, **extra):
        return conn.run(sql, **params, **extra)[0][0]

    def add(name: str, passed: bool, details: dict, blocking: bool = True) -> None:
        results.append({"name": name, "passed": bool(passed), "blocking": blocking, "details": details})

    # 1. row counts vs the API's totals for the window
    db_incidents = one(f"SELECT count(*) FROM pagerduty.incidents i WHERE {where}")
    add("incident_count_matches_api", expected_incidents is not None and db_incidents == expected_incidents,
        {"database": db_incidents, "api_total": expected_incidents})
    db_entries = one(f"""SELECT count(*) FROM pagerduty.log_entries l JOIN pagerduty.incidents i ON i.id = l.incident_id
                         WHERE l.created_at >= CAST(:since AS timestamptz) AND l.created_at < CAST(:until AS timestamptz)
                         {filter_sql(filters)[0]}""")
    add("log_entry_count_matches_api", api_log_entries is not None and db_entries == api_log_entries,
        {"database": db_entries, "api_total": api_log_entries})
    # 2. no duplicate incident numbers
    dups = conn.run("""SELECT incident_number FROM pagerduty.incidents GROUP BY incident_number
                       HAVING count(*) > 1 LIMIT 10""")
    add("no_duplicate_incident_numbers", not dups, {"duplicates": [r[0] for r in dups]})
    # 3. required fields
    missing = conn.run(f"""SELECT id FROM pagerduty.incidents i WHERE {where} AND (i.title IS NULL OR i.status IS NULL
                             OR i.urgency IS NULL OR i.service_id IS NULL OR i.incident_number IS NULL) LIMIT 10""",
                       **params)
    missing_le = one(f"""SELECT count(*) FROM pagerduty.log_entries l JOIN pagerduty.incidents i ON i.id = l.incident_id
                         WHERE {where} AND (l.type IS NULL OR l.created_at IS NULL)""")
    add("required_fields_not_null", not missing and missing_le == 0,
        {"incidents": [r[0] for r in missing], "log_entries": missing_le})
    # 4. every foreign key resolves
    orphans = {}
    for table, col, target in _FK_CHECKS:
        n = conn.run(f"""SELECT count(*) FROM pagerduty.{table} c WHERE c.{col} IS NOT NULL AND NOT EXISTS
                         (SELECT 1 FROM pagerduty.{target} p WHERE p.id = c.{col})""")[0][0]
        if n:
            orphans[f"{table}.{col}"] = n
    add("foreign_keys_resolve", not orphans, {"orphans": orphans})
    # 5. resolution consistency
    bad = conn.run(f"""SELECT id FROM pagerduty.incidents i WHERE {where} AND (
                         (i.resolved_at IS NOT NULL AND i.created_at > i.resolved_at)
                         OR ((i.status = 'resolved') IS DISTINCT FROM (i.resolved_at IS NOT NULL))) LIMIT 10""",
                   **params)
    add("resolved_consistency", not bad, {"incidents": [r[0] for r in bad]})
    # 6. first trigger log entry present
    no_trigger = conn.run(f"""SELECT id FROM pagerduty.incidents i WHERE {where} AND NOT EXISTS (
                                SELECT 1 FROM pagerduty.log_entries l
                                 WHERE l.id = i.raw->'first_trigger_log_entry'->>'id' AND l.incident_id = i.id) LIMIT 10""",
                          **params)
    add("first_trigger_log_entry_present", not no_trigger, {"incidents": [r[0] for r in no_trigger]})
    # 7. typed columns agree with raw
    disagree = conn.run(f"""SELECT id FROM pagerduty.incidents i WHERE {where} AND (
            i.id IS DISTINCT FROM i.raw->>'id'
         OR i.incident_number IS DISTINCT FROM (i.raw->>'incident_number')::bigint
         OR i.title IS DISTINCT FROM i.raw->>'title' OR i.status IS DISTINCT FROM i.raw->>'status'
         OR i.urgency IS DISTINCT FROM i.raw->>'urgency'
         OR i.service_id IS DISTINCT FROM i.raw->'service'->>'id'
         OR i.escalation_policy_id IS DISTINCT FROM i.raw->'escalation_policy'->>'id'
         OR i.priority_id IS DISTINCT FROM i.raw->'priority'->>'id'
         OR i.created_at IS DISTINCT FROM (i.raw->>'created_at')::timestamptz
         OR i.updated_at IS DISTINCT FROM (i.raw->>'updated_at')::timestamptz
         OR i.resolved_at IS DISTINCT FROM (i.raw->>'resolved_at')::timestamptz
         OR i.last_status_change_at IS DISTINCT FROM (i.raw->>'last_status_change_at')::timestamptz) LIMIT 10""",
                        **params)
    le_disagree = one(f"""SELECT count(*) FROM pagerduty.log_entries l JOIN pagerduty.incidents i ON i.id = l.incident_id
                          WHERE {where} AND (l.type IS DISTINCT FROM l.raw->>'type'
                             OR l.created_at IS DISTINCT FROM (l.raw->>'created_at')::timestamptz
                             OR l.incident_id IS DISTINCT FROM l.raw->'incident'->>'id')""")
    add("typed_columns_match_raw", not disagree and le_disagree == 0,
        {"incidents": [r[0] for r in disagree], "log_entries": le_disagree})
    # informational: stub references (deleted objects PagerDuty no longer returns)
    stubs = {t: conn.run(f"SELECT count(*) FROM pagerduty.{t} WHERE is_stub OR missing_since IS NOT NULL")[0][0]
             for t in DIMENSIONS}
    add("stub_references", True, {"stub_or_missing_rows": stubs}, blocking=False)

    with transaction(conn):
        for r in results:
            conn.run("""INSERT INTO pagerduty.validation_results (run_id, check_name, passed, blocking, details)
                        VALUES (:r, :n, :p, :b, CAST(:d AS jsonb))
                        ON CONFLICT (run_id, check_name) DO UPDATE SET passed = EXCLUDED.passed,
                            blocking = EXCLUDED.blocking, details = EXCLUDED.details, checked_at = now()""",
                     r=run_id, n=r["name"], p=r["passed"], b=r["blocking"], d=json.dumps(r["details"], default=str))
    return results
