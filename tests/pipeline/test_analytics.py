"""The views of schema ``analytics`` (docs/analytics.md) against an independent oracle.

A scenario account (four weeks of generated incidents plus hand-made ones: merges, reassignments, escalations,
unacknowledged and re-acknowledged incidents, reopened ones, resolutions by a user, a timeout and an integration,
responders in other time zones notified around the working-hours boundaries, deleted users and services, null
urgencies, repeated incident keys, incidents of two teams and of none) is loaded through the real pipeline steps
from the fake PagerDuty server into a throwaway PostgreSQL; every row and column of every view must equal what
tests/support/analytics_oracle.py reckons from the same account. The oracle follows the spec, never the SQL: a
failure here is a view (or the pipeline) disagreeing with the spec, or the spec saying something new."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import pytest
from pg8000.exceptions import DatabaseError

from pagerduty_pipeline import migrations, roles
from tests.pipeline.conftest import make_env, make_server, run_pipeline
from tests.support.analytics_oracle import (COLUMNS, SPEC_TYPES, VIEWS, WorkingHours, differences, expected_views,
                                            percentile_cont, row_key)
from tests.support.fake_pagerduty import Account, generate_account, iso

UTC = timezone.utc
WEEK1 = datetime(2024, 3, 4, tzinfo=UTC)  # a Monday: the generated incidents fill the three weeks from here
WEEK4 = datetime(2024, 3, 25, tzinfo=UTC)  # the hand-made incidents' week (London moves to BST on Sunday 31st)
FIRST_RUN = {"since": "2024-03-03T00:00:00Z", "until": "2024-04-02T00:00:00Z"}  # all of the scenario
LOADED_SINCE = datetime(2024, 3, 3, tzinfo=UTC)  # every run loads from here on
LATE = datetime(2024, 4, 2, 9, tzinfo=UTC)  # late updates happen after the first run's window
INSUFFICIENT_PRIVILEGE = "42501"
VIEW_NOT_UPDATABLE = "55000"  # PostgreSQL refuses writes to a view it cannot update, for every role
NOT_A_TABLE = "42809"  # TRUNCATE of a view, for every role


def oracle(account: Account, hours: WorkingHours = WorkingHours()) -> dict[str, dict]:
    """The oracle's views of what the runs loaded (FIRST_RUN and later windows: everything since LOADED_SINCE)."""
    return expected_views(account, hours, loaded_since=LOADED_SINCE)


def at(days: float, hours: float = 0, minutes: float = 0, seconds: float = 0, *, week: datetime = WEEK4) -> datetime:
    return week + timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


@dataclass
class Scenario:
    """The account and the ids the known-answer assertions name."""

    account: Account
    ids: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> str:
        return self.ids[name]


