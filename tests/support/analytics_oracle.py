"""What the views of schema ``analytics`` must show, reckoned independently from a fake PagerDuty account.

docs/analytics.md is the contract. This module reads it a second time, in Python, from the :class:`Account` of
tests/support/fake_pagerduty.py: the incidents, log entries, users, services, teams and alerts the fake API
serves. It never reads the database and shares nothing with the views' SQL, so a view and the oracle agree only
when both follow the spec (percentiles are interpolated here, time zones come from ``zoneinfo``).

    from tests.support.analytics_oracle import WorkingHours, expected_views, differences
    want = expected_views(account)                       # view name -> key -> {column: value}
    want = expected_views(account, WorkingHours(working_days=(1, 2, 3, 4), day_ends=time(16)))
    want = expected_views(account, loaded_since=since)   # what runs loading [since, now) stored: older log
                                                         # entries missing, older incidents only if logged since
    assert not differences(want["service_weekly"], got)  # got: rows read from the view, keyed alike

Keys: ``incidents`` by incident id, ``account_weekly`` by ``week_start`` (a ``date``), ``service_weekly`` and
``noisy_services`` by ``(week_start, service_id)``, ``team_weekly`` by ``(week_start, team_id)``,
``responder_weekly`` by ``(week_start, user_id)`` (:data:`KEYS`). Each row holds every column of its view (the
key columns too), in the spec's order (:data:`COLUMNS`). Times are aware UTC datetimes, shares fractions.

How the oracle reads what the spec leaves open (the code marks some with ``reading:``):
- merged incidents have no ``seconds_to_first_ack`` / ``seconds_to_resolve`` (NULL) in ``analytics.incidents``:
  they are "left out of every time figure"; their ``first_acknowledged_at`` and ``resolved_at`` stay;
- ``resolved_by_id`` / ``resolved_by_name`` are set only when ``resolved_by_type`` is ``user``;
- ``first_acknowledged_by_id`` is the first acknowledgement's agent id, whatever the agent;
- "within 300 s / 900 s" includes 300 s / 900 s exactly; ``resolved_within_5m`` likewise;
- a responder's ``resolved`` counts incidents whose ``resolved_by_type`` is ``user`` (a merge is not a
  resolution by the user who merged); their ``acknowledged`` and ``notifications`` count merged incidents too
  (what the user did or received, not a time figure);
- an incident without teams has ``team_ids = team_names = []``; arrays are compared as sets (the spec gives
  no order);
- an incident without ``alert_counts`` has no ``alert_count`` (NULL): a noisy service's ``alerts`` and
  ``alerts_per_incident`` are over the incidents that have one;
- a null ``incident_key`` never repeats.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, available_timezones


UTC = timezone.utc

FIGURES = ("incidents", "high_urgency", "low_urgency", "unknown_urgency", "merged", "acknowledged", "resolved",
           "ack_p50_seconds", "ack_p90_seconds", "resolve_p50_seconds", "resolve_p90_seconds",
           "acked_within_5m_share", "acked_within_15m_share", "resolved_without_ack_share")

COLUMNS: dict[str, tuple[str, ...]] = {
    "incidents": ("incident_id", "incident_number", "title", "service_id", "service_name", "team_ids", "team_names",
                  "urgency", "priority_name", "status", "incident_key", "created_at", "week_start",
                  "first_acknowledged_at", "first_acknowledged_by_id", "resolved_at", "seconds_to_first_ack",
                  "seconds_to_resolve", "escalations", "reassignments", "notifications", "reopen_count",
                  "alert_count", "resolved_by_type", "resolved_by_id", "resolved_by_name", "is_merged",
                  "merged_into_incident_id"),
    "account_weekly": ("week_start", *FIGURES),
    "service_weekly": ("week_start", "service_id", "service_name", *FIGURES),
    "team_weekly": ("week_start", "team_id", "team_name", *FIGURES),
    "responder_weekly": ("week_start", "user_id", "user_name", "time_zone", "acknowledged", "resolved",
                         "notifications", "notifications_off_hours"),
    "noisy_services": ("week_start", "service_id", "service_name", "incidents", "alerts", "alerts_per_incident",
                       "resolved_within_5m", "repeated_key_incidents"),
}
VIEWS = tuple(COLUMNS)
KEYS: dict[str, tuple[str, ...]] = {
    "incidents": ("incident_id",), "account_weekly": ("week_start",), "service_weekly": ("week_start", "service_id"),
    "team_weekly": ("week_start", "team_id"), "responder_weekly": ("week_start", "user_id"),
    "noisy_services": ("week_start", "service_id"),
}
ARRAY_COLUMNS = frozenset({"team_ids", "team_names"})  # compared as sets: the spec gives no order

# The types the spec names (the other columns' types it leaves to the views).
_INT = "integer"
_BIG = "bigint"
_DBL = "double precision"
SPEC_TYPES: dict[str, dict[str, str]] = {
    "incidents": {"team_ids": "text[]", "team_names": "text[]", "week_start": "date",
                  "seconds_to_first_ack": _DBL, "seconds_to_resolve": _DBL, "escalations": _INT,
                  "reassignments": _INT, "notifications": _INT, "reopen_count": _INT, "alert_count": _INT,
                  "is_merged": "boolean"},
    **{view: {"week_start": "date", **{f: _BIG for f in FIGURES[:7]}, **{f: _DBL for f in FIGURES[7:]}}
       for view in ("account_weekly", "service_weekly", "team_weekly")},
    "responder_weekly": {"week_start": "date", "acknowledged": _BIG, "resolved": _BIG, "notifications": _BIG,
                         "notifications_off_hours": _BIG},
    "noisy_services": {"week_start": "date", "incidents": _BIG, "alerts": _BIG, "alerts_per_incident": _DBL,
                       "resolved_within_5m": _BIG, "repeated_key_incidents": _BIG},
}


@lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())


@dataclass(frozen=True)
class WorkingHours:
    """The one working-hours setting (``analytics.working_hours``); the defaults are the spec's."""

    working_days: tuple[int, ...] = (1, 2, 3, 4, 5)  # ISO weekdays, 1 = Monday
    day_starts: time = time(9)
    day_ends: time = time(17)
    default_time_zone: str = "UTC"

    def zone_for(self, name: str | None) -> str:
        """The zone a user's notifications are judged in: their own if it is a known IANA name, else the
        default."""
        return name if isinstance(name, str) and name in _zone_names() else self.default_time_zone

    def off_hours(self, at: datetime, zone: str) -> bool:
        """Whether ``at`` falls, in ``zone``, on a day not worked or outside [day_starts, day_ends)."""
        local = at.astimezone(ZoneInfo(zone))
        return local.isoweekday() not in self.working_days or not self.day_starts <= local.time() < self.day_ends


