"""A local stand-in for the PagerDuty REST API v2 (the endpoints the pipeline uses).

    from tests.support.fake_pagerduty import FakePagerDuty, generate_account

    account = generate_account(n_incidents=500, seed=7)           # deterministic sample account (mix below)
    with FakePagerDuty(account, token="tok") as pd:                 # 127.0.0.1, free port, own thread
        pd.url                                                      # base URL (add base_path="/eu" to mount elsewhere)
        pd.max_concurrent, pd.in_flight, pd.rate_limited           # measurements; pd.reset_stats()
        pd.inject(429, count=2, headers=False)                      # next 2 requests -> 429
        pd.inject_malformed(); pd.inject_drop()                     # bad JSON body / connection closed
        pd.request_count("/incidents")                              # request log
        pd.inject(500, count=None); pd.clear_faults()               # a fault storm on every path, then its end
        account.update_incident(inc_id, status="resolved", at=...)  # mutate the model between runs
        account.add_incident(at, service_id, with_alerts=2)         # a new incident, as PagerDuty creates it
        account.evolve(day_start, day_end, random.Random(1))        # a day of activity (new, ack, resolve, notes)
        account.merge(into_id, source_id, at); account.reassign(inc_id, at, user_id)   # what responders do
        account.escalate(inc_id, at, user_id); account.unacknowledge(inc_id, at); account.reopen(inc_id, at)
        account.resolve(inc_id, at, by="timeout")                   # or by="user" / "integration"
        account.add_user("Yuki Tanaka", time_zone="Asia/Tokyo")    # account.set_time_zone(user_id, name)
    FakePagerDuty(account, latency=0.2, jitter=0.1, seed=1)         # each response waits 0.2-0.3 s (default: none)
    FakePagerDuty(account, enforce_rate_limit=True, rate_limit=960) # 429 past 960 requests in a 60 s window

The generated data mix, as in a real account: 97 % of the incidents come from monitoring with 1-3 alerts each
(alerts resolve with their incident), the other 3 % are manual incidents a user created in the web UI (no alerts,
trigger entry through the ``web_trigger`` channel); 15 % have a note (``alert_ratio``, ``note_ratio``).

Command line (e.g. a separate process for benchmarks or a local demo run; prints the base URL first):

    python -m tests.support.fake_pagerduty --incidents 10000 --port 8089 --token tok
    (options: --latency 0.2 --jitter 0.1, --enforce-rate-limit --rate-limit 960, --alert-ratio, --note-ratio, --warm)

Behaviour mirrored from PagerDuty (see shared reference): token auth (401 code 2006), classic
limit/offset/more/total paging with limit max 100 and the offset+limit <= 10,000 cap (400 code 2002),
``since``/``until`` on ``created_at`` with ``time_zone``, filters, ``include[]`` expansion,
``GET /{users,services,teams,escalation_policies,priorities}/{id}`` (404 code 2100 once deleted),
account-wide ``/log_entries`` (newest first) with ``include[]=incidents`` embedding the incident's
current state, ratelimit-* headers and 429 body code 2020.
"""

from __future__ import annotations

import argparse
import bisect
import json
import random
import socket
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

UTC = timezone.utc
MAX_OFFSET = 10_000
WEB = "https://example.pagerduty.com"

__all__ = ["Account", "FakePagerDuty", "generate_account", "iso", "parse_time"]


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).replace(tzinfo=None, microsecond=0).isoformat() + "Z"


def parse_time(value: str, tz: str = "UTC") -> float:
    dt = datetime.fromisoformat(value.strip().replace(" ", "+") if "T" in value else value.strip())
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=ZoneInfo(tz) if tz != "UTC" else UTC)
    return dt.timestamp()


def _ts(value: str | None) -> float | None:
    return None if value is None else datetime.fromisoformat(value).timestamp()


def _b36(n: int, width: int) -> str:
    chars = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = chars[r] + out
    return out.rjust(width, "0")


_AUTO: Any = type("_Auto", (), {"__repr__": lambda self: "<auto>"})()  # "choose a realistic default"