def build_scenario() -> Scenario:
    """The scenario account (see the module's docstring); all its activity lies inside FIRST_RUN."""
    acc = generate_account(150, 5, WEEK1, WEEK1 + timedelta(days=21))
    sc = Scenario(acc)
    users = {u["name"].split()[0].lower(): uid for uid, u in acc.users.items()}
    services = {s["name"]: sid for sid, s in acc.services.items()}
    teams = {t["name"]: tid for tid, t in acc.teams.items()}
    ada, alan, grace = users["ada"], users["alan"], users["grace"]
    checkout, billing, ios, edge, search = (services[n] for n in ("checkout-api", "billing-worker", "ios-app",
                                                                  "edge-proxy", "search"))
    primary = acc.services[checkout]["escalation_policy"]["id"]
    yuki = acc.add_user("Yuki Tanaka", time_zone="Asia/Tokyo")["id"]  # UTC+9
    sam = acc.add_user("Sam Rivera", time_zone="America/New_York")["id"]  # EST, EDT from 10 March
    lee = acc.add_user("Lee Moon", time_zone="Mars/Olympus_Mons")["id"]  # not a zone: the default applies
    kim = acc.add_user("Kim Park")["id"]
    acc.set_time_zone(kim, None)  # no zone at all: the default too
    old = acc.add_user("Old Timer", time_zone="Asia/Kolkata")["id"]  # deleted below: a stub without a zone
    batch = acc.add_service("batch-jobs", primary)["id"]  # no team
    legacy = acc.add_service("legacy-cron", primary, [teams["Platform"]])["id"]  # deleted below
    sc.ids.update(ada=ada, alan=alan, grace=grace, yuki=yuki, sam=sam, lee=lee, kim=kim, old=old, batch=batch,
                  legacy=legacy, checkout=checkout, billing=billing, edge=edge, search=search,
                  platform=teams["Platform"],
                  payments=teams["Payments"])

    def new(name: str, when: datetime, service: str, **kw: Any) -> str:
        sc.ids[name] = acc.add_incident(when, service, **kw)["id"]
        return sc.ids[name]

    # a merge: the source's alert moves to the survivor; the source "resolves" 300 s after creation
    tgt = new("merge_target", at(0, 10), checkout, with_alerts=2, incident_key="db1-disk")
    src = new("merged", at(0, 10, 1), checkout, with_alerts=1, incident_key="db1-disk")
    acc.acknowledge(tgt, at(0, 10, 3), ada, by="user")
    acc.merge(tgt, src, at(0, 10, 6), ada)
    acc.resolve(tgt, at(0, 10, 40), ada, by="user")
    # reassigned twice (Yuki at 20:05 JST, Sam at 07:20 EDT: both outside working hours)
    r = new("reassigned", at(0, 11), billing, with_alerts=1)
    acc.reassign(r, at(0, 11, 5), yuki, by_user_id=alan)
    acc.reassign(r, at(0, 11, 20), sam, by_user_id=yuki)
    acc.acknowledge(r, at(0, 11, 25), sam, by="user")
    acc.resolve(r, at(0, 11, 50), sam, by="user")
    # escalated to Sam at 08:30 EDT, acknowledged at 09:00 EDT, resolved by monitoring
    e = new("escalated", at(0, 12), ios, urgency="low", with_alerts=1)
    acc.escalate(e, at(0, 12, 30), sam)
    acc.acknowledge(e, at(0, 13), sam, by="user")
    acc.resolve(e, at(0, 13, 30), by="integration")
    # acknowledged, the acknowledgement timed out, acknowledged again by someone else, timed out again and
    # acknowledged by the first responder again (one incident for her that week), auto-resolved
    u = new("reacked", at(1, 9), checkout, with_alerts=1)
    acc.acknowledge(u, at(1, 9, 2), ada, by="user")
    acc.unacknowledge(u, at(1, 9, 32))
    acc.acknowledge(u, at(1, 9, 40), alan, by="user")
    acc.unacknowledge(u, at(1, 10, 10))
    acc.acknowledge(u, at(1, 10, 15), ada, by="user")
    acc.resolve(u, at(1, 12), by="timeout")
    # resolved without ever being acknowledged: by monitoring in 240 s, by a user in 20 minutes
    n = new("unacked_integration", at(1, 10), edge, with_alerts=3)
    acc.resolve(n, at(1, 10, 4), by="integration")
    n2 = new("unacked_user", at(1, 10, 10), edge, with_alerts=1)
    acc.resolve(n2, at(1, 10, 30), grace, by="user")
    # reopened: resolved, triggered again, finally resolved by another user (2 h after creation)
    o = new("reopened", at(2, 8), search, with_alerts=1)
    acc.acknowledge(o, at(2, 8, 5), alan, by="user")
    acc.resolve(o, at(2, 8, 20), alan, by="user")
    acc.reopen(o, at(2, 9))
    acc.acknowledge(o, at(2, 9, 10), grace, by="user")
    acc.resolve(o, at(2, 10), grace, by="user")
    o2 = new("reopened_open", at(2, 11), search, with_alerts=1)  # open now: no resolution
    acc.resolve(o2, at(2, 11, 10), alan, by="user")
    acc.reopen(o2, at(2, 11, 30))
    o3 = new("acked_after_reopen", at(2, 12), search, with_alerts=1)  # first acknowledged 1 h after creation
    acc.resolve(o3, at(2, 12, 2), by="integration")
    acc.reopen(o3, at(2, 12, 30))
    acc.acknowledge(o3, at(2, 13), alan, by="user")
    acc.resolve(o3, at(2, 13, 30), alan, by="user")
    # acknowledged exactly 300 s, 900 s and 301 s after creation; resolved exactly 300 s after creation
    for name, hour, secs in (("ack_300", 9, 300), ("ack_900", 10, 900), ("ack_301", 11, 301)):
        acc.acknowledge(new(name, at(3, hour), billing), at(3, hour, seconds=secs), alan, by="user")
    acc.resolve(new("resolved_300", at(3, 12), edge, with_alerts=1), at(3, 12, 5), by="integration")
    # null urgency; the legacy helpers' entries (agent: the service) acknowledge and resolve it
    new("null_urgency", at(3, 13), checkout, urgency=None, status="resolved", with_alerts=1)
    new("odd_urgency", at(3, 13, 30), checkout, urgency="critical")  # not high or low: unknown too
    # two acknowledgements in the same second: the first is the one with the smaller log entry id (Ada's)
    tie = new("ack_tie", at(3, 16), billing)
    acc.acknowledge(tie, at(3, 16, 2), ada, by="user")
    acc.unacknowledge(tie, at(3, 16, 2))
    acc.acknowledge(tie, at(3, 16, 2), alan, by="user")
    # one key twice in the same second on billing: the incident with the larger id repeats it
    new("key_tie_a", at(4, 18), billing, incident_key="tie-key")
    new("key_tie_b", at(4, 18), billing, incident_key="tie-key")
    # one incident key again and again on edge-proxy (first in week 3), once on search (its first there)
    key_first = new("key_first", at(-5, 10), edge, incident_key="edge-5xx", with_alerts=1)
    acc.resolve(key_first, at(0, 9), grace, by="user")  # created in week 3, resolved (by Grace) in week 4
    new("key_again", at(3, 14), edge, incident_key="edge-5xx", with_alerts=2)
    new("key_third", at(4, 9), edge, incident_key="edge-5xx", with_alerts=1)
    new("key_other_service", at(4, 10), search, incident_key="edge-5xx", with_alerts=1)
    # two teams; no team
    two = new("two_teams", at(4, 11), checkout, with_alerts=1,
              teams=[acc.ref(acc.teams[teams["Platform"]]), acc.ref(acc.teams[teams["Payments"]])])
    acc.acknowledge(two, at(4, 11, 7), ada, by="user")
    new("no_team", at(4, 12), batch, status="resolved", with_alerts=1)
    new("no_team_week3", at(-4, 12), batch, with_alerts=1)
    # a service deleted later: one incident resolved in week 3, one still open
    lg = new("legacy_resolved", at(-6, 9), legacy, with_alerts=1)
    acc.acknowledge(lg, at(-6, 9, 10), ada, by="user")
    acc.resolve(lg, at(-6, 10), ada, by="user")
    new("legacy_open", at(4, 15), legacy, with_alerts=1)
    # a user deleted later (Asia/Kolkata while listed; their stub has no zone): notified 04:00 UTC (09:30 IST)
    i0 = new("old_timer_escalated", at(3, 3, 50), checkout, assignee_id=None)
    acc.escalate(i0, at(3, 4), old)
    acc.acknowledge(i0, at(3, 4, 5), old, by="user")
    acc.resolve(i0, at(3, 4, 30), old, by="user")
    i1 = new("old_timer_assigned", at(3, 15), checkout, assignee_id=old)
    acc.acknowledge(i1, at(3, 15, 10), old, by="user")
    acc.resolve(i1, at(3, 15, 40), old, by="user")
    # Yuki (Asia/Tokyo): Sunday 23:30 UTC is Monday 08:30 JST (outside, week of 18 March in UTC); Monday 09:00,
    # 16:59:59 (inside) and 17:00 JST (outside); Friday 23:30 JST, Saturday 00:30 and 12:00 JST (outside)
    y0 = new("yuki_monday", at(-1, 23), ios, assignee_id=None)
    for when in (at(-1, 23, 30), at(0), at(0, 7, 59, 59), at(0, 8)):
        acc.escalate(y0, when, yuki)
    acc.acknowledge(y0, at(0, 8, 10), yuki, by="user")
    y1 = new("yuki_weekend", at(4, 14), ios, assignee_id=None)
    for when in (at(4, 14, 30), at(4, 15, 30), at(5, 3)):
        acc.escalate(y1, when, yuki)
    acc.resolve(y1, at(5, 3, 20), yuki, by="user")
    # Sam (America/New_York): 8 March 13:30 UTC is 08:30 EST (outside; it would be 09:30 in EDT), 14:30 is 09:30
    # EST; 25 March 20:59 / 21:00 UTC are 16:59 / 17:00 EDT; Saturday 02:00 UTC is Friday 22:00 EDT (outside)
    s0 = new("sam_before_dst", at(4, 13, week=WEEK1), edge, assignee_id=None)
    acc.escalate(s0, at(4, 13, 30, week=WEEK1), sam)
    acc.escalate(s0, at(4, 14, 30, week=WEEK1), sam)
    acc.resolve(s0, at(4, 15, week=WEEK1), sam, by="user")
    s1 = new("sam_evening", at(0, 20), edge, assignee_id=None)
    for when in (at(0, 20, 59), at(0, 21), at(1, 13), at(5, 2)):
        acc.escalate(s1, when, sam)
    # Lee (an unknown zone) and Kim (none) are judged in the default zone, UTC
    l0 = new("default_zone", at(1, 16), search, assignee_id=None)
    for when, who in ((at(1, 16, 59, 59), lee), (at(1, 17), lee), (at(2, 8), kim)):
        acc.escalate(l0, when, who)
    # no incident key, twice on one service: not a repeat
    new("no_key_1", at(4, 16), search, incident_key=None, title=None)
    new("no_key_2", at(4, 17), search, incident_key=None)
    # London after the change to BST: 08:30:02 UTC is 09:30 local (inside)
    bst = new("london_bst", at(7, 8, 30), checkout)
    acc.acknowledge(bst, at(7, 8, 40), ada, by="user")
    # the only incident of batch-jobs that week, acknowledged, then merged: no time figure, every share NULL
    lone = new("lone_merged", at(7, 9), batch, with_alerts=1, assignee_id=kim)
    acc.acknowledge(lone, at(7, 9, 1), kim, by="user")
    acc.merge(bst, lone, at(7, 9, 3), kim)

    acc.delete_service(legacy)
    acc.delete_user(old)
    assert acc.status_log_mismatches() == []
    return sc


