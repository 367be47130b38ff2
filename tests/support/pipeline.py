"""What the tests, the load benchmark and the local run share about the pipeline: its data tables, counting
their rows, and the payload the state machine hands each step."""

from __future__ import annotations

from typing import Any

# The tables the pipeline loads PagerDuty data into (not its bookkeeping: pipeline_runs, validation_results,
# watermarks), in load order.
DATA_TABLES = ["services", "teams", "users", "escalation_policies", "priorities", "incidents",
               "incident_assignments", "incident_teams", "log_entries", "notes", "alerts"]


def row_count(conn: Any, table: str, where: str = "true", **params: Any) -> int:
    """Rows of pagerduty.<table> (matching `where`, with `params` bound) on a pg8000.native connection."""
    return conn.run(f"SELECT count(*) FROM pagerduty.{table} WHERE {where}", **params)[0][0]


def row_counts(conn: Any, tables: list[str] = DATA_TABLES) -> dict[str, int]:
    """Table -> rows, for each of `tables` (the data tables by default)."""
    return {table: row_count(conn, table) for table in tables}


def envelope(inp: Any, name: str = "exec-1", state: str = "Step", state_machine: str = "sm", *,
             started: str | None = None, timeout_seconds: int | None = None) -> dict[str, Any]:
    """The Lambda task's Payload: the execution's identity and state name around the step's input (and, when
    given, the execution's start time and the state machine's timeout, which make its deadline)."""
    out = {"execution_id": f"arn:aws:states:eu-west-2:123456789012:execution:{state_machine}:{name}",
           "execution_name": name, "state_name": state, "input": inp}
    if started is not None:
        out.update(execution_start_time=started, execution_timeout_seconds=timeout_seconds)
    return out


def kept_alerts(account: Any, policy: str = "resolved") -> dict[str, set[tuple[str, str]]]:
    """Incident id -> the (id, status) of the alerts the pipeline stores for it under an alert policy
    (PIPELINE_ALERTS): ``all`` every alert, ``resolved`` those of resolved incidents, ``off`` none."""
    if policy == "off":
        return {}
    return {inc_id: {(a["id"], a["status"]) for a in alerts} for inc_id, alerts in account.alerts.items()
            if alerts and (policy == "all" or account.incidents[inc_id]["status"] == "resolved")}