def percentile_cont(values: Iterable[float], fraction: float) -> float | None:
    """PostgreSQL's percentile_cont: linear interpolation at position ``fraction * (n - 1)`` of the sorted
    values; None for none."""
    ordered = sorted(values)
    if not ordered:
        return None
    pos = fraction * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def week_start(at: datetime) -> date:
    """The Monday (UTC) of the ISO week of ``at``."""
    day = at.astimezone(UTC).date()
    return day - timedelta(days=day.weekday())


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _is_user(agent: Any) -> bool:
    return isinstance(agent, dict) and agent.get("type") in ("user_reference", "user")


class _Names:
    """Names as the loaded rows hold them: a listed object's own name, else (deleted: a stub) the name of the
    reference PagerDuty last gave (which the fake keeps in ``deleted``)."""

    def __init__(self, account: Any) -> None:
        self.account = account

    def _of(self, table: Mapping[str, dict], ident: str, ref: dict | None) -> str | None:
        obj = table.get(ident) or self.account.deleted.get(ident) or ref or {}
        return obj.get("name") or obj.get("summary")

    def user(self, ident: str, ref: dict | None = None) -> str | None:
        return self._of(self.account.users, ident, ref)

    def service(self, ref: dict) -> str | None:
        return self._of(self.account.services, ref["id"], ref)

    def team(self, ref: dict) -> str | None:
        return self._of(self.account.teams, ref["id"], ref)

    def priority(self, ref: dict | None) -> str | None:
        return None if not ref else self._of(self.account.priorities, ref["id"], ref)


def _resolver_type(entry: dict) -> str:
    """``resolved_by_type`` of a (final) resolve log entry of an incident that was not merged."""
    if (entry.get("channel") or {}).get("type") == "timeout":
        return "timeout"
    agent = entry.get("agent") or {}
    if _is_user(agent):
        return "user"
    if str(agent.get("type", "")).endswith("_inbound_integration_reference"):
        return "integration"
    return "service"