def small_account() -> Account:
    """Two days of generated incidents in WEEK4, for a case of its own."""
    return generate_account(20, 9, WEEK4, WEEK4 + timedelta(days=2))


def add_user_only_ever_notified(acc: Account) -> str:
    """A user (Europe/Paris) PagerDuty notified once, Tuesday 08:30 UTC (09:30 in Paris, 08:30 in the default
    zone: outside), who never acted and was assigned only until the incident escalated on; then deleted. The
    only trace of them is the notify entry's ``user`` reference. Returns their id."""
    gone = acc.add_user("Gone Soon", time_zone="Europe/Paris")["id"]
    responder = next(iter(acc.users))
    inc = acc.add_incident(at(1, 8, 20), assignee_id=None)["id"]
    acc.escalate(inc, at(1, 8, 30), gone)
    acc.escalate(inc, at(1, 8, 50), responder)
    acc.acknowledge(inc, at(1, 8, 55), responder, by="user")
    acc.delete_user(gone)
    return gone


def add_incident_resolved_before_the_window(acc: Account) -> str:
    """An incident created and resolved (10 minutes later) before LOADED_SINCE, noted inside FIRST_RUN: the run
    stores the incident (embedded in the note's entry) but none of its older entries. Returns its id."""
    early = acc.add_incident(datetime(2024, 3, 1, 10, tzinfo=UTC), status="resolved", with_alerts=1)["id"]
    acc.add_note(early, "postmortem written", at(2, 9), next(iter(acc.users)))
    return early


@contextlib.contextmanager
def served_and_loaded(pg: Any, arns: dict, account: Account, name: str = "analytics-1") -> Iterator[tuple]:
    """The fake PagerDuty serving ``account``, loaded by one run over FIRST_RUN; yields (server, env)."""
    with make_server(account=account) as server:
        env = make_env(pg, arns, server)
        out = run_pipeline(env, FIRST_RUN, name=name)
        assert out["step3"] and out["step3"]["success"], out["step3"] or out["step2"][-1:] or out["step1"]
        yield server, env