# ---------------------------------------------------------------------------------------------
# Account model
# ---------------------------------------------------------------------------------------------
class Account:
    """In-memory PagerDuty account. Mutate through the helper methods (they invalidate caches);
    after editing the dicts directly call :meth:`touch`."""

    def __init__(self) -> None:
        self.services: dict[str, dict] = {}
        self.teams: dict[str, dict] = {}
        self.users: dict[str, dict] = {}
        self.escalation_policies: dict[str, dict] = {}
        self.priorities: dict[str, dict] = {}
        self.incidents: dict[str, dict] = {}
        self.log_entries: dict[str, dict] = {}
        self.notes: dict[str, list] = defaultdict(list)
        self.alerts: dict[str, list] = defaultdict(list)
        # objects that were deleted but are still referenced (for include[] expansion)
        self.deleted: dict[str, dict] = {}
        # service id -> the inbound integration (Events API) that monitoring sends that service's events through
        self.integrations: dict[str, dict] = {}
        self._lock = threading.RLock()
        self._seq = 0
        self.touch()

    # -- ids / refs --------------------------------------------------------------------------
    def next_id(self, prefix: str) -> str:
        self._seq += 1
        return prefix + _b36(self._seq * 7919 + 100_000, 7 if prefix == "P" else 13)

    @staticmethod
    def ref(obj: dict, kind: str | None = None) -> dict:
        kind = kind or obj["type"]
        name = obj.get("name") or obj.get("summary") or obj["id"]
        path = {"service": "services", "team": "teams", "user": "users", "escalation_policy": "escalation_policies",
                "priority": "priorities"}.get(kind, kind + "s")
        return {"id": obj["id"], "type": f"{kind}_reference", "summary": name,
                "self": f"https://api.pagerduty.com/{path}/{obj['id']}", "html_url": f"{WEB}/{path}/{obj['id']}"}

    def touch(self) -> None:
        """Invalidate every index and serialization cache (call after mutating dicts directly)."""
        with self._lock:
            self._inc_index = None
            self._log_index = None
            self._filter_cache: dict = {}
            self._ser_cache: dict = {}

    # -- indexes -----------------------------------------------------------------------------
    def incident_index(self):
        with self._lock:
            if self._inc_index is None:
                rows = sorted((_ts(i["created_at"]), i["incident_number"], i["id"]) for i in self.incidents.values())
                self._inc_index = ([r[0] for r in rows], [r[2] for r in rows])
            return self._inc_index

    def log_index(self):
        with self._lock:
            if self._log_index is None:
                rows = sorted((_ts(e["created_at"]), e["id"]) for e in self.log_entries.values())
                self._log_index = ([r[0] for r in rows], [r[1] for r in rows])
            return self._log_index

    # -- mutation helpers ------------------------------------------------------------------
    def add_service(self, name: str, escalation_policy_id: str | None = None, team_ids=()) -> dict:
        sid = self.next_id("P")
        ep = self.escalation_policies.get(escalation_policy_id) if escalation_policy_id else None
        svc = {"id": sid, "type": "service", "name": name, "summary": name, "description": f"{name} service",
               "status": "active", "created_at": "2023-01-01T00:00:00Z", "self": f"https://api.pagerduty.com/services/{sid}",
               "html_url": f"{WEB}/services/{sid}", "escalation_policy": self.ref(ep) if ep else None,
               "teams": [self.ref(self.teams[t]) for t in team_ids], "alert_creation": "create_alerts_and_incidents"}
        self.services[sid] = svc
        self.touch()
        return svc

    def delete_service(self, service_id: str) -> None:
        self.deleted[service_id] = self.services.pop(service_id)
        self.touch()

    def delete_user(self, user_id: str) -> None:
        self.deleted[user_id] = self.users.pop(user_id)
        self.touch()

    def add_log_entry(self, incident_id: str, type_: str, at: datetime, agent: dict | None = None,
                      note: str | None = None, channel: dict | None = None) -> dict:
        """A log entry of the incident at ``at``: agent the service unless given, channel ``api`` for a trigger,
        ``note`` for a note, else ``web`` (or ``channel``)."""
        inc = self.incidents[incident_id]
        lid = self.next_id("R")
        entry = {"id": lid, "type": type_, "summary": f"{type_.replace('_log_entry', '')} {inc['summary']}",
                 "self": f"https://api.pagerduty.com/log_entries/{lid}",
                 "html_url": f"{WEB}/incidents/{incident_id}/log_entries/{lid}", "created_at": iso(at),
                 "agent": agent or inc["service"], "channel": {"type": "api" if type_ == "trigger_log_entry" else "web"},
                 "service": inc["service"], "incident": self.ref(inc, "incident"), "teams": inc["teams"],
                 "contexts": [], "event_details": {"description": inc["title"]}}
        if note is not None:
            entry["channel"] = {"type": "note", "summary": note}
        if channel is not None:
            entry["channel"] = channel
        self.log_entries[lid] = entry
        self.touch()
        return entry

    def update_incident(self, incident_id: str, at: datetime, status: str | None = None, *,
                        log_type: str | None = None, log_agent: dict | None = None, log_channel: dict | None = None,
                        **fields) -> dict:
        """Change an incident as PagerDuty would: new state, updated_at, a log entry at ``at``.

        A status change logs its status's entry (``log_type`` overrides it, e.g. ``unacknowledge_log_entry``), with
        the service as agent and the default channel unless ``log_agent`` / ``log_channel`` say otherwise."""
        inc = self.incidents[incident_id]
        inc.update(fields)
        if status and status != inc["status"]:
            inc["status"] = status
            inc["last_status_change_at"] = iso(at)
            if status == "resolved":
                inc["resolved_at"] = iso(at)
                inc["assignments"] = []
                for alert in self.alerts.get(incident_id, []):
                    alert["status"] = "resolved"
                self._recount_alerts(incident_id)
            self.add_log_entry(incident_id, log_type or {"resolved": "resolve_log_entry",
                                                         "acknowledged": "acknowledge_log_entry",
                                                         "triggered": "trigger_log_entry"}[status], at,
                               agent=log_agent, channel=log_channel)
        else:
            self.add_log_entry(incident_id, "annotate_log_entry" if "title" not in fields else "escalate_log_entry", at)
        inc["updated_at"] = iso(at)
        self.touch()
        return inc

    def add_note(self, incident_id: str, content: str, at: datetime, user_id: str | None = None) -> dict:
        user = self.users.get(user_id) if user_id else next(iter(self.users.values()))
        nid = self.next_id("P")
        note = {"id": nid, "user": self.ref(user), "channel": {"summary": "The PagerDuty website or APIs"},
                "content": content, "created_at": iso(at)}
        self.notes[incident_id].append(note)
        self.add_log_entry(incident_id, "annotate_log_entry", at, agent=self.ref(user), note=content)
        self.incidents[incident_id]["updated_at"] = iso(at)
        self.touch()
        return note

    def add_alert(self, incident_id: str, at: datetime, status: str = "triggered") -> dict:
        inc = self.incidents[incident_id]
        aid = self.next_id("Q")
        alert = {"id": aid, "type": "alert", "summary": inc["title"], "self": f"https://api.pagerduty.com/alerts/{aid}",
                 "html_url": f"{WEB}/alerts/{aid}", "created_at": iso(at), "status": status,
                 "alert_key": f"key-{aid.lower()}", "service": inc["service"], "incident": self.ref(inc, "incident"),
                 "severity": "critical", "suppressed": False, "body": {"type": "alert_body", "details": {}}}
        self.alerts[incident_id].append(alert)
        self._recount_alerts(incident_id)
        self.touch()
        return alert

    def _recount_alerts(self, incident_id: str) -> None:
        alerts = self.alerts.get(incident_id, [])
        resolved = sum(1 for a in alerts if a["status"] == "resolved")
        self.incidents[incident_id]["alert_counts"] = {"all": len(alerts), "triggered": len(alerts) - resolved,
                                                       "resolved": resolved}

    # -- realistic activity --------------------------------------------------------------------
    def _new_incident_id(self, number: int) -> str:
        inc_id = "Q" + _b36(number * 104_729 + 36 ** 11, 13)  # the generator's scheme: unique per number
        while inc_id in self.incidents:  # only if someone inserted incidents by hand
            inc_id = self.next_id("Q")
        return inc_id

    def _user_ref(self, user_id: str) -> dict:
        user = self.users.get(user_id) or self.deleted.get(user_id)
        if user is None:
            raise KeyError(f"no user {user_id!r}")
        return self.ref(user, "user")

    def add_incident(self, at: datetime, service_id: str | None = None, *, title: Any = _AUTO, urgency: Any = "high",
                     priority_id: Any = None, status: str = "triggered", with_alerts: int = 0,
                     assignee_id: Any = _AUTO, created_by: str | None = None, **overrides) -> dict:
        """Create an incident the way PagerDuty does and return it: the next ``incident_number``, a
        ``trigger_log_entry`` at ``at`` (the incident's ``first_trigger_log_entry``), an
        ``assign_log_entry`` 1 s and a ``notify_log_entry`` 2 s later, ``with_alerts`` triggered alerts
        created at ``at`` (``alert_counts`` follows), teams and escalation policy from the service.

        ``service_id`` defaults to the first service. ``title=None``, ``urgency=None``,
        ``priority_id=None`` (the default) give the nulls the real API returns; ``assignee_id`` defaults
        to the first target of the service's escalation policy, ``assignee_id=None`` (or
        ``assignments=[]`` in ``overrides``) leaves the incident unassigned (no assign/notify entries).
        ``status="acknowledged"`` acknowledges it 2 minutes after ``at``; ``status="resolved"``
        also resolves it 10 minutes after ``at`` (through :meth:`update_incident`). ``created_by`` (a
        user id) makes it a manual incident that user created in the web UI: its trigger log entry has
        ``channel: {"type": "web_trigger"}`` and the user as agent (give it no alerts). ``overrides`` are
        set on the incident object last (any field, e.g. ``incident_key``, ``resolve_reason``)."""
        if status not in ("triggered", "acknowledged", "resolved"):
            raise ValueError(f"unknown status {status!r}")
        creator = self._user_ref(created_by) if created_by else None
        at = at.astimezone(UTC).replace(microsecond=0)
        svc = self.services.get(service_id) if service_id else next(iter(self.services.values()))
        if svc is None:
            raise KeyError(f"no service {service_id!r}")
        number = max((i["incident_number"] for i in self.incidents.values()), default=0) + 1
        inc_id = self._new_incident_id(number)
        if title is _AUTO:
            kinds = ["High error rate", "Latency above SLO", "Disk almost full", "Queue backlog", "Crash loop"]
            title = f"{kinds[number % 5]} on {svc['name']} #{number}"
        ep_ref = svc.get("escalation_policy")
        ep = self.escalation_policies.get(ep_ref["id"]) if ep_ref else None
        if assignee_id is _AUTO:
            targets = [t for rule in (ep or {}).get("escalation_rules", []) for t in rule.get("targets", [])]
            assignee_id = targets[0]["id"] if targets else next(iter(self.users), None)
        if "assignments" in overrides:
            assignments = overrides.pop("assignments")
        else:
            assignments = [{"at": iso(at + timedelta(seconds=1)), "assignee": self._user_ref(assignee_id)}] \
                if assignee_id else []
        prio = self.priorities.get(priority_id) if priority_id else None
        if priority_id and prio is None:
            raise KeyError(f"no priority {priority_id!r}")
        summary = f"[#{number}]" + (f" {title}" if title else "")
        inc = {
            "id": inc_id, "type": "incident", "summary": summary,
            "self": f"https://api.pagerduty.com/incidents/{inc_id}", "html_url": f"{WEB}/incidents/{inc_id}",
            "incident_number": number, "title": title, "description": title, "created_at": iso(at),
            "updated_at": iso(at), "status": "triggered", "incident_key": f"{number * 2_654_435_761:016x}"[-16:],
            "service": self.ref(svc), "assignments": [], "assigned_via": "escalation_policy",
            "last_status_change_at": iso(at), "resolved_at": None, "first_trigger_log_entry": None,
            "alert_counts": {"all": 0, "triggered": 0, "resolved": 0}, "pending_actions": [], "is_mergeable": True,
            "escalation_policy": ep_ref, "teams": [dict(t) for t in svc.get("teams") or []], "acknowledgements": [],
            "last_status_change_by": self.ref(svc), "priority": self.ref(prio) if prio else None,
            "resolve_reason": None, "urgency": urgency,
            "body": {"type": "incident_body", "details": f"Details for incident {number}"}, "conference_bridge": None,
        }
        self.incidents[inc_id] = inc
        trigger = self.add_log_entry(inc_id, "trigger_log_entry", at, agent=creator)
        if creator:
            trigger["channel"] = {"type": "web_trigger"}
            inc["last_status_change_by"] = creator
        inc["first_trigger_log_entry"] = {"id": trigger["id"], "type": "trigger_log_entry_reference",
                                          "summary": trigger["summary"], "self": trigger["self"],
                                          "html_url": trigger["html_url"]}
        for _ in range(max(0, int(with_alerts))):
            self.add_alert(inc_id, at)
        if assignments:
            inc["assignments"] = assignments
            self.add_log_entry(inc_id, "assign_log_entry", at + timedelta(seconds=1))
            self._notify(inc_id, at + timedelta(seconds=2), assignments[0]["assignee"])
            inc["updated_at"] = iso(at + timedelta(seconds=2))
        if status in ("acknowledged", "resolved"):
            self.acknowledge(inc_id, at + timedelta(minutes=2))
        if status == "resolved":
            self.resolve(inc_id, at + timedelta(minutes=10))
        inc.update(overrides)
        self.touch()
        return inc

    def _actor(self, inc: dict, user_id: str | None) -> dict:
        """Who acts on an incident: ``user_id``, else its first assignee still in the account, else the
        first user."""
        if user_id:
            return self._user_ref(user_id)
        for a in inc["assignments"]:
            if a["assignee"]["id"] in self.users:
                return self.ref(self.users[a["assignee"]["id"]])
        return self.ref(next(iter(self.users.values())))

    def acknowledge(self, incident_id: str, at: datetime, user_id: str | None = None, *,
                    by: str | None = None) -> dict:
        """Acknowledge (through :meth:`update_incident`) by ``user_id`` (default: the first assignee).

        ``by="user"`` logs the entry with that user as its agent, as PagerDuty does; without it the entry's agent
        stays the service (what this helper always did, kept for the accounts tests already build)."""
        if by not in (None, "user"):
            raise ValueError(f"unknown acknowledger {by!r}")
        inc = self.incidents[incident_id]
        user = self._actor(inc, user_id)
        return self.update_incident(incident_id, at, status="acknowledged", last_status_change_by=user,
                                    log_agent=user if by == "user" else None,
                                    acknowledgements=inc["acknowledgements"] + [{"at": iso(at), "acknowledger": user}])

    def resolve(self, incident_id: str, at: datetime, user_id: str | None = None, *, by: str | None = None,
                **fields) -> dict:
        """Resolve (through :meth:`update_incident`: alerts resolve, assignments empty).

        Who resolved it, as the ``resolve_log_entry`` tells: ``by="user"`` the user (``user_id``, default the first
        assignee) is the entry's agent; ``by="timeout"`` the service's auto-resolve timeout (agent the service,
        channel ``timeout``); ``by="integration"`` monitoring sent a resolve event (agent the service's inbound
        integration, channel ``api``). Without ``by`` the entry's agent is the service, as this helper always
        did. ``fields`` are set on the incident too (e.g. ``resolve_reason``)."""
        inc = self.incidents[incident_id]
        user = self._actor(inc, user_id)
        if by is None:
            changer, agent, channel = user, None, None
        elif by == "user":
            changer, agent, channel = user, user, None
        elif by == "timeout":
            changer, agent, channel = inc["service"], inc["service"], {"type": "timeout"}
        elif by == "integration":
            changer = agent = self.integration_ref(inc["service"]["id"])
            channel = {"type": "api"}
        else:
            raise ValueError(f"unknown resolver {by!r}")
        return self.update_incident(incident_id, at, status="resolved", last_status_change_by=changer,
                                    log_agent=agent, log_channel=channel,
                                    **{"acknowledgements": [], "pending_actions": [], **fields})

    def integration_ref(self, service_id: str) -> dict:
        """The reference of the service's Events API integration (created on first use), the agent of the log
        entries of events monitoring sends."""
        integ = self.integrations.get(service_id)
        if integ is None:
            iid = self.next_id("P")
            integ = self.integrations[service_id] = {
                "id": iid, "type": "generic_events_api_inbound_integration_reference", "summary": "Events API v2",
                "self": f"https://api.pagerduty.com/services/{service_id}/integrations/{iid}",
                "html_url": f"{WEB}/services/{service_id}/integrations/{iid}"}
        return dict(integ)

    def _open(self, incident_id: str) -> dict:
        inc = self.incidents[incident_id]
        if inc["status"] == "resolved":
            raise ValueError(f"incident {incident_id} is resolved")
        return inc

    def _notify(self, incident_id: str, at: datetime, user: dict) -> dict:
        """A ``notify_log_entry``: PagerDuty notified ``user`` (a reference; the entry's ``user``)."""
        entry = self.add_log_entry(incident_id, "notify_log_entry", at, channel={"type": "auto"})
        entry["user"] = user
        return entry

    def reassign(self, incident_id: str, at: datetime, to_user_id: str, by_user_id: str | None = None) -> dict:
        """A responder hands an open incident to ``to_user_id``: an ``assign_log_entry`` at ``at`` whose agent is
        the acting user (``by_user_id``, default the first assignee), the assignments replaced by the new assignee,
        PagerDuty notifying them (``notify_log_entry`` at ``at``), ``updated_at``. The status stays."""
        inc = self._open(incident_id)
        actor, to = self._actor(inc, by_user_id), self._user_ref(to_user_id)
        self.add_log_entry(incident_id, "assign_log_entry", at, agent=actor)["assignees"] = [to]
        return self._hand_to(inc, at, to)

    def escalate(self, incident_id: str, at: datetime, to_user_id: str) -> dict:
        """The escalation policy moves an open incident on to ``to_user_id`` (its next level): an
        ``escalate_log_entry`` at ``at`` (agent the service), the assignments replaced, a notification to them,
        ``updated_at``. No ``assign_log_entry``: an escalation is not a reassignment. The status stays."""
        inc = self._open(incident_id)
        to = self._user_ref(to_user_id)
        self.add_log_entry(incident_id, "escalate_log_entry", at)["assignees"] = [to]
        return self._hand_to(inc, at, to)

    def _hand_to(self, inc: dict, at: datetime, to: dict) -> dict:
        inc["assignments"] = [{"at": iso(at), "assignee": to}]
        self._notify(inc["id"], at, to)
        inc["updated_at"] = iso(at)
        self.touch()
        return inc

    def unacknowledge(self, incident_id: str, at: datetime) -> dict:
        """The acknowledgement timeout ran out: an ``unacknowledge_log_entry`` (agent the service, channel
        ``timeout``), the incident triggered again, its acknowledgements gone (its assignees stay)."""
        inc = self.incidents[incident_id]
        if inc["status"] != "acknowledged":
            raise ValueError(f"incident {incident_id} is {inc['status']}, not acknowledged")
        return self.update_incident(incident_id, at, status="triggered", log_type="unacknowledge_log_entry",
                                    log_channel={"type": "timeout"}, acknowledgements=[],
                                    last_status_change_by=inc["service"])

    def reopen(self, incident_id: str, at: datetime) -> dict:
        """A resolved incident triggers again: a ``trigger_log_entry`` after its resolve entry, status
        ``triggered``, ``resolved_at`` null (it stays unassigned until someone takes it)."""
        inc = self.incidents[incident_id]
        if inc["status"] != "resolved":
            raise ValueError(f"incident {incident_id} is {inc['status']}, not resolved")
        return self.update_incident(incident_id, at, status="triggered", resolved_at=None, resolve_reason=None,
                                    last_status_change_by=inc["service"])

    def merge(self, into_id: str, source_id: str, at: datetime, user_id: str | None = None) -> dict:
        """A user merges open incident ``source_id`` into open incident ``into_id``, as PagerDuty does it: the
        source's alerts move to the surviving incident (both ``alert_counts`` follow, the survivor's
        ``updated_at`` too), then the source resolves with a ``resolve_log_entry`` whose agent is the user
        (``user_id``, default its first assignee) and ``resolve_reason`` ``merge_resolve_reason`` naming the
        survivor. Returns the source."""
        if into_id == source_id:
            raise ValueError("an incident cannot be merged into itself")
        target = self._open(into_id)
        self._open(source_id)  # refuses a resolved (or unknown) source
        into_ref = self.ref(target, "incident")
        for alert in self.alerts.pop(source_id, []):
            alert["incident"] = into_ref
            self.alerts[into_id].append(alert)
        self._recount_alerts(into_id)
        self._recount_alerts(source_id)
        target["updated_at"] = max(target["updated_at"], iso(at))
        return self.resolve(source_id, at, user_id, by="user",
                            resolve_reason={"type": "merge_resolve_reason", "incident": into_ref})

    def add_user(self, name: str, *, time_zone: str = "Europe/London", team_ids=(), role: str = "user") -> dict:
        """A user as ``/users`` lists them; ``time_zone`` is the IANA name PagerDuty gives (any string: the API
        does not promise a valid one)."""
        uid = self.next_id("P")
        user = {"id": uid, "type": "user", "name": name, "summary": name,
                "email": name.lower().replace(" ", ".") + "@example.com", "role": role, "time_zone": time_zone,
                "job_title": "Engineer", "avatar_url": None, "teams": [self.ref(self.teams[t]) for t in team_ids],
                "self": f"https://api.pagerduty.com/users/{uid}", "html_url": f"{WEB}/users/{uid}"}
        self.users[uid] = user
        self.touch()
        return user

    def set_time_zone(self, user_id: str, time_zone: str | None) -> dict:
        """Change a user's ``time_zone`` (None: the field is null)."""
        user = self.users[user_id]
        user["time_zone"] = time_zone
        self.touch()
        return user

    def is_manual(self, incident_id: str) -> bool:
        """Whether the incident was created by hand in the web UI (its first trigger log entry came
        through the ``web_trigger`` channel): such incidents have no alerts."""
        ref = self.incidents[incident_id].get("first_trigger_log_entry")
        entry = self.log_entries.get(ref["id"]) if ref else None
        return bool(entry) and (entry.get("channel") or {}).get("type") == "web_trigger"

    def add_grouped_alert(self, incident_id: str, at: datetime) -> dict:
        """A new alert grouped into an open, triggered incident: the alert (``alert_counts``), a
        ``trigger_log_entry`` for its event and ``updated_at``. (Only on triggered incidents, so the
        latest status-changing entry keeps matching the status.)"""
        inc = self.incidents[incident_id]
        if inc["status"] != "triggered":
            raise ValueError(f"incident {incident_id} is {inc['status']}, not triggered")
        alert = self.add_alert(incident_id, at)
        self.add_log_entry(incident_id, "trigger_log_entry", at)
        inc["updated_at"] = iso(at)
        self.touch()
        return alert

    def last_activity(self) -> dict[str, datetime]:
        """Incident id -> the time of its latest log entry (or ``updated_at``, if later)."""
        out: dict[str, datetime] = {}
        for entry in self.log_entries.values():
            t = datetime.fromisoformat(entry["created_at"])
            inc_id = entry["incident"]["id"]
            if inc_id not in out or t > out[inc_id]:
                out[inc_id] = t
        for inc_id, inc in self.incidents.items():
            t = datetime.fromisoformat(inc["updated_at"])
            if inc_id not in out or t > out[inc_id]:
                out[inc_id] = t
        return out

    def status_log_mismatches(self) -> list[str]:
        """Incidents whose status differs from their latest trigger/(un)acknowledge/resolve log entry (or
        whose status fields disagree: resolved_at, last_status_change_at, alert_counts); empty when the
        account is consistent."""
        kinds = {"trigger_log_entry": "triggered", "unacknowledge_log_entry": "triggered",
                 "acknowledge_log_entry": "acknowledged", "resolve_log_entry": "resolved"}
        latest: dict[str, tuple] = {}
        for entry in self.log_entries.values():
            if entry["type"] in kinds:
                key = (entry["created_at"], entry["id"])
                inc_id = entry["incident"]["id"]
                if inc_id not in latest or key > latest[inc_id][0]:
                    latest[inc_id] = (key, kinds[entry["type"]], entry["type"])
        bad = []
        for inc_id, inc in self.incidents.items():
            got = latest.get(inc_id)
            alerts = self.alerts.get(inc_id, [])
            resolved = sum(1 for a in alerts if a["status"] == "resolved")
            counts = {"all": len(alerts), "triggered": len(alerts) - resolved, "resolved": resolved}
            if got is None or got[1] != inc["status"] or \
                    (inc["status"] == "resolved") != (inc["resolved_at"] is not None) or \
                    (inc["status"] == "resolved" and (inc["assignments"] or counts["triggered"])) or \
                    inc["alert_counts"] != counts or inc["updated_at"] < inc["last_status_change_at"]:
                bad.append(inc_id)
        return bad

    def evolve(self, day_start: datetime, day_end: datetime, rnd: random.Random, *, new_incidents: int = 30,
               ack_ratio: float = 0.35, resolve_ratio: float = 0.45, note_ratio: float = 0.12,
               alert_ratio: float = 0.05, odd_ratio: float = 0.03) -> dict:
        """One period of realistic activity, every timestamp inside [day_start, day_end), every change
        through the helpers above (log entries, ``updated_at``, ``last_status_change_at``,
        ``alert_counts`` stay consistent). Deterministic for a given ``rnd`` state and account.

        * ``new_incidents`` new incidents (97 % with 1-3 alerts, the others manual ones a user created in
          the web UI, without alerts; 30 % without priority; ``odd_ratio`` of them each with a null
          title, a null urgency, no assignee: values the real API returns), of which some are
          acknowledged, resolved, noted or get another alert the same day (never a manual one);
        * open incidents from earlier days: ``ack_ratio`` of the triggered ones acknowledged,
          ``resolve_ratio`` of the open ones resolved (their alerts resolve with them);
        * ``note_ratio`` of all incidents (resolved ones too, mostly recent) get a note;
        * ``alert_ratio`` of the triggered incidents (not the manual ones) get another alert grouped into
          them.

        Every change to an incident comes after that incident's latest log entry. Returns the counts
        of what happened."""
        day_start = day_start.astimezone(UTC).replace(microsecond=0)
        day_end = day_end.astimezone(UTC).replace(microsecond=0)
        span = int((day_end - day_start).total_seconds())
        if span < 3600:
            raise ValueError("evolve needs a period of at least one hour")
        stats = {"created": 0, "acknowledged": 0, "resolved": 0, "notes": 0, "alerts": 0}
        last = self.last_activity()
        user_ids = sorted(self.users)
        service_ids = sorted(self.services)
        priority_ids = sorted(self.priorities)
        events: list[tuple] = []  # (time, order, kind, incident id or creation spec)
        order = iter(range(10 ** 9))

        def when(after: datetime, *, before: datetime = day_end) -> datetime | None:
            lo = max(day_start, after + timedelta(seconds=1))
            hi = before - timedelta(seconds=1)
            if lo >= hi:
                return None
            return lo + timedelta(seconds=rnd.randrange(int((hi - lo).total_seconds())))

        def plan(inc_id: str, status: str, after: datetime, *, note_p: float, ack_p: float, res_p: float,
                 alert_p: float) -> None:
            """Schedule one incident's changes in order, each after the previous one."""
            t = after
            steps_: list[str] = []
            if status == "triggered" and rnd.random() < alert_p:
                steps_.append("alert")
            if status == "triggered" and rnd.random() < ack_p:
                steps_.append("ack")
            if rnd.random() < note_p:
                steps_.append("note")
            if status != "resolved" and rnd.random() < res_p:
                steps_.append("resolve")
            for kind in steps_:
                # spread the steps over what is left of the day (each in the first half of the rest)
                base = max(t, day_start)
                nxt = when(t, before=base + (day_end - base) / 2 if day_end - base > timedelta(minutes=10)
                           else day_end)
                if nxt is None:
                    return
                events.append((nxt, next(order), kind, inc_id))
                t = nxt

        # existing incidents, in a stable order
        for inc_id in sorted(self.incidents, key=lambda i: self.incidents[i]["incident_number"]):
            inc = self.incidents[inc_id]
            age_days = (day_start - datetime.fromisoformat(inc["created_at"])).total_seconds() / 86400
            plan(inc_id, inc["status"], last.get(inc_id, day_start),
                 note_p=note_ratio if age_days < 7 else note_ratio / 4, ack_p=ack_ratio, res_p=resolve_ratio,
                 alert_p=0.0 if self.is_manual(inc_id) else alert_ratio)
        # new incidents: created in the first 80 % of the day, their own activity later the same day
        for _ in range(new_incidents):
            t = day_start + timedelta(seconds=rnd.randrange(int(span * 0.8)))
            manual = rnd.random() >= 0.97  # created by hand in the web UI: no alerts
            spec = {"service_id": rnd.choice(service_ids),
                    "urgency": None if rnd.random() < odd_ratio else ("high" if rnd.random() < 0.6 else "low"),
                    "priority_id": None if (not priority_ids or rnd.random() < 0.3) else rnd.choice(priority_ids),
                    "with_alerts": 0 if manual else rnd.choice((1, 1, 1, 2, 2, 3)),
                    "created_by": rnd.choice(user_ids) if manual else None,
                    "title": None if rnd.random() < odd_ratio else _AUTO,
                    "unassigned": rnd.random() < odd_ratio,
                    "plan": (rnd.random() < 0.6, rnd.random() < 0.5, rnd.random() < note_ratio * 1.5,
                             not manual and rnd.random() < alert_ratio)}
            events.append((t, next(order), "create", spec))
        events.sort(key=lambda e: (e[0], e[1]))

        i = 0
        while i < len(events):
            at, _, kind, arg = events[i]
            i += 1
            if kind == "create":
                kw = {} if not arg["unassigned"] else {"assignee_id": None}
                inc = self.add_incident(at, arg["service_id"], title=arg["title"], urgency=arg["urgency"],
                                        priority_id=arg["priority_id"], with_alerts=arg["with_alerts"],
                                        created_by=arg["created_by"], **kw)
                stats["created"] += 1
                ack, res, note, alert = arg["plan"]
                before = len(events)
                plan(inc["id"], "triggered", at + timedelta(seconds=2), note_p=float(note), ack_p=float(ack),
                     res_p=float(res), alert_p=float(alert))
                if len(events) > before:  # keep the remaining events in time order
                    rest = sorted(events[i:], key=lambda e: (e[0], e[1]))
                    events[i:] = rest
                continue
            inc = self.incidents.get(arg)
            if inc is None:
                continue
            if kind == "alert" and inc["status"] == "triggered":
                self.add_grouped_alert(arg, at)
                stats["alerts"] += 1
            elif kind == "ack" and inc["status"] == "triggered":
                self.acknowledge(arg, at)
                stats["acknowledged"] += 1
            elif kind == "resolve" and inc["status"] != "resolved":
                self.resolve(arg, at)
                stats["resolved"] += 1
            elif kind == "note":
                self.add_note(arg, rnd.choice(["Looking into it", "Rolled back the last deploy",
                                               "Root cause: expired certificate", "Paged the database team",
                                               "Monitoring after the fix"]) + f" ({at:%d %b %H:%M})", at,
                              user_id=rnd.choice(user_ids))
                stats["notes"] += 1
        self.touch()
        return stats

    # -- lookups used by the server ----------------------------------------------------------
    def lookup(self, kind: str, ident: str) -> dict | None:
        table = {"service": self.services, "team": self.teams, "user": self.users,
                 "escalation_policy": self.escalation_policies, "priority": self.priorities}[kind]
        return table.get(ident)  # deleted objects stay references, as PagerDuty no longer returns them