def loaded_log_entries(account: Any, loaded_since: datetime | None = None) -> list[dict]:
    """The log entries the database holds after loads covering [loaded_since, now) (all when None)."""
    return [e for e in account.log_entries.values()
            if loaded_since is None or _time(e["created_at"]) >= loaded_since]


def loaded_incidents(account: Any, loaded_since: datetime | None = None) -> dict[str, dict]:
    """The incidents the database holds after such loads: those created in them, and older ones a loaded log
    entry names (the pipeline stores the incident embedded in the entry)."""
    if loaded_since is None:
        return dict(account.incidents)
    logged = {e["incident"]["id"] for e in loaded_log_entries(account, loaded_since)}
    return {i: inc for i, inc in account.incidents.items() if _time(inc["created_at"]) >= loaded_since or i in logged}


def incident_rows(account: Any, loaded_since: datetime | None = None) -> dict[str, dict]:
    """``analytics.incidents``: incident id -> row. ``loaded_since``: what the loads covered (see
    :func:`loaded_incidents`; None: everything)."""
    names = _Names(account)
    log: dict[str, list[dict]] = defaultdict(list)
    for entry in loaded_log_entries(account, loaded_since):
        log[entry["incident"]["id"]].append(entry)
    rows: dict[str, dict] = {}
    for inc_id, inc in loaded_incidents(account, loaded_since).items():
        entries = sorted(log.get(inc_id, []), key=lambda e: (_time(e["created_at"]), e["id"]))  # ties: the id
        of_type = defaultdict(list)
        for entry in entries:
            of_type[entry["type"]].append(entry)
        created = _time(inc["created_at"])
        first_ack = of_type["acknowledge_log_entry"][0] if of_type["acknowledge_log_entry"] else None
        first_ack_at = _time(first_ack["created_at"]) if first_ack else None
        resolves = of_type["resolve_log_entry"]
        resolved = inc["status"] == "resolved"
        final = resolves[-1] if resolved and resolves else None
        resolved_at = (_time(final["created_at"]) if final else _time(inc.get("resolved_at"))) if resolved else None
        reason = inc.get("resolve_reason") or {}
        merged = reason.get("type") == "merge_resolve_reason"
        if not resolved:
            by_type = None
        elif merged:
            by_type = "merge"
        else:
            by_type = _resolver_type(final) if final else "unknown"  # no resolve entry of it was loaded
        by_user = final["agent"] if by_type == "user" else None
        first_resolve_at = _time(resolves[0]["created_at"]) if resolves else None
        counts = inc.get("alert_counts")
        alert_count = counts["all"] if isinstance(counts, dict) and isinstance(counts.get("all"), int) else None
        teams = inc.get("teams") or []
        rows[inc_id] = {
            "incident_id": inc_id, "incident_number": inc["incident_number"], "title": inc["title"],
            "service_id": inc["service"]["id"], "service_name": names.service(inc["service"]),
            "team_ids": [t["id"] for t in teams], "team_names": [names.team(t) for t in teams],
            "urgency": inc["urgency"], "priority_name": names.priority(inc.get("priority")),
            "status": inc["status"], "incident_key": inc.get("incident_key"), "created_at": created,
            "week_start": week_start(created), "first_acknowledged_at": first_ack_at,
            "first_acknowledged_by_id": (first_ack.get("agent") or {}).get("id") if first_ack else None,
            "resolved_at": resolved_at,
            # reading: a merged incident's times are left out here too
            "seconds_to_first_ack": (first_ack_at - created).total_seconds() if first_ack_at and not merged
            else None,
            "seconds_to_resolve": (resolved_at - created).total_seconds() if resolved_at and not merged else None,
            "escalations": len(of_type["escalate_log_entry"]),
            "reassignments": max(0, len(of_type["assign_log_entry"]) - 1),
            "notifications": len(of_type["notify_log_entry"]),
            "reopen_count": sum(1 for e in of_type["trigger_log_entry"]
                                if first_resolve_at is not None and _time(e["created_at"]) > first_resolve_at),
            "alert_count": alert_count, "resolved_by_type": by_type,
            "resolved_by_id": by_user["id"] if by_user else None,
            "resolved_by_name": names.user(by_user["id"], by_user) if by_user else None,
            "is_merged": merged,
            "merged_into_incident_id": (reason.get("incident") or {}).get("id") if merged else None,
        }
    return rows