# -- reading the views -------------------------------------------------------------------------------------------
def read_view(conn: Any, view: str) -> dict[Any, dict]:
    """A view's rows keyed as the oracle keys them; a key twice is an error (one row per key)."""
    rows = conn.run(f"SELECT * FROM analytics.{view}")
    names = [c["name"] for c in conn.columns]
    out: dict[Any, dict] = {}
    for values in rows:
        row = dict(zip(names, values))
        key = row_key(view, row)
        assert key not in out, f"analytics.{view}: two rows for {key!r}"
        out[key] = row
    return out


def read_views(conn: Any) -> dict[str, dict]:
    return {view: read_view(conn, view) for view in VIEWS}


def view_differences(conn: Any, expected: dict[str, dict], views: tuple[str, ...] = VIEWS) -> str:
    """How the views differ from the oracle, one line per difference under each view's name ("" when none)."""
    out = {view: differences(expected[view], read_view(conn, view), limit=60) for view in views}
    return "".join(f"\nanalytics.{view}:\n  " + "\n  ".join(diff) for view, diff in out.items() if diff)


@contextlib.contextmanager
def as_role(conn: Any, role: str) -> Iterator[Any]:
    """The connection switched to ``role`` (SET ROLE) inside, back to its login user after."""
    roles.set_role(conn, role)
    try:
        yield conn
    finally:
        roles.set_role(conn, None)


# -- fixtures ----------------------------------------------------------------------------------------------------
@pytest.fixture
def scenario() -> Scenario:
    return build_scenario()


@pytest.fixture
def loaded(pg, secrets_arns, db, scenario: Scenario) -> Iterator[tuple[Scenario, Any, dict]]:
    """The scenario loaded by one run over FIRST_RUN; yields (scenario, server, env)."""
    with served_and_loaded(pg, secrets_arns, scenario.account) as (server, env):
        yield scenario, server, env


# -- the fake's new helpers and the oracle, without a database ----------------------------------------------------
def test_the_fake_helpers_act_as_pagerduty_and_keep_the_account_consistent(scenario):
    acc = scenario.account
    assert acc.status_log_mismatches() == []
    src, tgt = acc.incidents[scenario["merged"]], acc.incidents[scenario["merge_target"]]
    assert src["status"] == "resolved" and src["resolve_reason"]["type"] == "merge_resolve_reason"
    assert src["resolve_reason"]["incident"]["id"] == tgt["id"]
    assert src["alert_counts"]["all"] == 0 and tgt["alert_counts"]["all"] == 3
    assert {a["incident"]["id"] for a in acc.alerts[tgt["id"]]} == {tgt["id"]}

    def entries(inc: str) -> list[dict]:
        return sorted((e for e in acc.log_entries.values() if e["incident"]["id"] == inc),
                      key=lambda e: (e["created_at"], e["id"]))

    merge_entry = [e for e in entries(src["id"]) if e["type"] == "resolve_log_entry"][-1]
    assert merge_entry["agent"]["id"] == scenario["ada"] and merge_entry["agent"]["type"] == "user_reference"
    assigns = [e for e in entries(scenario["reassigned"]) if e["type"] == "assign_log_entry"]
    assert [e["agent"]["id"] for e in assigns[1:]] == [scenario["alan"], scenario["yuki"]]
    notified = [(e["user"]["id"], e["channel"]) for e in entries(scenario["reassigned"])
                if e["type"] == "notify_log_entry"]
    assert notified[1:] == [(scenario["yuki"], {"type": "auto"}), (scenario["sam"], {"type": "auto"})]
    esc = [e for e in entries(scenario["escalated"]) if e["type"] == "escalate_log_entry"]
    assert len(esc) == 1 and esc[0]["agent"]["type"] == "service_reference"
    unack = [e for e in entries(scenario["reacked"]) if e["type"] == "unacknowledge_log_entry"]
    assert unack[0]["channel"] == {"type": "timeout"} and unack[0]["agent"]["type"] == "service_reference"
    final = {name: [e for e in entries(scenario[name]) if e["type"] == "resolve_log_entry"][-1]
             for name in ("reacked", "unacked_integration", "unacked_user")}
    assert final["reacked"]["channel"] == {"type": "timeout"}
    assert final["unacked_integration"]["agent"]["type"] == "generic_events_api_inbound_integration_reference"
    assert final["unacked_integration"]["channel"] == {"type": "api"}
    assert final["unacked_user"]["agent"]["id"] == scenario["grace"]
    reopened = acc.incidents[scenario["reopened_open"]]
    assert reopened["status"] == "triggered" and reopened["resolved_at"] is None
    assert [e["type"] for e in entries(reopened["id"])][-2:] == ["resolve_log_entry", "trigger_log_entry"]
    assert acc.users[scenario["yuki"]]["time_zone"] == "Asia/Tokyo" and acc.users[scenario["kim"]]["time_zone"] is None
    with pytest.raises(ValueError):
        acc.merge(tgt["id"], scenario["reassigned"], LATE)  # both resolved: PagerDuty merges open incidents


def test_percentile_cont_interpolates_as_postgresql_does():
    assert percentile_cont([], 0.5) is None
    assert percentile_cont([7.0], 0.9) == 7.0
    assert percentile_cont([1, 2, 3, 4], 0.5) == 2.5
    assert percentile_cont([10, 20, 30, 40, 50], 0.9) == pytest.approx(46.0)  # 40 + 0.6 * 10
    assert percentile_cont([3, 1, 2], 0.9) == pytest.approx(2.8)