# ---------------------------------------------------------------------------------------------
# Deterministic sample account generator
# ---------------------------------------------------------------------------------------------
def generate_account(
    n_incidents: int = 200,
    seed: int = 1,
    start: datetime = datetime(2024, 3, 1, tzinfo=UTC),
    end: datetime | None = None,
    *,
    note_ratio: float = 0.15,
    alert_ratio: float = 0.97,
    deleted_user: bool = True,
) -> Account:
    """A realistic, deterministic account: 3 teams, 8 users (+1 deleted user still referenced),
    3 escalation policies, 5 services, 4 priorities and ``n_incidents`` incidents spread over
    [start, end) (default: 7 days) with ~5 log entries each (trigger, assign, notify, ...).

    The mix, as in a real account: ~``alert_ratio`` (97 %) of the incidents come from monitoring with
    1-3 alerts each (resolved with a resolved incident, triggered on an open one; ``alert_counts``
    matches); the others are *manual* incidents a user created in the web UI: no alerts, a trigger log
    entry with ``channel: {"type": "web_trigger"}`` and that user as its agent. ~``note_ratio`` (15 %)
    of the incidents have a note (an ``annotate_log_entry`` each, with its note). Everything follows
    from ``seed``; the alert counts and creators come from a generator of their own, so the ratios do
    not change a seed's incidents (times, statuses, services)."""
    rnd = random.Random(seed)
    mix = random.Random(f"alerts-{seed}")  # alert counts and manual incidents' creators
    end = end or start + timedelta(days=7)
    acc = Account()
    team_names = ["Platform", "Payments", "Mobile"]
    for name in team_names:
        tid = acc.next_id("P")
        acc.teams[tid] = {"id": tid, "type": "team", "name": name, "summary": name, "description": f"{name} team",
                          "self": f"https://api.pagerduty.com/teams/{tid}", "html_url": f"{WEB}/teams/{tid}",
                          "parent": None}
    team_ids = list(acc.teams)
    user_names = ["Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov",
                  "Donald Knuth", "Margaret Hamilton", "Ken Thompson", "Dennis Ritchie"]
    for i, name in enumerate(user_names):
        acc.add_user(name, team_ids=[team_ids[i % 3]], role="user" if i else "admin")
    user_ids = list(acc.users)
    for i, name in enumerate(["Primary on-call", "Payments escalation", "Mobile escalation"]):
        eid = acc.next_id("P")
        acc.escalation_policies[eid] = {
            "id": eid, "type": "escalation_policy", "name": name, "summary": name, "num_loops": 1,
            "escalation_rules": [{"escalation_delay_in_minutes": 30,
                                  "targets": [acc.ref(acc.users[user_ids[i]])]}],
            "teams": [acc.ref(acc.teams[team_ids[i]])], "self": f"https://api.pagerduty.com/escalation_policies/{eid}",
            "html_url": f"{WEB}/escalation_policies/{eid}"}
    ep_ids = list(acc.escalation_policies)
    for i, name in enumerate(["checkout-api", "billing-worker", "ios-app", "edge-proxy", "search"]):
        acc.add_service(name, ep_ids[i % 3], [team_ids[i % 3]])
    service_ids = list(acc.services)
    for i, (name, color) in enumerate([("P1", "a8171c"), ("P2", "eb6016"), ("P3", "f9b406"), ("P4", "3d7fd8")]):
        pid = acc.next_id("P")
        acc.priorities[pid] = {"id": pid, "type": "priority", "name": name, "summary": name, "order": (4 - i) * 64,
                               "color": color, "description": f"Priority {name}",
                               "self": f"https://api.pagerduty.com/priorities/{pid}"}
    priority_ids = list(acc.priorities)

    span = (end - start).total_seconds()
    created = sorted(start.timestamp() + int(rnd.random() * span) for _ in range(n_incidents))
    svc_refs = {s: acc.ref(acc.services[s]) for s in service_ids}
    team_refs = {t: acc.ref(acc.teams[t]) for t in team_ids}
    user_refs = {u: acc.ref(acc.users[u]) for u in user_ids}
    ep_refs = {e: acc.ref(acc.escalation_policies[e]) for e in ep_ids}
    prio_refs = {p: acc.ref(acc.priorities[p]) for p in priority_ids}
    le_seq = 0
    for n, cts in enumerate(created, start=1):
        inc_id = "Q" + _b36(n * 104_729 + 36 ** 11, 13)
        svc_i = rnd.randrange(len(service_ids))
        svc = service_ids[svc_i]
        r = rnd.random()
        status = "resolved" if r < 0.7 else ("acknowledged" if r < 0.85 else "triggered")
        urgency = "high" if rnd.random() < 0.6 else "low"
        created_dt = datetime.fromtimestamp(cts, UTC)
        title = f"{['High error rate', 'Latency above SLO', 'Disk almost full', 'Queue backlog', 'Crash loop'][n % 5]}" \
                f" on {acc.services[svc]['name']} #{n}"
        steps = [60 + rnd.randrange(240) for _ in range(5)]
        times = [created_dt]
        for s in steps:
            times.append(times[-1] + timedelta(seconds=s))
        assignee = user_ids[(svc_i + n) % len(user_ids)]
        inc_teams = [team_refs[team_ids[svc_i % 3]]] + ([team_refs[team_ids[(svc_i + 1) % 3]]] if n % 4 == 0 else [])
        if status == "resolved":
            types = ["trigger", "assign", "notify", "acknowledge", "resolve"]
        elif status == "acknowledged":
            types = ["trigger", "assign", "notify", "escalate", "acknowledge"]
        else:
            types = ["trigger", "assign", "notify", "escalate", "notify"]
        has_note = rnd.random() < note_ratio
        if has_note:
            types.insert(3, "annotate")
        entry_times = times[: len(types)] if len(types) <= len(times) else times + [times[-1] + timedelta(seconds=30)]
        status_change = entry_times[len(types) - 1] if status != "triggered" else created_dt
        assignments = []
        if status != "resolved":
            assignments.append({"at": iso(entry_times[1]), "assignee": user_refs[assignee]})
            if n % 7 == 0 and len(user_ids) > 1:
                assignments.append({"at": iso(entry_times[1]), "assignee": user_refs[user_ids[(svc_i + n + 1) % len(user_ids)]]})
        prio = None if n % 3 == 0 else prio_refs[priority_ids[n % 4]]
        inc = {
            "id": inc_id, "type": "incident", "summary": f"[#{n}] {title}",
            "self": f"https://api.pagerduty.com/incidents/{inc_id}", "html_url": f"{WEB}/incidents/{inc_id}",
            "incident_number": n, "title": title, "description": title, "created_at": iso(created_dt),
            "updated_at": iso(entry_times[len(types) - 1]), "status": status,
            "incident_key": f"{rnd.getrandbits(64):016x}", "service": svc_refs[svc], "assignments": assignments,
            "assigned_via": "escalation_policy", "last_status_change_at": iso(status_change),
            "resolved_at": iso(status_change) if status == "resolved" else None,
            "first_trigger_log_entry": None, "alert_counts": {"all": 0, "triggered": 0, "resolved": 0},
            "pending_actions": [], "is_mergeable": True,
            "escalation_policy": ep_refs[ep_ids[svc_i % 3]], "teams": inc_teams,
            "acknowledgements": [] if status != "acknowledged" else [
                {"at": iso(status_change), "acknowledger": user_refs[assignee]}],
            "last_status_change_by": svc_refs[svc] if status == "triggered" else user_refs[assignee],
            "priority": prio, "resolve_reason": None, "urgency": urgency,
            "body": {"type": "incident_body", "details": f"Details for incident {n}"},
            "conference_bridge": None,
        }
        acc.incidents[inc_id] = inc
        inc_ref = acc.ref(inc, "incident")
        for k, t in enumerate(types):
            le_seq += 1
            lid = "R" + _b36(le_seq * 7_919 + 36 ** 12, 13)
            agent = svc_refs[svc] if t in ("trigger", "notify", "escalate", "assign") else user_refs[assignee]
            entry = {"id": lid, "type": f"{t}_log_entry", "summary": f"{t.capitalize()} on {inc['summary']}",
                     "self": f"https://api.pagerduty.com/log_entries/{lid}",
                     "html_url": f"{WEB}/incidents/{inc_id}/log_entries/{lid}", "created_at": iso(entry_times[k]),
                     "agent": agent, "channel": {"type": "api" if t == "trigger" else "web_trigger"},
                     "service": svc_refs[svc], "incident": inc_ref, "teams": inc_teams, "contexts": [],
                     "event_details": {"description": title} if t == "trigger" else {}}
            if t == "notify":
                entry["user"] = user_refs[assignee]
            if t == "annotate":
                entry["channel"] = {"type": "note", "summary": f"Looking into #{n}"}
                acc.notes[inc_id].append({"id": "P" + _b36(le_seq * 31 + 36 ** 6, 7), "user": user_refs[assignee],
                                          "channel": {"summary": "The PagerDuty website or APIs"},
                                          "content": f"Looking into #{n}", "created_at": iso(entry_times[k])})
            if t == "trigger":
                inc["first_trigger_log_entry"] = {"id": lid, "type": "trigger_log_entry_reference",
                                                  "summary": entry["summary"], "self": entry["self"],
                                                  "html_url": entry["html_url"]}
            acc.log_entries[lid] = entry
        if rnd.random() < alert_ratio:
            for a in range(mix.choice((1, 1, 1, 2, 2, 3))):
                aid = "Q" + _b36(n * 31 + a + 36 ** 12, 13)
                acc.alerts[inc_id].append({
                    "id": aid, "type": "alert", "summary": title, "self": f"https://api.pagerduty.com/alerts/{aid}",
                    "html_url": f"{WEB}/alerts/{aid}", "created_at": iso(created_dt),
                    "status": "resolved" if status == "resolved" else "triggered", "alert_key": f"key-{n}-{a}",
                    "service": svc_refs[svc], "incident": inc_ref, "severity": "critical", "suppressed": False,
                    "body": {"type": "alert_body", "details": {"n": n}}})
            acc._recount_alerts(inc_id)
        else:  # created by hand in the web UI: no alerts, a user triggered it
            creator = user_refs[mix.choice(user_ids)]
            trigger = acc.log_entries[inc["first_trigger_log_entry"]["id"]]
            trigger["channel"] = {"type": "web_trigger"}
            trigger["agent"] = creator
            if status == "triggered":
                inc["last_status_change_by"] = creator
    if deleted_user:
        # the last user left the company; incidents still reference them
        acc.deleted[user_ids[-1]] = acc.users.pop(user_ids[-1])
    acc._seq = max(acc._seq, 10_000)
    acc.touch()
    return acc