def weekly_figures(rows: Iterable[dict]) -> dict:
    """The weekly figures of a group of ``analytics.incidents`` rows (one week's, of one service or team...)."""
    rows = list(rows)
    kept = [r for r in rows if not r["is_merged"]]
    acked = [r["seconds_to_first_ack"] for r in kept if r["first_acknowledged_at"] is not None]
    done = [r for r in kept if r["status"] == "resolved"]
    to_resolve = [r["seconds_to_resolve"] for r in done if r["seconds_to_resolve"] is not None]
    return {
        "incidents": len(rows),
        "high_urgency": sum(1 for r in rows if r["urgency"] == "high"),
        "low_urgency": sum(1 for r in rows if r["urgency"] == "low"),
        "unknown_urgency": sum(1 for r in rows if r["urgency"] not in ("high", "low")),  # NULL or any other
        "merged": len(rows) - len(kept),
        "acknowledged": len(acked),
        "resolved": len(done),
        "ack_p50_seconds": percentile_cont(acked, 0.5), "ack_p90_seconds": percentile_cont(acked, 0.9),
        "resolve_p50_seconds": percentile_cont(to_resolve, 0.5),
        "resolve_p90_seconds": percentile_cont(to_resolve, 0.9),
        "acked_within_5m_share": _share(sum(1 for s in acked if s <= 300), len(kept)),
        "acked_within_15m_share": _share(sum(1 for s in acked if s <= 900), len(kept)),
        "resolved_without_ack_share": _share(sum(1 for r in done if r["first_acknowledged_at"] is None), len(done)),
    }


def _grouped(rows: Iterable[dict], key) -> dict[Any, list[dict]]:
    groups: dict[Any, list[dict]] = defaultdict(list)
    for row in rows:
        for k in key(row):
            groups[k].append(row)
    return groups


def responder_rows(account: Any, hours: WorkingHours, incidents: Mapping[str, dict],
                   loaded_since: datetime | None = None) -> dict[tuple, dict]:
    """``analytics.responder_weekly``: (week_start, user id) -> row, for users with something that week."""
    names = _Names(account)
    acked: dict[tuple, set] = defaultdict(set)
    resolved: dict[tuple, int] = defaultdict(int)
    notified: dict[tuple, list[datetime]] = defaultdict(list)
    refs: dict[str, dict] = {}
    for entry in loaded_log_entries(account, loaded_since):
        at = _time(entry["created_at"])
        if entry["type"] == "acknowledge_log_entry" and _is_user(entry.get("agent")):
            acked[(week_start(at), entry["agent"]["id"])].add(entry["incident"]["id"])
            refs.setdefault(entry["agent"]["id"], entry["agent"])
        elif entry["type"] == "notify_log_entry" and isinstance(entry.get("user"), dict):
            notified[(week_start(at), entry["user"]["id"])].append(at)
            refs.setdefault(entry["user"]["id"], entry["user"])
    for row in incidents.values():
        if row["resolved_by_type"] == "user":  # reading: a merge is nobody's resolution
            resolved[(week_start(row["resolved_at"]), row["resolved_by_id"])] += 1
    out: dict[tuple, dict] = {}
    for key in set(acked) | set(resolved) | set(notified):
        user_id = key[1]
        listed = account.users.get(user_id)  # a deleted user's stub has no time zone
        zone = hours.zone_for(listed.get("time_zone") if listed else None)
        out[key] = {"week_start": key[0], "user_id": user_id, "user_name": names.user(user_id, refs.get(user_id)),
                    "time_zone": zone, "acknowledged": len(acked.get(key, ())), "resolved": resolved.get(key, 0),
                    "notifications": len(notified.get(key, ())),
                    "notifications_off_hours": sum(1 for at in notified.get(key, ()) if hours.off_hours(at, zone))}
    return out


