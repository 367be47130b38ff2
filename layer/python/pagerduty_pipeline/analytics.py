"""Schema ``analytics``: the views teams load PagerDuty for (docs/analytics.md defines every figure).

Plain views over schema ``pagerduty``, so they are as fresh as the last run and a re-run or a late update needs
no refresh. Migration 6 creates them from the SQL below; that text is a released migration's and must not change:
a change to a view is a new migration (``CREATE OR REPLACE VIEW`` or drop and create) appended after it.

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

# One row per incident. One index scan of the incident's log entries (log_entries_incident_idx) gives every
# log-derived figure; the final resolve entry is then joined by its id.
INCIDENTS_VIEW = f"""
CREATE VIEW analytics.incidents AS
SELECT i.id AS incident_id, i.incident_number, i.title, i.service_id, s.name AS service_name,
       coalesce(tm.team_ids, '{{}}'::text[]) AS team_ids, coalesce(tm.team_names, '{{}}'::text[]) AS team_names,
       i.urgency, p.name AS priority_name, i.status, i.incident_key, i.created_at,
       {_WEEK.format(ts='i.created_at')} AS week_start,
       le.first_ack_at AS first_acknowledged_at, le.first_ack_by AS first_acknowledged_by_id,
       fin.resolved_at,
       CASE WHEN NOT mg.merged THEN extract(epoch FROM le.first_ack_at - i.created_at)::double precision END
         AS seconds_to_first_ack,
       CASE WHEN NOT mg.merged THEN extract(epoch FROM fin.resolved_at - i.created_at)::double precision END
         AS seconds_to_resolve,
       coalesce(le.escalations, 0)::integer AS escalations,
       greatest(coalesce(le.assigns, 0) - 1, 0)::integer AS reassignments,
       coalesce(le.notifications, 0)::integer AS notifications,
       coalesce(le.reopens, 0)::integer AS reopen_count,
       CASE WHEN jsonb_typeof(i.raw -> 'alert_counts' -> 'all') = 'number'
            THEN (i.raw -> 'alert_counts' ->> 'all')::numeric::integer
            ELSE (SELECT count(*) FROM pagerduty.alerts a WHERE a.incident_id = i.id)::integer END AS alert_count,
       CASE WHEN fin.resolved_at IS NULL THEN NULL
            WHEN mg.merged THEN 'merge'
            WHEN lr.id IS NULL THEN 'unknown'
            WHEN lr.channel_type = 'timeout' THEN 'timeout'
            WHEN lr.agent_type IN ('user_reference', 'user') THEN 'user'
            WHEN lr.agent_type LIKE '%inbound_integration%' THEN 'integration'
            ELSE 'service' END AS resolved_by_type,
       ru.id AS resolved_by_id, ru.name AS resolved_by_name,
       mg.merged AS is_merged,
       CASE WHEN mg.merged THEN i.raw -> 'resolve_reason' -> 'incident' ->> 'id' END AS merged_into_incident_id
  FROM pagerduty.incidents i
  LEFT JOIN pagerduty.services s ON s.id = i.service_id
  LEFT JOIN pagerduty.priorities p ON p.id = i.priority_id
  CROSS JOIN LATERAL (
       SELECT coalesce(i.raw -> 'resolve_reason' ->> 'type' = 'merge_resolve_reason', false) AS merged) mg
  LEFT JOIN LATERAL (
       SELECT array_agg(t.id ORDER BY t.id) AS team_ids, array_agg(coalesce(t.name, t.id) ORDER BY t.id) AS team_names
         FROM pagerduty.incident_teams it JOIN pagerduty.teams t ON t.id = it.team_id
        WHERE it.incident_id = i.id) tm ON true
  LEFT JOIN LATERAL (
       SELECT min(x.created_at) FILTER (WHERE x.type = 'acknowledge_log_entry') AS first_ack_at,
              (array_agg(x.agent_id ORDER BY x.created_at, x.id)
                 FILTER (WHERE x.type = 'acknowledge_log_entry'))[1] AS first_ack_by,
              (array_agg(x.id ORDER BY x.created_at DESC, x.id DESC)
                 FILTER (WHERE x.type = 'resolve_log_entry'))[1] AS last_resolve_id,
              max(x.created_at) FILTER (WHERE x.type = 'resolve_log_entry') AS last_resolve_at,
              count(*) FILTER (WHERE x.type = 'escalate_log_entry') AS escalations,
              count(*) FILTER (WHERE x.type = 'assign_log_entry') AS assigns,
              count(*) FILTER (WHERE x.type = 'notify_log_entry') AS notifications,
              count(*) FILTER (WHERE x.type = 'trigger_log_entry' AND x.created_at > x.first_resolve_at) AS reopens
         FROM (SELECT l.id, l.type, l.created_at, l.agent_id,
                      min(l.created_at) FILTER (WHERE l.type = 'resolve_log_entry') OVER () AS first_resolve_at
                 FROM pagerduty.log_entries l
                WHERE l.incident_id = i.id) x) le ON true
  CROSS JOIN LATERAL (
       SELECT CASE WHEN i.status = 'resolved' THEN coalesce(le.last_resolve_at, i.resolved_at) END AS resolved_at) fin
  LEFT JOIN pagerduty.log_entries lr ON lr.id = le.last_resolve_id AND i.status = 'resolved'
  LEFT JOIN pagerduty.users ru
         ON ru.id = lr.agent_id AND lr.agent_type IN ('user_reference', 'user') AND NOT mg.merged
        AND lr.channel_type IS DISTINCT FROM 'timeout'
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


