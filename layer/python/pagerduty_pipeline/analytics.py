"""Schema ``analytics``: the views teams load PagerDuty for (docs/analytics.md defines every figure).

Plain views over schema ``pagerduty``, so they are as fresh as the last run and a re-run or a late update needs
no refresh; what they need from the log is kept, in the loader's own transaction, by a trigger on
``pagerduty.log_entries`` (``incident_log_facts``, ``notifications``), and what they need from an incident's raw
document by generated columns. Migration 6 creates them from the SQL below; that text is a released migration's
and must not change: a change to a view is a new migration (``CREATE OR REPLACE VIEW`` or drop and create)
appended after it. Columns a query does not select are not computed (the view is flattened into the query and its
left joins to unique keys are removed), so ``team_ids``/``team_names`` cost nothing to a query that needs no teams.

Everything is computed from the incident as it is now and its log entries (insert-only), never from the fields
that only show the current state (``acknowledgements`` and ``assignments`` are emptied at resolution).

The working hours (``analytics.working_hours``, one row) are a setting of the stack (``analytics`` in
``modules/settings.py``); step 1 writes them on every run with :func:`apply_working_hours`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import time

from . import roles
from .errors import ConfigError

SCHEMA = "analytics"

# The views in dependency order, as migration 6 creates them (tests compare the catalog with this list).
VIEWS = ("incidents", "account_weekly", "service_weekly", "team_weekly", "responder_weekly", "noisy_services")

_WEEK = "(date_trunc('week', {ts} AT TIME ZONE 'UTC'))::date"  # ISO week, Monday 00:00 UTC

# What analytics.incidents needs from an incident's log, one row per incident, kept by a trigger on
# pagerduty.log_entries (below). Reading 1.2 million log entries (2 GB with their raw documents) on every query
# took 5-8 s at 200,000 incidents; this table answers the same in well under a second (bench/analytics_views.py).
# Log entries are insert-only (the one UPDATE the loader makes, note_fetched_at, touches nothing read here) and
# go with their incident (ON DELETE CASCADE), so an INSERT trigger keeps the facts exact; re-runs insert nothing
# new and change nothing.
LOG_FACTS_TABLE = """
CREATE TABLE analytics.incident_log_facts (
    incident_id text PRIMARY KEY REFERENCES pagerduty.incidents (id) ON DELETE CASCADE,
    first_ack_at timestamptz,
    first_ack_by text,
    first_resolve_at timestamptz,
    last_resolve_at timestamptz,
    last_resolve_agent_type text,
    last_resolve_agent_id text,
    last_resolve_channel_type text,
    escalations integer NOT NULL,
    assigns integer NOT NULL,
    notifications integer NOT NULL,
    reopens integer NOT NULL)"""

# What the views need from an incident's raw document, as stored columns (computed on every write): reading the
# document per row carried ~1 KB of JSON through every sort and join. Guarded, so an odd record (a count that is
# not a number, or out of range; a resolve_reason of another shape) gives NULL rather than a failed load.
INCIDENT_COLUMNS = """
ALTER TABLE pagerduty.incidents
  ADD COLUMN alert_count integer GENERATED ALWAYS AS (
      CASE WHEN jsonb_typeof(raw -> 'alert_counts' -> 'all') = 'number'
                AND (raw -> 'alert_counts' -> 'all')::numeric BETWEEN 0 AND 2147483647
           THEN round((raw -> 'alert_counts' -> 'all')::numeric)::integer END) STORED,
  ADD COLUMN is_merged boolean GENERATED ALWAYS AS (
      coalesce(raw -> 'resolve_reason' ->> 'type' = 'merge_resolve_reason', false)) STORED,
  ADD COLUMN merged_into_incident_id text GENERATED ALWAYS AS (
      CASE WHEN raw -> 'resolve_reason' ->> 'type' = 'merge_resolve_reason'
           THEN raw -> 'resolve_reason' -> 'incident' ->> 'id' END) STORED"""

# The notify entries with the user they went to (the entry's raw ``user``), for responder_weekly.
NOTIFICATIONS_TABLE = """
CREATE TABLE analytics.notifications (
    log_entry_id text PRIMARY KEY REFERENCES pagerduty.log_entries (id) ON DELETE CASCADE,
    incident_id text NOT NULL,
    user_id text NOT NULL,
    created_at timestamptz NOT NULL)"""

# Recompute the facts of the given incidents from all their log entries (first acknowledgement: ties by the smaller
# id; final resolve entry: ties by the larger id; reopens: triggers after the first resolve entry). The owner's
# rights: the loader, whose inserts fire it, has no privilege in schema analytics.
REFRESH_FUNCTION = """
CREATE FUNCTION analytics.refresh_incident_log_facts(p_incident_ids text[]) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
  INSERT INTO analytics.incident_log_facts AS f
  SELECT l.incident_id,
         min(l.created_at) FILTER (WHERE l.type = 'acknowledge_log_entry'),
         (array_agg(l.agent_id ORDER BY l.created_at, l.id) FILTER (WHERE l.type = 'acknowledge_log_entry'))[1],
         min(l.created_at) FILTER (WHERE l.type = 'resolve_log_entry'),
         max(l.created_at) FILTER (WHERE l.type = 'resolve_log_entry'),
         (array_agg(l.agent_type ORDER BY l.created_at DESC, l.id DESC)
            FILTER (WHERE l.type = 'resolve_log_entry'))[1],
         (array_agg(l.agent_id ORDER BY l.created_at DESC, l.id DESC)
            FILTER (WHERE l.type = 'resolve_log_entry'))[1],
         (array_agg(l.channel_type ORDER BY l.created_at DESC, l.id DESC)
            FILTER (WHERE l.type = 'resolve_log_entry'))[1],
         count(*) FILTER (WHERE l.type = 'escalate_log_entry'),
         count(*) FILTER (WHERE l.type = 'assign_log_entry'),
         count(*) FILTER (WHERE l.type = 'notify_log_entry'),
         count(*) FILTER (WHERE l.type = 'trigger_log_entry' AND l.created_at > l.first_resolve)
    FROM (SELECT e.incident_id, e.id, e.type, e.created_at, e.agent_type, e.agent_id, e.channel_type,
                 min(e.created_at) FILTER (WHERE e.type = 'resolve_log_entry')
                   OVER (PARTITION BY e.incident_id) AS first_resolve
            FROM pagerduty.log_entries e
           WHERE e.incident_id = ANY (p_incident_ids)) l
   GROUP BY l.incident_id
  ON CONFLICT (incident_id) DO UPDATE
     SET first_ack_at = EXCLUDED.first_ack_at, first_ack_by = EXCLUDED.first_ack_by,
         first_resolve_at = EXCLUDED.first_resolve_at, last_resolve_at = EXCLUDED.last_resolve_at,
         last_resolve_agent_type = EXCLUDED.last_resolve_agent_type,
         last_resolve_agent_id = EXCLUDED.last_resolve_agent_id,
         last_resolve_channel_type = EXCLUDED.last_resolve_channel_type, escalations = EXCLUDED.escalations,
         assigns = EXCLUDED.assigns, notifications = EXCLUDED.notifications, reopens = EXCLUDED.reopens
   WHERE f IS DISTINCT FROM EXCLUDED