def noisy_rows(incidents: Mapping[str, dict]) -> dict[tuple, dict]:
    """``analytics.noisy_services``: (week_start, service id) -> row."""
    first_seen: dict[tuple, tuple] = {}  # (service, incident_key) -> (created_at, id) of its first incident
    for row in incidents.values():
        if row["incident_key"] is not None:
            k, order = (row["service_id"], row["incident_key"]), (row["created_at"], row["incident_id"])
            first_seen[k] = min(first_seen.get(k, order), order)
    out: dict[tuple, dict] = {}
    for key, rows in _grouped(incidents.values(), lambda r: [(r["week_start"], r["service_id"])]).items():
        known = [r["alert_count"] for r in rows if r["alert_count"] is not None]
        out[key] = {
            "week_start": key[0], "service_id": key[1], "service_name": rows[0]["service_name"],
            "incidents": len(rows), "alerts": sum(known) if known else None,
            "alerts_per_incident": sum(known) / len(known) if known else None,
            "resolved_within_5m": sum(1 for r in rows if not r["is_merged"] and r["status"] == "resolved"
                                      and r["seconds_to_resolve"] is not None and r["seconds_to_resolve"] <= 300),
            "repeated_key_incidents": sum(1 for r in rows if r["incident_key"] is not None and first_seen[
                (r["service_id"], r["incident_key"])] < (r["created_at"], r["incident_id"])),
        }
    return out


def expected_views(account: Any, hours: WorkingHours = WorkingHours(),
                   loaded_since: datetime | None = None) -> dict:
    """Every view of the spec: view name -> key -> row (see the module's docstring), over what loads covering
    [loaded_since, now) stored (everything when None)."""
    incidents = incident_rows(account, loaded_since)
    by_week = _grouped(incidents.values(), lambda r: [r["week_start"]])
    by_service = _grouped(incidents.values(), lambda r: [(r["week_start"], r["service_id"])])
    by_team = _grouped(incidents.values(), lambda r: [(r["week_start"], t) for t in dict.fromkeys(r["team_ids"])])
    team_names = {t: n for r in incidents.values() for t, n in zip(r["team_ids"], r["team_names"])}
    return {
        "incidents": incidents,
        "account_weekly": {w: {"week_start": w, **weekly_figures(rows)} for w, rows in by_week.items()},
        "service_weekly": {k: {"week_start": k[0], "service_id": k[1], "service_name": rows[0]["service_name"],
                               **weekly_figures(rows)} for k, rows in by_service.items()},
        "team_weekly": {k: {"week_start": k[0], "team_id": k[1], "team_name": team_names[k[1]],
                            **weekly_figures(rows)} for k, rows in by_team.items()},
        "responder_weekly": responder_rows(account, hours, incidents, loaded_since),
        "noisy_services": noisy_rows(incidents),
    }


def row_key(view: str, row: Mapping[str, Any]) -> Any:
    """The key of a view's row in :func:`expected_views` (a plain value for one key column, else a tuple)."""
    cols = KEYS[view]
    return row[cols[0]] if len(cols) == 1 else tuple(row[c] for c in cols)


def _same(expected: Any, actual: Any, column: str) -> bool:
    if column in ARRAY_COLUMNS and isinstance(expected, list) and isinstance(actual, list):
        return sorted(expected, key=str) == sorted(actual, key=str)
    if isinstance(expected, float) or isinstance(actual, float):
        if expected is None or actual is None or isinstance(expected, bool) or isinstance(actual, bool):
            return False
        return math.isclose(float(expected), float(actual), rel_tol=1e-9, abs_tol=1e-6)
    return type(expected) is type(actual) and expected == actual or \
        (isinstance(expected, datetime) and isinstance(actual, datetime) and expected == actual)


def differences(expected: Mapping[Any, dict], actual: Mapping[Any, dict], limit: int = 20) -> list[str]:
    """What differs between the oracle's rows and a view's (both keyed alike): missing and extra keys, and
    every differing column (floats within 1e-6), at most ``limit`` lines plus a count of the rest."""
    out = [f"missing row {k!r}: {expected[k]}" for k in sorted(set(expected) - set(actual), key=repr)]
    out += [f"extra row {k!r}: {actual[k]}" for k in sorted(set(actual) - set(expected), key=repr)]
    for k in sorted(set(expected) & set(actual), key=repr):
        want, got = expected[k], actual[k]
        for column in want:
            if column not in got:
                out.append(f"{k!r}: no column {column}")
            elif not _same(want[column], got[column], column):
                out.append(f"{k!r}.{column}: view {got[column]!r}, spec {want[column]!r}")
    return out[:limit] + ([f"... and {len(out) - limit} more"] if len(out) > limit else [])