def test_the_oracle_gives_the_hand_computed_answers_of_the_scenario(scenario):
    """The oracle itself, on the hand-made incidents, against answers worked out by hand from the spec."""
    sc = scenario
    views = oracle(sc.account)
    inc = views["incidents"]
    merged, tgt = inc[sc["merged"]], inc[sc["merge_target"]]
    assert merged["is_merged"] and merged["merged_into_incident_id"] == sc["merge_target"]
    assert merged["resolved_by_type"] == "merge" and merged["seconds_to_resolve"] is None
    assert tgt["alert_count"] == 3 and tgt["seconds_to_first_ack"] == 180 and tgt["seconds_to_resolve"] == 2400
    assert tgt["resolved_by_type"] == "user" and tgt["resolved_by_name"] == "Ada Lovelace"
    assert inc[sc["reassigned"]]["reassignments"] == 2 and inc[sc["reassigned"]]["notifications"] == 3
    assert inc[sc["escalated"]]["escalations"] == 1 and inc[sc["escalated"]]["reassignments"] == 0
    assert inc[sc["escalated"]]["resolved_by_type"] == "integration" and inc[sc["escalated"]]["resolved_by_id"] is None
    reacked = inc[sc["reacked"]]
    assert reacked["first_acknowledged_at"] == at(1, 9, 2) and reacked["first_acknowledged_by_id"] == sc["ada"]
    assert reacked["seconds_to_first_ack"] == 120 and reacked["resolved_by_type"] == "timeout"
    assert inc[sc["unacked_integration"]]["first_acknowledged_at"] is None
    reopened = inc[sc["reopened"]]
    assert reopened["reopen_count"] == 1 and reopened["seconds_to_resolve"] == 7200
    assert reopened["resolved_by_id"] == sc["grace"] and reopened["resolved_at"] == at(2, 10)
    still_open = inc[sc["reopened_open"]]
    assert still_open["reopen_count"] == 1 and still_open["resolved_at"] is None
    assert still_open["resolved_by_type"] is None and still_open["seconds_to_resolve"] is None
    assert inc[sc["acked_after_reopen"]]["seconds_to_first_ack"] == 3600
    assert inc[sc["null_urgency"]]["resolved_by_type"] == "service"  # the legacy helper's entry: the service
    assert inc[sc["null_urgency"]]["urgency"] is None
    assert sorted(inc[sc["two_teams"]]["team_ids"]) == sorted([sc["platform"], sc["payments"]])
    assert inc[sc["no_team"]]["team_ids"] == [] and inc[sc["legacy_open"]]["service_name"] == "legacy-cron"

    w4, w5 = at(0).date(), at(7).date()
    noisy, resp = views["noisy_services"], views["responder_weekly"]
    assert noisy[(w4, sc["edge"])]["repeated_key_incidents"] == 2  # key_again, key_third (key_first: week 3)
    assert noisy[(w4, sc["search"])]["repeated_key_incidents"] == 0  # edge-5xx is new there; null keys
    assert noisy[(w4, sc["checkout"])]["repeated_key_incidents"] >= 1  # the merged one repeats db1-disk
    # resolved within 300 s on edge-proxy that week: unacked_integration (240 s), resolved_300 (300 s)
    edge_w4 = [r for r in inc.values() if r["service_id"] == sc["edge"] and r["week_start"] == w4]
    assert noisy[(w4, sc["edge"])]["resolved_within_5m"] == 2 == sum(
        1 for r in edge_w4 if r["seconds_to_resolve"] is not None and r["seconds_to_resolve"] <= 300)
    assert not any(key[1] == sc["batch"] for key in views["team_weekly"])
    lone = views["service_weekly"][(w5, sc["batch"])]
    assert (lone["incidents"], lone["merged"], lone["acknowledged"], lone["resolved"]) == (1, 1, 0, 0)
    assert all(lone[f] is None for f in ("ack_p50_seconds", "ack_p90_seconds", "resolve_p50_seconds",
                                         "resolve_p90_seconds", "acked_within_5m_share", "acked_within_15m_share",
                                         "resolved_without_ack_share"))
    assert (noisy[(w5, sc["batch"])]["alerts"], noisy[(w5, sc["batch"])]["alerts_per_incident"]) == (0, 0.0)
    assert resp[(w5, sc["kim"])]["acknowledged"] == 1  # a merged incident's acknowledgement still counts
    assert inc[sc["london_bst"]]["alert_count"] == 1 and inc[sc["no_key_1"]]["title"] is None

    assert resp[(w4, sc["grace"])]["resolved"] >= 2  # unacked_user and key_first (created the week before)
    assert resp[(w4, sc["ada"])]["acknowledged"] == 4  # merge_target, reacked (twice), two_teams, ack_tie
    yuki_w4 = resp[(w4, sc["yuki"])]
    # notified Mon 09:00, 16:59:59 (in), 17:00, 20:05 (reassigned), Fri 23:30, Sat 00:30, Sat 12:00 JST (out)
    assert (yuki_w4["notifications"], yuki_w4["notifications_off_hours"]) == (7, 5)
    assert yuki_w4["time_zone"] == "Asia/Tokyo" and yuki_w4["acknowledged"] == 1 and yuki_w4["resolved"] == 1
    assert (resp[(at(-7).date(), sc["yuki"])]["notifications"],
            resp[(at(-7).date(), sc["yuki"])]["notifications_off_hours"]) == (1, 1)  # Sunday UTC = Monday JST
    sam_w4 = resp[(w4, sc["sam"])]
    # 07:20 EDT (out), 08:30 (out), 16:59 (in), 17:00 (out), Tue 09:00 (in), Fri 22:00 EDT (out)
    assert (sam_w4["notifications"], sam_w4["notifications_off_hours"]) == (6, 4)
    assert (sam_w4["acknowledged"], sam_w4["resolved"]) == (2, 1)
    sam_w1 = resp[(WEEK1.date(), sc["sam"])]
    assert (sam_w1["notifications"], sam_w1["notifications_off_hours"], sam_w1["resolved"]) == (2, 1, 1)
    lee = resp[(w4, sc["lee"])]
    assert (lee["time_zone"], lee["notifications"], lee["notifications_off_hours"]) == ("UTC", 2, 1)
    assert resp[(w4, sc["kim"])]["time_zone"] == "UTC" and resp[(w4, sc["kim"])]["notifications_off_hours"] == 1
    old = resp[(w4, sc["old"])]
    # a stub: the default zone; 04:00 UTC is outside (it was 09:30 in Kolkata), 15:00:02 UTC inside
    assert (old["user_name"], old["time_zone"], old["notifications"], old["notifications_off_hours"]) == \
        ("Old Timer", "UTC", 2, 1)
    assert (old["acknowledged"], old["resolved"]) == (2, 2)
    ada_w4 = resp[(w4, sc["ada"])]
    assert ada_w4["resolved"] >= 1 and resp[(w5, sc["ada"])]["notifications_off_hours"] == 0  # BST
    alan_w4 = resp[(w4, sc["alan"])]
    # acknowledged: reacked, reopened, acked_after_reopen, ack_300, ack_900, ack_301, ack_tie
    assert alan_w4["acknowledged"] == 7
    tie = inc[sc["ack_tie"]]
    assert (tie["first_acknowledged_by_id"], tie["seconds_to_first_ack"]) == (sc["ada"], 120)
    assert sc["key_tie_a"] < sc["key_tie_b"] and noisy[(w4, sc["billing"])]["repeated_key_incidents"] == 1
    assert noisy[(w4, sc["search"])]["incidents"] == sum(
        1 for r in inc.values() if r["service_id"] == sc["search"] and r["week_start"] == w4)

    acct = views["account_weekly"][w4]
    kept = [r for r in inc.values() if r["week_start"] == w4 and not r["is_merged"]]
    assert acct["merged"] == 1 and acct["incidents"] == len(kept) + 1 and acct["unknown_urgency"] == 2
    within_5m = [r for r in kept if r["seconds_to_first_ack"] is not None and r["seconds_to_first_ack"] <= 300]
    assert sc["ack_300"] in {r["incident_id"] for r in within_5m}
    assert sc["ack_301"] not in {r["incident_id"] for r in within_5m}
    assert acct["acked_within_5m_share"] == pytest.approx(len(within_5m) / len(kept))