$fn$"""

LOG_TRIGGER_FUNCTION = """
CREATE FUNCTION analytics.log_entries_inserted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  PERFORM analytics.refresh_incident_log_facts(ARRAY(SELECT DISTINCT n.incident_id FROM inserted n));
  INSERT INTO analytics.notifications (log_entry_id, incident_id, user_id, created_at)
  SELECT n.id, n.incident_id, n.raw -> 'user' ->> 'id', n.created_at
    FROM inserted n
   WHERE n.type = 'notify_log_entry' AND n.raw -> 'user' ->> 'id' IS NOT NULL
  ON CONFLICT (log_entry_id) DO NOTHING;
  RETURN NULL;
END
$fn$"""

LOG_TRIGGER = """
CREATE TRIGGER analytics_log_facts AFTER INSERT ON pagerduty.log_entries
REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION analytics.log_entries_inserted()"""

# What the log held before the trigger existed (a deployment older than migration 6).
BACKFILL = [
    "SELECT analytics.refresh_incident_log_facts(ARRAY(SELECT DISTINCT incident_id FROM pagerduty.log_entries))",
    """INSERT INTO analytics.notifications (log_entry_id, incident_id, user_id, created_at)
       SELECT l.id, l.incident_id, l.raw -> 'user' ->> 'id', l.created_at FROM pagerduty.log_entries l
        WHERE l.type = 'notify_log_entry' AND l.raw -> 'user' ->> 'id' IS NOT NULL""",
]

# One row per incident: the incident, its names, and its log facts.
INCIDENTS_VIEW = f"""
CREATE VIEW analytics.incidents AS
SELECT i.id AS incident_id, i.incident_number, i.title, i.service_id, s.name AS service_name,
       ARRAY(SELECT t.id FROM pagerduty.incident_teams it JOIN pagerduty.teams t ON t.id = it.team_id
              WHERE it.incident_id = i.id ORDER BY t.id) AS team_ids,
       ARRAY(SELECT coalesce(t.name, t.id)
               FROM pagerduty.incident_teams it JOIN pagerduty.teams t ON t.id = it.team_id
              WHERE it.incident_id = i.id ORDER BY t.id) AS team_names,
       i.urgency, p.name AS priority_name, i.status, i.incident_key, i.created_at,
       {_WEEK.format(ts='i.created_at')} AS week_start,
       lf.first_ack_at AS first_acknowledged_at, lf.first_ack_by AS first_acknowledged_by_id,
       fin.resolved_at,
       CASE WHEN NOT i.is_merged THEN extract(epoch FROM lf.first_ack_at - i.created_at)::double precision END
         AS seconds_to_first_ack,
       CASE WHEN NOT i.is_merged THEN extract(epoch FROM fin.resolved_at - i.created_at)::double precision END
         AS seconds_to_resolve,
       coalesce(lf.escalations, 0) AS escalations,
       greatest(coalesce(lf.assigns, 0) - 1, 0) AS reassignments,
       coalesce(lf.notifications, 0) AS notifications,
       coalesce(lf.reopens, 0) AS reopen_count,
       i.alert_count,
       CASE WHEN fin.resolved_at IS NULL THEN NULL
            WHEN i.is_merged THEN 'merge'
            WHEN lf.last_resolve_at IS NULL THEN 'unknown'
            WHEN lf.last_resolve_channel_type = 'timeout' THEN 'timeout'
            WHEN lf.last_resolve_agent_type IN ('user_reference', 'user') THEN 'user'
            WHEN lf.last_resolve_agent_type LIKE '%inbound_integration%' THEN 'integration'
            ELSE 'service' END AS resolved_by_type,
       ru.id AS resolved_by_id, ru.name AS resolved_by_name,
       i.is_merged, i.merged_into_incident_id
  FROM pagerduty.incidents i
  LEFT JOIN pagerduty.services s ON s.id = i.service_id
  LEFT JOIN pagerduty.priorities p ON p.id = i.priority_id
  LEFT JOIN analytics.incident_log_facts lf ON lf.incident_id = i.id
  CROSS JOIN LATERAL (
       SELECT CASE WHEN i.status = 'resolved' THEN coalesce(lf.last_resolve_at, i.resolved_at) END AS resolved_at
       ) fin
  LEFT JOIN pagerduty.users ru
         ON ru.id = lf.last_resolve_agent_id AND i.status = 'resolved' AND NOT i.is_merged
        AND lf.last_resolve_agent_type IN ('user_reference', 'user')
        AND lf.last_resolve_channel_type IS DISTINCT FROM 'timeout'