def _weekly_view(name: str, keys: str, source: str = "analytics.incidents f") -> str:
    """A view of the weekly figures grouped by week and ``keys`` (columns of ``source``)."""
    columns = "f.week_start" + (f", {keys}" if keys else "")
    return (f"CREATE VIEW analytics.{name} AS\nSELECT {columns},{WEEKLY_FIGURES}\n  FROM {source}\n"
            f" GROUP BY {columns}")


ACCOUNT_WEEKLY_VIEW = _weekly_view("account_weekly", "")
SERVICE_WEEKLY_VIEW = _weekly_view("service_weekly", "f.service_id, f.service_name")
TEAM_WEEKLY_VIEW = _weekly_view(
    "team_weekly", "t.team_id, t.team_name",
    "analytics.incidents f CROSS JOIN LATERAL unnest(f.team_ids, f.team_names) AS t (team_id, team_name)")

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
       SELECT l.raw -> 'user' ->> 'id', 'notified', l.incident_id, l.created_at
         FROM pagerduty.log_entries l
        WHERE l.type = 'notify_log_entry' AND l.raw -> 'user' ->> 'id' IS NOT NULL),
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
       sum(f.alert_count)::double precision / count(*) AS alerts_per_incident,
       count(*) FILTER (WHERE {_NOT_MERGED} AND f.seconds_to_resolve <= 300) AS resolved_within_5m,
       count(*) FILTER (WHERE f.key_seen_before) AS repeated_key_incidents
  FROM (SELECT f.*, f.incident_key IS NOT NULL
                    AND row_number() OVER (PARTITION BY f.service_id, f.incident_key
                                               ORDER BY f.created_at, f.incident_id) > 1 AS key_seen_before
          FROM analytics.incidents f) f
 GROUP BY f.week_start, f.service_id, f.service_name"""

# Migration 6's statements (migrations.py): a released migration's text, never edited.
# The schema itself is created by migrate() as the master user, like schema pagerduty (the owner role has no
# CREATE on the database).
MIGRATION_6 = [
    # the final resolve entry, the first acknowledgement and the notifications of one incident without a heap
    # visit for each of its other entries (bench/analytics_views.py compares with and without)
    """CREATE INDEX log_entries_incident_type_idx ON pagerduty.log_entries (incident_id, type, created_at)""",
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