# -- the views against the oracle --------------------------------------------------------------------------------
def test_the_views_in_schema_analytics_are_the_specs_with_its_columns_and_types(loaded, db):
    relations = dict(db.run("""SELECT c.relname, c.relkind::text FROM pg_class c
                                 JOIN pg_namespace n ON n.oid = c.relnamespace
                                WHERE n.nspname = 'analytics' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')"""))
    # the views, the setting, and the two tables the log-entry trigger keeps for them
    assert relations == {**{v: "v" for v in VIEWS}, "working_hours": "r", "incident_log_facts": "r",
                         "notifications": "r"}
    for view in VIEWS:
        got = db.run("""SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
                         WHERE a.attrelid = CAST(:v AS regclass) AND a.attnum > 0 AND NOT a.attisdropped
                         ORDER BY a.attnum""", v=f"analytics.{view}")
        assert [r[0] for r in got] == list(COLUMNS[view]), view
        types = dict(got)
        wrong = {c: (types[c], t) for c, t in SPEC_TYPES[view].items() if types[c] != t}
        assert not wrong, (view, wrong)


def test_every_view_matches_the_oracle_row_for_row_on_the_scenario(loaded, db):
    scenario, _server, _env = loaded
    diffs = view_differences(db, oracle(scenario.account))
    assert not diffs, diffs


def test_a_late_acknowledgement_resolution_and_merge_change_the_figures_on_the_next_run(loaded, db):
    """Late updates: changes to incidents the first run loaded, picked up by the next scheduled run (its window
    starts at the watermark less the overlap), change the views to the oracle's figures of the new state."""
    scenario, server, env = loaded
    acc = scenario.account
    before, views_before = oracle(acc), read_views(db)
    old_generated = sorted((i for i in acc.incidents.values() if i["created_at"] < iso(WEEK4)),
                           key=lambda i: i["incident_number"])
    triggered = [i["id"] for i in old_generated if i["status"] == "triggered"]
    acked = [i["id"] for i in old_generated if i["status"] == "acknowledged"]
    resolved = [i["id"] for i in old_generated if i["status"] == "resolved" and not i.get("resolve_reason")]
    acc.acknowledge(triggered[0], LATE, scenario["grace"], by="user")
    acc.resolve(acked[0], LATE + timedelta(minutes=1), scenario["alan"], by="user")
    acc.unacknowledge(acked[1], LATE + timedelta(minutes=2))
    acc.reopen(resolved[0], LATE + timedelta(minutes=3))
    # merged into a new incident (listed by the next run) and into an old one worked on afterwards (logged): a
    # survivor's new alert count comes with no log entry of its own, so it is loaded when the survivor is listed
    # or logged again
    fresh = acc.add_incident(LATE + timedelta(minutes=4), scenario["checkout"], with_alerts=1)["id"]
    acc.merge(fresh, triggered[1], LATE + timedelta(minutes=5), scenario["ada"])
    acc.merge(triggered[2], acked[2], LATE + timedelta(minutes=6), scenario["ada"])
    acc.acknowledge(triggered[2], LATE + timedelta(minutes=8), scenario["ada"], by="user")
    acc.escalate(scenario["sam_evening"], LATE + timedelta(hours=12), scenario["sam"])  # 21:00 EDT
    assert acc.status_log_mismatches() == []
    after = oracle(acc)
    assert after != before
    nxt = run_pipeline(env, {"until": "2024-04-05T00:00:00Z"}, name="analytics-2")
    assert nxt["step3"] and nxt["step3"]["success"], nxt["step3"] or nxt["step2"][-1:]
    assert nxt["step1"]["window"]["since"] > FIRST_RUN["since"]  # a scheduled run, not a reload
    assert read_views(db) != views_before
    diffs = view_differences(db, after)
    assert not diffs, diffs