"""

# The weekly figures over a group of analytics.incidents rows (alias f): docs/analytics.md, "Definitions".
_NOT_MERGED = "NOT f.is_merged"
WEEKLY_FIGURES = f"""
       count(*) AS incidents,
       count(*) FILTER (WHERE f.urgency = 'high') AS high_urgency,
       count(*) FILTER (WHERE f.urgency = 'low') AS low_urgency,
       count(*) FILTER (WHERE f.urgency IS NULL OR f.urgency NOT IN ('high', 'low')) AS unknown_urgency,
       count(*) FILTER (WHERE f.is_merged) AS merged,
       count(*) FILTER (WHERE {_NOT_MERGED} AND f.first_acknowledged_at IS NOT NULL) AS acknowledged,
       count(*) FILTER (WHERE {_NOT_MERGED} AND f.resolved_at IS NOT NULL) AS resolved,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY f.seconds_to_first_ack) FILTER (WHERE {_NOT_MERGED})
         AS ack_p50_seconds,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY f.seconds_to_first_ack) FILTER (WHERE {_NOT_MERGED})
         AS ack_p90_seconds,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY f.seconds_to_resolve) FILTER (WHERE {_NOT_MERGED})
         AS resolve_p50_seconds,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY f.seconds_to_resolve) FILTER (WHERE {_NOT_MERGED})
         AS resolve_p90_seconds,
       count(*) FILTER (WHERE {_NOT_MERGED} AND f.seconds_to_first_ack <= 300)::double precision
         / nullif(count(*) FILTER (WHERE {_NOT_MERGED}), 0) AS acked_within_5m_share,
       count(*) FILTER (WHERE {_NOT_MERGED} AND f.seconds_to_first_ack <= 900)::double precision
         / nullif(count(*) FILTER (WHERE {_NOT_MERGED}), 0) AS acked_within_15m_share,
       count(*) FILTER (WHERE {_NOT_MERGED} AND f.resolved_at IS NOT NULL AND f.first_acknowledged_at IS NULL)
         ::double precision
         / nullif(count(*) FILTER (WHERE {_NOT_MERGED} AND f.resolved_at IS NOT NULL), 0)
         AS resolved_without_ack_share"""


def _weekly_view(name: str, keys: dict[str, str], source: str = "analytics.incidents f") -> str:
    """A view of the weekly figures grouped by week and ``keys`` (column name -> expression over ``source``)."""
    columns = "".join(f", {expr} AS {alias}" for alias, expr in keys.items())
    groups = "".join(f", {expr}" for expr in keys.values())
    return (f"CREATE VIEW analytics.{name} AS\nSELECT f.week_start{columns},{WEEKLY_FIGURES}\n  FROM {source}\n"
            f" GROUP BY f.week_start{groups}")


ACCOUNT_WEEKLY_VIEW = _weekly_view("account_weekly", {})
SERVICE_WEEKLY_VIEW = _weekly_view("service_weekly", {"service_id": "f.service_id", "service_name": "f.service_name"})
# The teams joined, not analytics.incidents' team arrays, so that a query needing no teams never computes them.
TEAM_WEEKLY_VIEW = _weekly_view(
    "team_weekly", {"team_id": "t.id", "team_name": "coalesce(t.name, t.id)"},
    "analytics.incidents f JOIN pagerduty.incident_teams it ON it.incident_id = f.incident_id\n"
    "  JOIN pagerduty.teams t ON t.id = it.team_id")

WORKING_HOURS_TABLE = """
CREATE TABLE analytics.working_hours (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    working_days smallint[] NOT NULL DEFAULT '{1,2,3,4,5}'
        CHECK (working_days <@ '{1,2,3,4,5,6,7}'::smallint[] AND cardinality(working_days) > 0),
    day_starts time NOT NULL DEFAULT '09:00',
    day_ends time NOT NULL DEFAULT '17:00',
    default_time_zone text NOT NULL DEFAULT 'UTC',
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (day_starts < day_ends))"""

# A user's time zone if PostgreSQL knows it as an IANA name, else the fallback. Once per user (the zones CTE
# below), not per event; pg_timezone_names would read the whole zone database on every query (~2 s here).
# An unknown name raises invalid_parameter_value (22023); abbreviations and POSIX strings ("EST", "UTC+3", whose
# sign PostgreSQL reads inverted) are not names PagerDuty gives and are refused by the pattern.
TIME_ZONE_FUNCTION = """
CREATE FUNCTION analytics.time_zone_or(p_zone text, p_fallback text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  IF p_zone IS NULL OR p_zone !~ '^[A-Za-z][A-Za-z_]*(/[A-Za-z0-9_+-]+)*$' THEN
    RETURN p_fallback;
  END IF;
  PERFORM pg_catalog.now() AT TIME ZONE p_zone;
  RETURN p_zone;
EXCEPTION WHEN invalid_parameter_value THEN
  RETURN p_fallback;
END
$fn$"""

# Acknowledgements by a user (distinct incidents a week), final resolutions by a user, notifications to a user
# (the entry's ``user``), each in the week it happened; off-hours in the user's own valid time zone, else the
# setting's default.
RESPONDER_WEEKLY_VIEW = f"""
CREATE VIEW analytics.responder_weekly AS
WITH hours AS (SELECT working_days, day_starts, day_ends, default_time_zone FROM analytics.working_hours LIMIT 1),
     events AS (
       SELECT l.agent_id AS user_id, 'acknowledged' AS kind, l.incident_id, l.created_at
         FROM pagerduty.log_entries l
        WHERE l.type = 'acknowledge_log_entry' AND l.agent_type IN ('user_reference', 'user')
          AND l.agent_id IS NOT NULL
       UNION ALL
       SELECT f.resolved_by_id, 'resolved', f.incident_id, f.resolved_at
         FROM analytics.incidents f
        WHERE f.resolved_by_type = 'user' AND f.resolved_by_id IS NOT NULL
       UNION ALL
       SELECT n.user_id, 'notified', n.incident_id, n.created_at FROM analytics.notifications n),
     zones AS (
       SELECT u.id, u.name, analytics.time_zone_or(u.time_zone, h.default_time_zone) AS zone
         FROM pagerduty.users u CROSS JOIN hours h)
SELECT {_WEEK.format(ts='e.created_at')} AS week_start, e.user_id, z.name AS user_name, loc.zone AS time_zone,
       count(DISTINCT e.incident_id) FILTER (WHERE e.kind = 'acknowledged') AS acknowledged,
       count(*) FILTER (WHERE e.kind = 'resolved') AS resolved,
       count(*) FILTER (WHERE e.kind = 'notified') AS notifications,
       count(*) FILTER (WHERE e.kind = 'notified' AND NOT (
           extract(isodow FROM loc.at)::smallint = ANY (h.working_days)
           AND loc.at::time >= h.day_starts AND loc.at::time < h.day_ends)) AS notifications_off_hours
  FROM events e
 CROSS JOIN hours h
  LEFT JOIN zones z ON z.id = e.user_id
 CROSS JOIN LATERAL (SELECT coalesce(z.zone, h.default_time_zone) AS zone,
                            e.created_at AT TIME ZONE coalesce(z.zone, h.default_time_zone) AS at) loc
 GROUP BY 1, e.user_id, z.name, loc.zone"""

NOISY_SERVICES_VIEW = f"""
CREATE VIEW analytics.noisy_services AS
SELECT f.week_start, f.service_id, f.service_name, count(*) AS incidents, sum(f.alert_count) AS alerts,
       avg(f.alert_count)::double precision AS alerts_per_incident,
       count(*) FILTER (WHERE {_NOT_MERGED} AND f.seconds_to_resolve <= 300) AS resolved_within_5m,
       count(*) FILTER (WHERE f.key_seen_before) AS repeated_key_incidents
  FROM (SELECT f.week_start, f.service_id, f.service_name, f.alert_count, f.is_merged, f.seconds_to_resolve,
               f.incident_key IS NOT NULL
                    AND row_number() OVER (PARTITION BY f.service_id, f.incident_key
                                               ORDER BY f.created_at, f.incident_id) > 1 AS key_seen_before
          FROM analytics.incidents f) f
 GROUP BY f.week_start, f.service_id, f.service_name"""

# Migration 6's statements (migrations.py): a released migration's text, never edited.
# The schema itself is created by migrate() as the master user, like schema pagerduty (the owner role has no
# CREATE on the database).
MIGRATION_6 = [
    # responder_weekly's acknowledgements without reading the raw documents (bench/analytics_views.py compares)
    """CREATE INDEX log_entries_acknowledgements_idx ON pagerduty.log_entries (created_at)
         INCLUDE (incident_id, agent_type, agent_id) WHERE type = 'acknowledge_log_entry'""",
    INCIDENT_COLUMNS,
    LOG_FACTS_TABLE,
    NOTIFICATIONS_TABLE,
    "CREATE INDEX notifications_user_idx ON analytics.notifications (user_id, created_at)",
    REFRESH_FUNCTION,
    LOG_TRIGGER_FUNCTION,
    LOG_TRIGGER,
    *BACKFILL,
    WORKING_HOURS_TABLE,
    "INSERT INTO analytics.working_hours DEFAULT VALUES",
    TIME_ZONE_FUNCTION,
    INCIDENTS_VIEW,
    ACCOUNT_WEEKLY_VIEW,
    SERVICE_WEEKLY_VIEW,
    TEAM_WEEKLY_VIEW,
    RESPONDER_WEEKLY_VIEW,
    NOISY_SERVICES_VIEW,
    f"GRANT USAGE ON SCHEMA {SCHEMA} TO {roles.READER}",
    f"GRANT SELECT ON ALL TABLES IN SCHEMA {SCHEMA} TO {roles.READER}",
    f"ALTER DEFAULT PRIVILEGES FOR ROLE {roles.OWNER} IN SCHEMA {SCHEMA} GRANT SELECT ON TABLES TO {roles.READER}",
    # whoever queries a view needs EXECUTE on the functions it calls (CREATE VIEW's documentation)
    f"GRANT EXECUTE ON FUNCTION analytics.time_zone_or(text, text) TO {roles.READER}",
]


@dataclass(frozen=True)
class WorkingHours:
    """The working-hours setting: ISO weekdays worked, the local day's start and end, the fallback time zone."""

    working_days: tuple[int, ...] = (1, 2, 3, 4, 5)
    day_starts: time = time(9, 0)
    day_ends: time = time(17, 0)
    default_time_zone: str = "UTC"

    @classmethod
    def from_env(cls, value: str | None) -> "WorkingHours":
        """Read ``ANALYTICS_WORKING_HOURS`` (the stack's JSON: working_days, day_starts, day_ends,
        default_time_zone; missing keys keep their defaults). Raises ValueError naming what is wrong."""
        if not value:
            return cls()
        try:
            data = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"ANALYTICS_WORKING_HOURS is not JSON: {exc}") from None
        if not isinstance(data, dict) or set(data) - {"working_days", "day_starts", "day_ends", "default_time_zone"}:
            raise ValueError("ANALYTICS_WORKING_HOURS must be an object with working_days, day_starts, day_ends "
                             "and default_time_zone")
        days = tuple(data.get("working_days", cls.working_days))
        if not days or any(not isinstance(d, int) or isinstance(d, bool) or not 1 <= d <= 7 for d in days):
            raise ValueError("ANALYTICS_WORKING_HOURS.working_days must list ISO weekdays 1 (Monday) to 7 (Sunday)")
        starts = _clock(data.get("day_starts", "09:00"), "day_starts")
        ends = _clock(data.get("day_ends", "17:00"), "day_ends")
        if starts >= ends:
            raise ValueError("ANALYTICS_WORKING_HOURS.day_starts must be earlier than day_ends")
        zone = data.get("default_time_zone", cls.default_time_zone)
        if not isinstance(zone, str) or not zone:
            raise ValueError("ANALYTICS_WORKING_HOURS.default_time_zone must be a time zone name")
        return cls(tuple(sorted(set(days))), starts, ends, zone)