# ---------------------------------------------------------------------------------------------
# HTTP server
# ---------------------------------------------------------------------------------------------
@dataclass
class Fault:
    kind: str  # "status", "malformed", "drop", "delay"
    count: int | None  # None: until clear_faults()
    status: int = 500
    headers: bool = True
    body: str | None = None
    path: str | None = None
    delay: float = 0.0


@dataclass
class RequestRecord:
    method: str
    path: str
    query: dict
    status: int
    accept: str = ""
    at: float = field(default_factory=time.time)


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: int, errors: list | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.errors = status, message, code, errors


_DIMENSIONS = {
    "/services": ("services", "services"), "/teams": ("teams", "teams"), "/users": ("users", "users"),
    "/escalation_policies": ("escalation_policies", "escalation_policies"),
    "/priorities": ("priorities", "priorities"),
}
_SINGULAR = {"services": "service", "teams": "team", "users": "user", "escalation_policies": "escalation_policy",
             "priorities": "priority"}


class FakePagerDuty:
    """PagerDuty REST API stand-in on 127.0.0.1 (free port unless given), served from a thread (and one
    thread per client connection, so concurrent requests are handled concurrently).

    ``latency``/``jitter``: every answered request (errors, 401 and 429 included; not a dropped connection)
    waits ``latency + uniform(0, jitter)`` seconds before its response is sent, without holding any lock;
    ``seed`` makes the jitter draws reproducible. The default 0/0 never sleeps.

    ``enforce_rate_limit``: more than ``rate_limit`` requests in a fixed ``rate_window`` (60 s) are
    answered 429 (code 2020, with ratelimit-* headers); every received request counts, thread-safely.

    Measurements: :meth:`request_count` / ``requests`` (the request log), ``in_flight`` and
    ``max_concurrent`` (requests handled at the same time, from parse to response written; see
    :meth:`reset_stats`) and ``rate_limited`` (429s sent by the enforced limit; injected faults do not count)."""

    def __init__(self, account: Account | None = None, *, token: str = "test-token", base_path: str = "",
                 host: str = "127.0.0.1", port: int = 0, rate_limit: int = 960,
                 enforce_rate_limit: bool = False, rate_window: float = 60.0, latency: float = 0.0,
                 jitter: float = 0.0, seed: int | None = None) -> None:
        if latency < 0 or jitter < 0:
            raise ValueError("latency and jitter must be >= 0")
        self.account = account if account is not None else generate_account()
        self.token = token
        self.base_path = base_path.rstrip("/")
        self.rate_limit = rate_limit
        self.enforce_rate_limit = enforce_rate_limit
        self.rate_window = rate_window
        self.latency = latency
        self.jitter = jitter
        self.requests: list[RequestRecord] = []
        self.in_flight = 0  # requests being handled now (parsed, answer not yet sent)
        self.max_concurrent = 0  # peak of in_flight since start or reset_stats()
        self.rate_limited = 0  # 429s sent because the enforced rate limit was exceeded (not injected ones)
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._rnd = random.Random(seed)  # jitter draws (under _lock)
        self._window_start = time.monotonic()
        self._window_count = 0
        self._host, self._port = host, port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "FakePagerDuty":
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer((self._host, self._port), handler)
        self._server.daemon_threads = True
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="fake-pagerduty")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakePagerDuty":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}{self.base_path}"

    def warm(self, incident_includes=("assignees", "services", "teams", "priorities", "escalation_policies",
                                      "first_trigger_log_entries")) -> None:
        """Pre-serialize incidents (plain and with ``incident_includes``) and log entries with their
        embedded incident, so that the first pass is as fast as later ones (benchmarks)."""
        acc = self.account
        acc.incident_index()
        acc.log_index()
        inc = frozenset(incident_includes)
        for inc_id in acc.incidents:
            self._incident_json(inc_id, frozenset())
            self._incident_json(inc_id, inc)
        for lid in acc.log_entries:
            self._log_entry_json(lid, True)

    # -- fault injection / log ---------------------------------------------------------------
    def inject(self, status: int, count: int | None = 1, *, headers: bool = True, body: str | None = None,
               path: str | None = None) -> None:
        """Answer the next ``count`` requests (whose path starts with ``path``, if given) with ``status``.
        ``headers=False`` leaves out the ratelimit-* headers (PagerDuty sometimes does, on 429).
        A fault storm: ``inject(500, count=None)`` (or a large count) lasts until :meth:`clear_faults`."""
        with self._lock:
            self._faults.append(Fault("status", count, status=status, headers=headers, body=body, path=path))

    def inject_malformed(self, count: int | None = 1, path: str | None = None) -> None:
        with self._lock:
            self._faults.append(Fault("malformed", count, path=path))

    def inject_drop(self, count: int | None = 1, path: str | None = None) -> None:
        """Close the connection without answering."""
        with self._lock:
            self._faults.append(Fault("drop", count, path=path))

    def inject_delay(self, seconds: float, count: int | None = 1, path: str | None = None) -> None:
        with self._lock:
            self._faults.append(Fault("delay", count, delay=seconds, path=path))

    def clear_faults(self) -> None:
        """End every injected fault (storms included); later requests are answered normally."""
        with self._lock:
            self._faults.clear()

    def pending_faults(self) -> int:
        """How many injected faults are still waiting (a storm with ``count=None`` counts once)."""
        with self._lock:
            return len(self._faults)

    def reset_stats(self) -> None:
        """Start a new ``max_concurrent`` measurement (from the requests in flight now). ``rate_limited``,
        the request log and the rate-limit window are kept."""
        with self._lock:
            self.max_concurrent = self.in_flight

    def request_count(self, path_prefix: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if path_prefix is None or r.path.startswith(path_prefix))

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if (fault.count is None or fault.count > 0) and (fault.path is None or path.startswith(fault.path)):
                    if fault.count is not None:
                        fault.count -= 1
                        if fault.count == 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            if self.in_flight > self.max_concurrent:
                self.max_concurrent = self.in_flight

    def _leave(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)
            self.in_flight -= 1

    def _count_rate_limited(self) -> None:
        with self._lock:
            self.rate_limited += 1

    def _response_delay(self) -> float:
        """Seconds to wait before answering: ``latency + uniform(0, jitter)`` (0 when both are 0)."""
        if not self.jitter:
            return self.latency
        with self._lock:
            return self.latency + self._rnd.uniform(0, self.jitter)

    def _rate_headers(self) -> tuple[dict, bool]:
        with self._lock:
            now = time.monotonic()
            if now - self._window_start >= self.rate_window:
                self._window_start, self._window_count = now, 0
            self._window_count += 1
            remaining = max(0, self.rate_limit - self._window_count)
            exceeded = self._window_count > self.rate_limit
            reset = max(1, int(self.rate_window - (now - self._window_start) + 0.999))
        return {"ratelimit-limit": str(self.rate_limit), "ratelimit-remaining": str(remaining),
                "ratelimit-reset": str(reset)}, exceeded

    # -- routing -----------------------------------------------------------------------------
    def handle(self, path: str, query: dict) -> tuple[int, str]:
        acc = self.account
        tz = (query.get("time_zone") or ["UTC"])[0]
        if path == "/incidents":
            return 200, self._list_incidents(query, tz)
        if path == "/log_entries":
            return 200, self._list_log_entries(query, tz)
        if path in _DIMENSIONS:
            attr, key = _DIMENSIONS[path]
            objs = list(getattr(acc, attr).values())
            includes = set(query.get("include[]", []))
            limit, offset = _paging(query)
            page = objs[offset: offset + limit]
            if includes:
                page = [self._expand_dimension(o, includes) for o in page]
            return 200, _page_json(key, [json.dumps(o) for o in page], limit, offset, len(objs), query)
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "incidents":
            inc_id, sub = parts[1], parts[2]
            if inc_id not in acc.incidents:
                raise ApiError(404, "Not Found", 2100)
            if sub == "notes":
                return 200, json.dumps({"notes": acc.notes.get(inc_id, [])})
            if sub == "alerts":
                alerts = acc.alerts.get(inc_id, [])
                statuses = set(query.get("statuses[]", []))
                if statuses:
                    alerts = [a for a in alerts if a["status"] in statuses]
                limit, offset = _paging(query)
                return 200, _page_json("alerts", [json.dumps(a) for a in alerts[offset: offset + limit]], limit,
                                       offset, len(alerts), query)
        if len(parts) == 2 and "/" + parts[0] in _DIMENSIONS:
            attr, _ = _DIMENSIONS["/" + parts[0]]
            obj = getattr(acc, attr).get(parts[1])  # deleted objects are gone: 404
            if obj is None:
                raise ApiError(404, "Not Found", 2100)
            includes = set(query.get("include[]", []))
            if includes:
                obj = self._expand_dimension(obj, includes)
            return 200, json.dumps({_SINGULAR[parts[0]]: obj})
        if len(parts) == 2 and parts[0] == "incidents":
            inc = acc.incidents.get(parts[1])
            if inc is None:
                raise ApiError(404, "Not Found", 2100)
            return 200, json.dumps({"incident": inc})
        raise ApiError(404, "Not Found", 2100)

    def _expand_dimension(self, obj: dict, includes: set) -> dict:
        out = dict(obj)
        if "teams" in includes and obj.get("teams"):
            out["teams"] = [self.account.teams.get(t["id"], t) for t in obj["teams"]]
        if "escalation_policies" in includes and obj.get("escalation_policy"):
            out["escalation_policy"] = self.account.escalation_policies.get(obj["escalation_policy"]["id"],
                                                                            obj["escalation_policy"])
        return out

    def _window(self, query: dict, tz: str, default_days: int = 30) -> tuple[float, float]:
        if (query.get("date_range") or [""])[0] == "all":
            return float("-inf"), float("inf")
        try:
            until = parse_time(query["until"][0], tz) if query.get("until") else time.time()
            since = parse_time(query["since"][0], tz) if query.get("since") else until - default_days * 86400
        except (ValueError, KeyError):
            raise ApiError(400, "Invalid Input Provided", 2001, ["Since or until is not a valid date."])
        if since > until:
            raise ApiError(400, "Invalid Input Provided", 2001, ["Since must be before until."])
        if until - since > 183 * 86400:
            raise ApiError(400, "Invalid Input Provided", 2001, ["Date range cannot exceed 6 months."])
        return since, until

    def _list_incidents(self, query: dict, tz: str) -> str:
        acc = self.account
        since, until = self._window(query, tz)
        filters = tuple(frozenset(query.get(k, [])) for k in ("service_ids[]", "team_ids[]", "urgencies[]",
                                                                "statuses[]"))
        sort = tuple(query.get("sort_by", []) or ["incident_number:asc"])
        sort = tuple(s for part in sort for s in part.split(","))
        limit, offset = _paging(query)
        key = ("inc", since, until, filters, sort)
        ids = acc._filter_cache.get(key)
        if ids is None:
            ts, all_ids = acc.incident_index()
            lo, hi = bisect.bisect_left(ts, since), bisect.bisect_left(ts, until)
            ids = all_ids[lo:hi]
            svc, teams, urg, st = filters
            if svc or teams or urg or st:
                keep = []
                for i in ids:
                    inc = acc.incidents[i]
                    if svc and inc["service"]["id"] not in svc:
                        continue
                    if teams and not any(t["id"] in teams for t in inc["teams"]):
                        continue
                    if urg and inc["urgency"] not in urg:
                        continue
                    if st and inc["status"] not in st:
                        continue
                    keep.append(i)
                ids = keep
            for spec in reversed(sort):
                field_, _, direction = spec.partition(":")
                if field_ not in ("incident_number", "created_at", "resolved_at", "urgency"):
                    raise ApiError(400, "Invalid Input Provided", 2001, [f"Invalid sort_by: {spec}"])
                ids = sorted(ids, key=lambda i, f=field_: acc.incidents[i].get(f) or "",
                             reverse=direction == "desc")
            acc._filter_cache[key] = ids
        includes = frozenset(query.get("include[]", []))
        items = [self._incident_json(i, includes) for i in ids[offset: offset + limit]]
        return _page_json("incidents", items, limit, offset, len(ids), query)

    def _incident_json(self, inc_id: str, includes: frozenset) -> str:
        acc = self.account
        key = ("i", inc_id, includes)
        cached = acc._ser_cache.get(key)
        if cached is not None:
            return cached
        inc = acc.incidents[inc_id]
        if includes:
            inc = dict(inc)
            if "services" in includes:
                inc["service"] = acc.lookup("service", inc["service"]["id"]) or inc["service"]
            if "teams" in includes:
                inc["teams"] = [acc.lookup("team", t["id"]) or t for t in inc["teams"]]
            if "escalation_policies" in includes and inc.get("escalation_policy"):
                inc["escalation_policy"] = acc.lookup("escalation_policy", inc["escalation_policy"]["id"]) or \
                    inc["escalation_policy"]
            if "priorities" in includes and inc.get("priority"):
                inc["priority"] = acc.lookup("priority", inc["priority"]["id"]) or inc["priority"]
            if "assignees" in includes:
                inc["assignments"] = [{"at": a["at"], "assignee": acc.lookup("user", a["assignee"]["id"])
                                       or a["assignee"]} for a in inc["assignments"]]
            if "users" in includes and inc.get("last_status_change_by", {}) and \
                    inc["last_status_change_by"].get("type") == "user_reference":
                inc["last_status_change_by"] = acc.lookup("user", inc["last_status_change_by"]["id"]) or \
                    inc["last_status_change_by"]
            if "first_trigger_log_entries" in includes and inc.get("first_trigger_log_entry"):
                entry = acc.log_entries.get(inc["first_trigger_log_entry"]["id"])
                if entry is not None:
                    inc["first_trigger_log_entry"] = entry
        out = json.dumps(inc)
        acc._ser_cache[key] = out
        return out

    def _list_log_entries(self, query: dict, tz: str) -> str:
        acc = self.account
        since, until = self._window(query, tz)
        limit, offset = _paging(query)
        overview = (query.get("is_overview") or ["false"])[0] == "true"
        teams = frozenset(query.get("team_ids[]", []))  # the one filter /log_entries has besides time
        key = ("log", since, until, overview, teams)
        ids = acc._filter_cache.get(key)
        if ids is None:
            ts, all_ids = acc.log_index()
            lo, hi = bisect.bisect_left(ts, since), bisect.bisect_left(ts, until)
            ids = all_ids[lo:hi][::-1]  # newest first, like PagerDuty
            if overview:
                ids = [i for i in ids if acc.log_entries[i]["type"] not in ("notify_log_entry",)]
            if teams:
                ids = [i for i in ids if any(t["id"] in teams for t in acc.log_entries[i].get("teams") or [])]
            acc._filter_cache[key] = ids
        with_incident = "incidents" in query.get("include[]", [])
        items = [self._log_entry_json(lid, with_incident) for lid in ids[offset: offset + limit]]
        return _page_json("log_entries", items, limit, offset, len(ids), query)

    def _log_entry_json(self, lid: str, with_incident: bool) -> str:
        acc = self.account
        ckey = ("l", lid, with_incident)
        s = acc._ser_cache.get(ckey)
        if s is None:
            entry = acc.log_entries[lid]
            inc_id = entry["incident"]["id"]
            if with_incident and inc_id in acc.incidents:
                # splice the incident's (cached) current state into the entry
                rest = {k: v for k, v in entry.items() if k != "incident"}
                s = json.dumps(rest)[:-1] + ', "incident": ' + self._incident_json(inc_id, frozenset()) + "}"
            else:
                s = json.dumps(entry)
            acc._ser_cache[ckey] = s
        return s


