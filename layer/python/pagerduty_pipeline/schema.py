"""Where each loaded column is defined: its PostgreSQL type and how it is read from the API object.

The loaders build their statements from these tables, and a test compares the migrated catalog with them, so a
column is written here once (released migrations stay append-only; a new column is a new migration plus a line
here). Write rules, named as in dlt:
- dimensions and incidents **merge** (incidents: the newest ``updated_at`` wins);
- log entries are **insert-only** (immutable upstream);
- notes and alerts **merge when ``raw`` differs**;
- assignments and teams are **replaced** with their incident.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

Getter = Callable[[dict], Any]


def ref_id(obj: Any) -> str | None:
    """The id of an embedded object or reference, None when there is none."""
    return obj.get("id") if isinstance(obj, dict) and isinstance(obj.get("id"), str) else None


def _field(key: str) -> Getter:
    return lambda obj: obj.get(key)


def _name(obj: dict) -> Any:
    return obj.get("name") or obj.get("summary")


def _ref_field(key: str) -> Getter:
    return lambda obj: ref_id(obj.get(key))


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # PostgreSQL type, as jsonb_to_recordset reads it
    get: Getter | None = None  # reads the value from the API object (None: filled by the loader)


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]

    @property
    def typed(self) -> list[tuple[str, str]]:
        return [(c.name, c.type) for c in self.columns]

    def row(self, obj: dict, **values: Any) -> dict:
        """The table row of an API object; ``values`` fill (or override) the loader's columns."""
        out = {c.name: c.get(obj) for c in self.columns if c.get is not None}
        out.update(values)
        return out


_DIMENSION_TAIL = (Column("is_stub", "boolean"), Column("missing_since", "timestamptz"), Column("raw", "jsonb"))

DIMENSION_TABLES: dict[str, Table] = {  # in foreign-key-safe order
    "teams": Table("teams", (Column("id", "text", _field("id")), Column("name", "text", _name),
                             Column("description", "text", _field("description")), *_DIMENSION_TAIL)),
    "users": Table("users", (Column("id", "text", _field("id")), Column("name", "text", _name),
                             Column("email", "text", _field("email")), Column("role", "text", _field("role")),
                             Column("time_zone", "text", _field("time_zone")), *_DIMENSION_TAIL)),
    "escalation_policies": Table("escalation_policies", (Column("id", "text", _field("id")),
                                                         Column("name", "text", _name), *_DIMENSION_TAIL)),
    "priorities": Table("priorities", (
        Column("id", "text", _field("id")), Column("name", "text", _name),
        Column("description", "text", _field("description")), Column("color", "text", _field("color")),
        Column("priority_order", "integer", lambda o: o.get("order") if isinstance(o.get("order"), int) else None),
        *_DIMENSION_TAIL)),
    "services": Table("services", (
        Column("id", "text", _field("id")), Column("name", "text", _name),
        Column("description", "text", _field("description")), Column("status", "text", _field("status")),
        Column("escalation_policy_id", "text", _ref_field("escalation_policy")),
        Column("created_at", "timestamptz", _field("created_at")), *_DIMENSION_TAIL)),
}
DIMENSIONS = tuple(DIMENSION_TABLES)

# The API path and response key of each dimension's list (and of one object: /<path>/{id} -> {<singular>: …}).
DIMENSION_ENDPOINTS = {"teams": ("/teams", "team"), "users": ("/users", "user"),
                       "escalation_policies": ("/escalation_policies", "escalation_policy"),
                       "priorities": ("/priorities", "priority"), "services": ("/services", "service")}

INCIDENTS = Table("incidents", (
    Column("id", "text", _field("id")), Column("incident_number", "bigint", _field("incident_number")),
    Column("title", "text", _field("title")), Column("status", "text", _field("status")),
    Column("urgency", "text", _field("urgency")), Column("service_id", "text", _ref_field("service")),
    Column("escalation_policy_id", "text", _ref_field("escalation_policy")),
    Column("priority_id", "text", _ref_field("priority")), Column("created_at", "timestamptz", _field("created_at")),
    Column("updated_at", "timestamptz", _field("updated_at")),
    Column("resolved_at", "timestamptz", _field("resolved_at")),
    Column("last_status_change_at", "timestamptz", _field("last_status_change_at")),
    Column("incident_key", "text", _field("incident_key")), Column("raw", "jsonb")))

INCIDENT_ASSIGNMENTS = Table("incident_assignments", (
    Column("incident_id", "text"), Column("user_id", "text"), Column("assigned_at", "timestamptz")))
INCIDENT_TEAMS = Table("incident_teams", (Column("incident_id", "text"), Column("team_id", "text")))


def _agent(key: str) -> Getter:
    return lambda entry: entry["agent"].get(key) if isinstance(entry.get("agent"), dict) else None


LOG_ENTRIES = Table("log_entries", (
    Column("id", "text", _field("id")), Column("incident_id", "text"), Column("type", "text", _field("type")),
    Column("created_at", "timestamptz", _field("created_at")), Column("agent_type", "text", _agent("type")),
    Column("agent_id", "text", _agent("id")),
    Column("channel_type", "text", lambda e: e["channel"].get("type") if isinstance(e.get("channel"), dict) else None),
    Column("raw", "jsonb")))
# Set when the incident's notes were fetched after this annotate entry was stored (migration 3): which entries
# still wait for their note is decided by ids, not by comparing counts.
NOTE_FETCHED_AT = Column("note_fetched_at", "timestamptz")

NOTES = Table("notes", (
    Column("id", "text", _field("id")), Column("incident_id", "text"), Column("user_id", "text", _ref_field("user")),
    Column("content", "text", _field("content")), Column("created_at", "timestamptz", _field("created_at")),
    Column("raw", "jsonb")))
ALERTS = Table("alerts", (
    Column("id", "text", _field("id")), Column("incident_id", "text"), Column("status", "text", _field("status")),
    Column("alert_key", "text", _field("alert_key")), Column("severity", "text", _field("severity")),
    Column("service_id", "text", _ref_field("service")), Column("created_at", "timestamptz", _field("created_at")),
    Column("raw", "jsonb")))

DATA_TABLES: tuple[Table, ...] = (*DIMENSION_TABLES.values(), INCIDENTS, INCIDENT_ASSIGNMENTS, INCIDENT_TEAMS,
                                  LOG_ENTRIES, NOTES, ALERTS)
# Columns a migration adds beside a table's loaded columns (the catalog test expects them too).
# Columns PostgreSQL computes from an incident's raw document for the analytics views (migration 6; generated,
# never written by the loader).
INCIDENT_GENERATED_COLUMNS = (Column("alert_count", "integer"), Column("is_merged", "boolean"),
                              Column("merged_into_incident_id", "text"))
EXTRA_COLUMNS = {"log_entries": (NOTE_FETCHED_AT,), "incidents": INCIDENT_GENERATED_COLUMNS}

# Log entry types that set an incident's status, and the status each sets (used by the status check).
STATUS_LOG_ENTRIES = {"trigger_log_entry": "triggered", "unacknowledge_log_entry": "triggered",
                      "acknowledge_log_entry": "acknowledged", "snooze_log_entry": "acknowledged",
                      "resolve_log_entry": "resolved"}
STATUSES = ("triggered", "acknowledged", "resolved")
URGENCIES = ("high", "low")