def _clock(value: object, key: str) -> time:
    if not isinstance(value, str) or not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
        raise ValueError(f"ANALYTICS_WORKING_HOURS.{key} must be a time of day HH:MM, got {value!r}")
    return time.fromisoformat(value)


def apply_working_hours(conn, hours: WorkingHours) -> bool:
    """Write the setting into ``analytics.working_hours`` as the schema's owner (on the master's connection,
    after the migrations); returns whether it changed. An unknown time zone is refused and nothing changes."""
    previous = roles.current_role_setting(conn)
    roles.set_role(conn, roles.OWNER)
    try:
        if not conn.run("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_timezone_names WHERE name = :z)",
                        z=hours.default_time_zone)[0][0]:
            raise ConfigError(f"ANALYTICS_WORKING_HOURS.default_time_zone {hours.default_time_zone!r} is not a "
                              "time zone this PostgreSQL knows", variable="ANALYTICS_WORKING_HOURS")
        rows = conn.run("""UPDATE analytics.working_hours
                              SET working_days = CAST(:days AS smallint[]), day_starts = :starts, day_ends = :ends,
                                  default_time_zone = :zone, updated_at = now()
                            WHERE (working_days, day_starts, day_ends, default_time_zone)
                                  IS DISTINCT FROM (CAST(:days AS smallint[]), CAST(:starts AS time),
                                                    CAST(:ends AS time), CAST(:zone AS text))
                           RETURNING 1""",
                        days=list(hours.working_days), starts=hours.day_starts, ends=hours.day_ends,
                        zone=hours.default_time_zone)
        return bool(rows)
    finally:
        roles.set_role(conn, previous)