def _paging(query: dict) -> tuple[int, int]:
    try:
        limit = int((query.get("limit") or ["25"])[0])
        offset = int((query.get("offset") or ["0"])[0])
    except ValueError:
        raise ApiError(400, "Invalid Input Provided", 2001, ["limit and offset must be integers"])
    if limit < 1 or offset < 0:
        raise ApiError(400, "Invalid Input Provided", 2001, ["limit and offset must be positive"])
    limit = min(limit, 100)
    if offset + limit > MAX_OFFSET:
        raise ApiError(400, "Offset must be less than 10001.", 2002,
                       [f"Offset + limit must be at most {MAX_OFFSET}."])
    return limit, offset


def _page_json(key: str, items: list[str], limit: int, offset: int, total: int, query: dict) -> str:
    want_total = (query.get("total") or ["false"])[0] == "true"
    more = "true" if offset + len(items) < total else "false"
    return (f'{{"{key}":[' + ",".join(items) + f'],"limit":{limit},"offset":{offset},"more":{more},'
            f'"total":{total if want_total else "null"}}}')


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    fake: FakePagerDuty  # set by FakePagerDuty.start

    def log_message(self, format, *args):  # noqa: A002 - quiet
        pass

    def _send(self, status: int, body: str, headers: dict | None = None) -> None:
        data = body.encode()
        delay = self.fake._response_delay()
        if delay > 0:
            time.sleep(delay)  # no lock held: concurrent requests wait side by side
        # Recorded before the client can read the answer, so a caller that has its response
        # always finds its request in `requests` (recording after the write raced the caller).
        self._record(status)
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _record(self, status: int) -> None:
        """Log this request once, with the status it is answered with (0: connection dropped)."""
        if not self._recorded:
            self._recorded = True
            self.fake._leave(RequestRecord("GET", self._record_path, self._record_query, status,
                                           self.headers.get("Accept", "")))

    def do_GET(self):  # noqa: N802
        fake = self.fake
        fake._enter()
        parts = urlsplit(self.path)
        path = parts.path
        query = parse_qs(parts.query, keep_blank_values=True)
        self._recorded = False
        self._record_path, self._record_query = path, query
        status = 200
        try:
            # every received request counts against the window (thread-safe: under the server's lock)
            rate_headers, exceeded = fake._rate_headers()
            if fake.base_path:
                if not path.startswith(fake.base_path + "/"):
                    raise ApiError(404, "Not Found", 2100)
                path = path[len(fake.base_path):]
                self._record_path = path
            fault = fake._take_fault(path)
            if fault and fault.kind == "delay":
                time.sleep(fault.delay)
                fault = None
            if fault and fault.kind == "drop":
                status = 0
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            if fault and fault.kind == "status":
                status = fault.status
                default = {429: ("Rate Limit Exceeded", 2020), 401: ("Unauthorized", 2006),
                           403: ("Forbidden", 2010), 400: ("Invalid Input Provided", 2001),
                           408: ("Request Timeout", 2000)}.get(status, ("Internal Server Error", 2000))
                body = fault.body or json.dumps({"error": {"message": default[0], "code": default[1]}})
                self._send(status, body, rate_headers if fault.headers else None)
                return
            auth = self.headers.get("Authorization", "")
            if auth != f"Token token={fake.token}":
                status = 401
                self._send(401, json.dumps({"error": {"message": "Unauthorized", "code": 2006}}), rate_headers)
                return
            if exceeded and fake.enforce_rate_limit:
                status = 429
                fake._count_rate_limited()
                self._send(429, json.dumps({"error": {"message": "Rate Limit Exceeded", "code": 2020}}),
                           rate_headers)
                return
            code, body = fake.handle(path, query)
            status = code
            if fault and fault.kind == "malformed":
                body = body[: max(1, len(body) // 2)] + "<html>oops"
            self._send(code, body, rate_headers)
        except ApiError as exc:
            status = exc.status
            err = {"message": exc.message, "code": exc.code}
            if exc.errors:
                err["errors"] = exc.errors
            self._send(exc.status, json.dumps({"error": err}))
        except Exception as exc:  # noqa: BLE001 - a server bug must still answer
            status = 500
            self._send(500, json.dumps({"error": {"message": f"fake server error: {exc!r}", "code": 2000}}))
        finally:
            self._record(status)  # the dropped connection, which is never answered


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a generated PagerDuty account locally")
    parser.add_argument("--incidents", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--start", default="2024-03-01T00:00:00Z")
    parser.add_argument("--days", type=float, default=7)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default="test-token")
    parser.add_argument("--base-path", default="")
    parser.add_argument("--rate-limit", type=int, default=960, help="requests per 60 s window (960)")
    parser.add_argument("--enforce-rate-limit", action="store_true",
                        help="answer 429 (code 2020) past --rate-limit requests in the window")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds every response waits (0)")
    parser.add_argument("--jitter", type=float, default=0.0, help="plus uniform(0, JITTER) seconds (0)")
    parser.add_argument("--alert-ratio", type=float, default=0.97,
                        help="share of incidents with 1-3 alerts; the others are manual (0.97)")
    parser.add_argument("--note-ratio", type=float, default=0.15, help="share of incidents with a note (0.15)")
    parser.add_argument("--warm", action="store_true", help="pre-serialize every incident and log entry")
    args = parser.parse_args(argv)
    if args.latency < 0 or args.jitter < 0:
        parser.error("--latency and --jitter must be >= 0")
    start = datetime.fromisoformat(args.start)
    account = generate_account(args.incidents, args.seed, start, start + timedelta(days=args.days),
                               alert_ratio=args.alert_ratio, note_ratio=args.note_ratio)
    server = FakePagerDuty(account, token=args.token, base_path=args.base_path, port=args.port,
                           rate_limit=args.rate_limit, enforce_rate_limit=args.enforce_rate_limit,
                           latency=args.latency, jitter=args.jitter, seed=args.seed)
    if args.warm:
        server.warm()
    server.start()
    print(server.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