def test_a_database_loaded_before_migration_6_gets_the_same_figures_from_its_backfill(pg, secrets_arns, db,
                                                                                    scenario, monkeypatch):
    """Day 2, an upgrade: a deployment whose data was loaded before the analytics migration. Migration 6 fills
    the trigger-kept tables from the log already stored, so the views equal the oracle's without a reload; the
    next run's new entries then go through the trigger."""
    monkeypatch.setattr(migrations, "MIGRATIONS", [m for m in migrations.MIGRATIONS if m[0] < 6])
    with served_and_loaded(pg, secrets_arns, scenario.account) as (_server, env):
        assert db.run("SELECT to_regclass('analytics.incidents')") == [[None]]  # loaded without the views
        monkeypatch.undo()
        assert migrations.migrate(db) == [6]
        diffs = view_differences(db, oracle(scenario.account))
        assert not diffs, diffs
        late = scenario.account
        triggered = next(i["id"] for i in sorted(late.incidents.values(), key=lambda i: i["incident_number"])
                         if i["status"] == "triggered")
        late.acknowledge(triggered, LATE, scenario["grace"], by="user")
        nxt = run_pipeline(env, {"until": "2024-04-05T00:00:00Z"}, name="after-upgrade")
        assert nxt["step3"] and nxt["step3"]["success"], nxt
        diffs = view_differences(db, oracle(late))
        assert not diffs, diffs


def test_a_deleted_user_only_ever_notified_keeps_their_name_and_their_notifications(pg, secrets_arns, db):
    """Spec: a deleted user keeps their rows, under the name PagerDuty last gave; their notifications keep
    counting under it (in the default zone: a stub has none)."""
    acc = small_account()
    gone = add_user_only_ever_notified(acc)
    want = oracle(acc)
    assert want["responder_weekly"][(WEEK4.date(), gone)] == {
        "week_start": WEEK4.date(), "user_id": gone, "user_name": "Gone Soon", "time_zone": "UTC",
        "acknowledged": 0, "resolved": 0, "notifications": 1, "notifications_off_hours": 1}
    with served_and_loaded(pg, secrets_arns, acc):
        diffs = view_differences(db, want)
    assert not diffs, diffs


def test_an_incident_whose_older_log_was_never_loaded_counts_from_its_own_resolved_at(pg, secrets_arns, db):
    """Spec: the resolution time is the latest resolve_log_entry, else the incident's own resolved_at (entries
    older than the first load); resolved_by_type is then ``unknown``."""
    acc = small_account()
    early = add_incident_resolved_before_the_window(acc)
    want = oracle(acc)
    row = want["incidents"][early]
    assert (row["resolved_at"], row["seconds_to_resolve"], row["week_start"]) == \
        (datetime(2024, 3, 1, 10, 10, tzinfo=UTC), 600, date(2024, 2, 26))
    assert row["first_acknowledged_at"] is None and row["notifications"] == 0
    assert (row["resolved_by_type"], row["resolved_by_id"]) == ("unknown", None)
    assert want["account_weekly"][date(2024, 2, 26)]["resolve_p50_seconds"] == 600
    with served_and_loaded(pg, secrets_arns, acc):
        diffs = view_differences(db, want)
    assert not diffs, diffs


def test_the_figures_do_not_depend_on_the_reading_sessions_time_zone(loaded, db):
    """Weeks are UTC weeks and working hours each user's own: a session in UTC+14 (every UTC evening is the
    next local day there) reads the same rows as one in UTC."""
    in_utc = read_views(db)
    db.run("SET TIME ZONE 'Pacific/Kiritimati'")
    try:
        assert read_views(db) == in_utc
    finally:
        db.run("RESET TIME ZONE")


def test_a_rerun_of_the_same_window_leaves_every_view_unchanged(loaded, db):
    _scenario, _server, env = loaded
    first = read_views(db)
    assert all(first.values())
    again = run_pipeline(env, FIRST_RUN, name="analytics-rerun")
    assert again["step3"] and again["step3"]["success"]
    assert read_views(db) == first


def test_notifications_off_hours_follow_the_working_hours_setting(loaded, db):
    """The owner changes the setting (Monday to Saturday, 08:00-18:00, default zone Asia/Kolkata): every
    responder's notifications_off_hours and zone follow, as the oracle reckons them with the same setting."""
    scenario, _server, _env = loaded
    setting = WorkingHours(working_days=(1, 2, 3, 4, 5, 6), day_starts=time(8), day_ends=time(18),
                           default_time_zone="Asia/Kolkata")
    default, changed = (oracle(scenario.account, h)["responder_weekly"] for h in (WorkingHours(), setting))
    assert {k: r["notifications_off_hours"] for k, r in default.items()} != \
        {k: r["notifications_off_hours"] for k, r in changed.items()}  # the setting matters to this scenario
    assert db.run("SELECT working_days, day_starts, day_ends, default_time_zone FROM analytics.working_hours") == \
        [[[1, 2, 3, 4, 5], time(9), time(17), "UTC"]]
    assert differences(default, read_view(db, "responder_weekly")) == []
    before = {view: read_view(db, view) for view in VIEWS if view != "responder_weekly"}
    with as_role(db, roles.OWNER):
        db.run("""UPDATE analytics.working_hours SET working_days = '{1,2,3,4,5,6}', day_starts = '08:00',
                         day_ends = '18:00', default_time_zone = 'Asia/Kolkata'""")
    assert differences(changed, read_view(db, "responder_weekly")) == []
    assert {view: read_view(db, view) for view in before} == before  # the setting changes nothing else


# -- who may do what ---------------------------------------------------------------------------------------------
def denied(conn: Any, sql: str, codes: tuple[str, ...] = (INSUFFICIENT_PRIVILEGE,)) -> None:
    """``sql`` fails with one of PostgreSQL's ``codes`` (by default: permission denied), not any error."""
    with pytest.raises(DatabaseError) as exc:
        conn.run(sql)
    err = exc.value.args[0]
    assert err.get("C") in codes, (sql, err)


def writes(relation: str, column: str) -> dict[str, str]:
    """One statement of each kind that changes ``relation``."""
    return {"INSERT": f"INSERT INTO {relation} DEFAULT VALUES", "UPDATE": f"UPDATE {relation} SET {column} = NULL",
            "DELETE": f"DELETE FROM {relation}", "TRUNCATE": f"TRUNCATE {relation}"}


SETTING_WRITES = writes("analytics.working_hours", "default_time_zone")


@pytest.fixture
def admin(pg) -> Iterator[Any]:
    """A superuser connection: it may SET ROLE to any role (the app user is no member of the reader)."""
    conn = pg.admin_connect()
    try:
        yield conn
    finally:
        conn.close()


def test_the_reader_reads_every_view_and_the_setting_and_writes_nothing(loaded, db, admin):
    """pagerduty_reader: every view of the spec (listed from the catalog) and the setting, every row; no write,
    no CREATE in the schema. A view PostgreSQL cannot update refuses writes to every role (55000) before it looks
    at privileges, so for those the reader's missing privileges are read from has_table_privilege."""
    owner_rows = read_views(db)
    with as_role(admin, roles.READER):
        assert admin.run("SELECT current_user")[0][0] == roles.READER
        listed = {r[0] for r in admin.run("""SELECT c.relname FROM pg_class c JOIN pg_namespace n
                                               ON n.oid = c.relnamespace
                                              WHERE n.nspname = 'analytics' AND c.relkind = 'v'""")}
        assert listed == set(VIEWS)
        assert read_views(admin) == owner_rows
        for view in VIEWS:
            relation = f"analytics.{view}"
            assert admin.run("""SELECT has_table_privilege(CAST(:v AS regclass),
                                       'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')""",
                             v=relation)[0][0] is False, view
            updatable = admin.run("""SELECT is_insertable_into = 'YES' OR is_updatable = 'YES'
                                       FROM information_schema.views
                                      WHERE table_schema = 'analytics' AND table_name = :v""", v=view)[0][0]
            for kind, sql in writes(relation, COLUMNS[view][0]).items():
                codes = (NOT_A_TABLE,) if kind == "TRUNCATE" else \
                    (INSUFFICIENT_PRIVILEGE,) if updatable else (VIEW_NOT_UPDATABLE,)
                denied(admin, sql, codes)
        assert len(admin.run("SELECT * FROM analytics.working_hours")) == 1
        for sql in SETTING_WRITES.values():
            denied(admin, sql)
        for sql in ("CREATE TABLE analytics.mine (i int)", "CREATE VIEW analytics.mine AS SELECT 1"):
            denied(admin, sql)


def test_the_loader_cannot_change_the_working_hours_setting(loaded, admin):
    with as_role(admin, roles.LOADER):
        for sql in SETTING_WRITES.values():
            denied(admin, sql)
        denied(admin, "CREATE TABLE analytics.mine (i int)")



def test_odd_alert_counts_and_resolve_reasons_give_null_not_a_failed_write(db):
    """The generated columns the views read from an incident's raw document: a count that is no number, out of
    range or absent, and a resolve_reason of another shape, store NULL (or not merged) and the write succeeds."""
    migrations.migrate(db)
    odd = {"text": ({"alert_counts": {"all": "lots"}}, None, False, None),
           "huge": ({"alert_counts": {"all": 1e12}}, None, False, None),
           "negative": ({"alert_counts": {"all": -1}}, None, False, None),
           "absent": ({}, None, False, None),
           "fine": ({"alert_counts": {"all": 3}}, 3, False, None),
           "reason-string": ({"resolve_reason": "merged"}, None, False, None),
           "merge-without-target": ({"resolve_reason": {"type": "merge_resolve_reason"}}, None, True, None),
           "merge": ({"resolve_reason": {"type": "merge_resolve_reason", "incident": {"id": "PX"}}}, None, True, "PX")}
    for n, (key, (raw, *_)) in enumerate(odd.items(), start=1):
        db.run("INSERT INTO pagerduty.incidents (id, incident_number, created_at, raw) "
               "VALUES (:id, :n, now(), CAST(:raw AS jsonb))", id=key, n=n, raw=json.dumps(raw))
    got = {r[0]: tuple(r[1:]) for r in db.run(
        "SELECT incident_id, alert_count, is_merged, merged_into_incident_id FROM analytics.incidents")}
    assert got == {key: tuple(expected) for key, (_raw, *expected) in odd.items()}
