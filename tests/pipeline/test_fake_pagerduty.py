"""Unit tests of the fake PagerDuty server's newer parts: GET by id of the dimensions, add_incident, evolve and
fault storms. (No database: these run in milliseconds.)"""

from __future__ import annotations

import json
import random
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest

from tests.support.fake_pagerduty import FakePagerDuty, generate_account, iso

UTC = timezone.utc
START = datetime(2024, 3, 1, tzinfo=UTC)
TOKEN = "unit-token"
STATUS_OF = {"trigger_log_entry": "triggered", "acknowledge_log_entry": "acknowledged",
             "resolve_log_entry": "resolved"}


def get(pd: FakePagerDuty, path: str) -> tuple[int, dict]:
    req = urllib.request.Request(pd.url + path, headers={"Authorization": f"Token token={TOKEN}",
                                                         "Accept": "application/vnd.pagerduty+json;version=2"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


@pytest.fixture
def pd():
    with FakePagerDuty(generate_account(30, 4, START, START + timedelta(days=1)), token=TOKEN) as server:
        yield server


def latest_status_entries(acc) -> dict[str, str]:
    """Incident id -> the status its latest trigger/acknowledge/resolve log entry implies (computed here,
    independently of the account's own consistency helper)."""
    latest: dict[str, tuple] = {}
    for e in acc.log_entries.values():
        if e["type"] in STATUS_OF:
            key = (e["created_at"], e["id"])
            inc_id = e["incident"]["id"]
            if inc_id not in latest or key > latest[inc_id][0]:
                latest[inc_id] = (key, STATUS_OF[e["type"]])
    return {i: v[1] for i, v in latest.items()}


def assert_consistent(acc) -> None:
    implied = latest_status_entries(acc)
    for inc_id, inc in acc.incidents.items():
        assert implied.get(inc_id) == inc["status"], inc_id
        alerts = acc.alerts.get(inc_id, [])
        resolved = sum(1 for a in alerts if a["status"] == "resolved")
        assert inc["alert_counts"] == {"all": len(alerts), "triggered": len(alerts) - resolved,
                                       "resolved": resolved}, inc_id
        if inc["status"] == "resolved":
            assert inc["resolved_at"] == inc["last_status_change_at"] and not inc["assignments"], inc_id
            assert resolved == len(alerts), inc_id
        else:
            assert inc["resolved_at"] is None, inc_id
        entries = [e["created_at"] for e in acc.log_entries.values() if e["incident"]["id"] == inc_id]
        assert inc["updated_at"] >= max(entries), inc_id
        assert inc["last_status_change_at"] <= inc["updated_at"], inc_id
    assert acc.status_log_mismatches() == []


# ---------------------------------------------------------------------------------------------
# A.1 GET by id
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path,key,attr", [("users", "user", "users"), ("services", "service", "services"),
                                           ("teams", "team", "teams"),
                                           ("escalation_policies", "escalation_policy", "escalation_policies"),
                                           ("priorities", "priority", "priorities")])
def test_get_dimension_by_id(pd, path, key, attr):
    objs = getattr(pd.account, attr)
    obj_id = next(iter(objs))
    status, body = get(pd, f"/{path}/{obj_id}")
    assert status == 200 and body == {key: objs[obj_id]}
    status, body = get(pd, f"/{path}/PNOSUCH")
    assert status == 404 and body == {"error": {"message": "Not Found", "code": 2100}}


def test_deleted_user_and_service_are_404_but_still_referenced(pd):
    acc = pd.account
    gone_user = next(iter(acc.deleted))  # generate_account deletes one user
    assert gone_user not in acc.users
    assert get(pd, f"/users/{gone_user}") == (404, {"error": {"message": "Not Found", "code": 2100}})
    svc = next(iter(acc.services))
    assert get(pd, f"/services/{svc}")[0] == 200
    acc.delete_service(svc)
    assert get(pd, f"/services/{svc}") == (404, {"error": {"message": "Not Found", "code": 2100}})
    assert any(i["service"]["id"] == svc for i in acc.incidents.values())  # incidents still point at it


def test_get_by_id_expands_includes_and_needs_the_token(pd):
    acc = pd.account
    svc_id = next(iter(acc.services))
    status, body = get(pd, f"/services/{svc_id}?include[]=teams")
    assert status == 200 and body["service"]["teams"][0] == acc.teams[body["service"]["teams"][0]["id"]]
    req = urllib.request.Request(pd.url + f"/services/{svc_id}", headers={"Authorization": "Token token=wrong"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    with err.value:
        assert err.value.code == 401


# ---------------------------------------------------------------------------------------------
# A.2 add_incident
# ---------------------------------------------------------------------------------------------
def test_add_incident_as_pagerduty_creates_it(pd):
    acc = pd.account
    svc_id = list(acc.services)[1]
    svc = acc.services[svc_id]
    prio_id = next(iter(acc.priorities))
    top = max(i["incident_number"] for i in acc.incidents.values())
    at = START + timedelta(days=2, hours=3)
    inc = acc.add_incident(at, svc_id, title="Checkout down", urgency="low", priority_id=prio_id, with_alerts=2)
    assert acc.incidents[inc["id"]] is inc
    assert inc["incident_number"] == top + 1 and inc["status"] == "triggered"
    assert inc["created_at"] == iso(at) == inc["last_status_change_at"] and inc["resolved_at"] is None
    assert inc["title"] == "Checkout down" and inc["urgency"] == "low" and inc["priority"]["id"] == prio_id
    assert inc["service"]["id"] == svc_id and inc["escalation_policy"] == svc["escalation_policy"]
    assert [t["id"] for t in inc["teams"]] == [t["id"] for t in svc["teams"]]
    assert inc["alert_counts"] == {"all": 2, "triggered": 2, "resolved": 0}
    assert len(inc["assignments"]) == 1
    entries = sorted((e for e in acc.log_entries.values() if e["incident"]["id"] == inc["id"]),
                     key=lambda e: e["created_at"])
    assert [e["type"] for e in entries] == ["trigger_log_entry", "assign_log_entry", "notify_log_entry"]
    assert entries[0]["created_at"] == iso(at) and entries[0]["id"] == inc["first_trigger_log_entry"]["id"]
    assert all(iso(at) <= e["created_at"] <= iso(at + timedelta(seconds=5)) for e in entries)
    assert inc["updated_at"] == entries[-1]["created_at"]
    # served like any other incident: listed in its window, by id, and its alerts
    status, body = get(pd, f"/incidents?since={iso(at)}&until={iso(at + timedelta(seconds=1))}&time_zone=UTC"
                           "&include[]=first_trigger_log_entries")
    assert status == 200 and [i["id"] for i in body["incidents"]] == [inc["id"]]
    assert body["incidents"][0]["first_trigger_log_entry"]["created_at"] == iso(at)
    assert get(pd, f"/incidents/{inc['id']}")[1]["incident"]["id"] == inc["id"]
    assert len(get(pd, f"/incidents/{inc['id']}/alerts")[1]["alerts"]) == 2
    assert_consistent(acc)


def test_add_incident_allows_the_nulls_the_real_api_returns(pd):
    acc = pd.account
    at = START + timedelta(days=2)
    inc = acc.add_incident(at, title=None, urgency=None, priority_id=None, assignments=[])
    assert inc["title"] is None and inc["urgency"] is None and inc["priority"] is None
    assert inc["assignments"] == []
    types = [e["type"] for e in acc.log_entries.values() if e["incident"]["id"] == inc["id"]]
    assert types == ["trigger_log_entry"]  # nobody assigned, nobody notified
    status, body = get(pd, f"/incidents?since={iso(at)}&until={iso(at + timedelta(minutes=1))}&time_zone=UTC")
    served = body["incidents"][0]
    assert (served["title"], served["urgency"], served["priority"], served["assignments"]) == (None, None, None, [])
    unassigned = acc.add_incident(at + timedelta(minutes=1), assignee_id=None, incident_key="dedup-1")
    assert unassigned["assignments"] == [] and unassigned["incident_key"] == "dedup-1"
    assert unassigned["incident_number"] == inc["incident_number"] + 1
    assert_consistent(acc)


def test_add_incident_with_a_later_status_goes_through_the_lifecycle(pd):
    acc = pd.account
    at = START + timedelta(days=3)
    acked = acc.add_incident(at, status="acknowledged", with_alerts=1)
    assert acked["status"] == "acknowledged" and acked["last_status_change_at"] == iso(at + timedelta(minutes=2))
    assert acked["acknowledgements"] and acked["assignments"]
    resolved = acc.add_incident(at, status="resolved", with_alerts=3)
    assert resolved["status"] == "resolved" and resolved["resolved_at"] == iso(at + timedelta(minutes=10))
    assert resolved["assignments"] == [] and resolved["alert_counts"] == {"all": 3, "triggered": 0, "resolved": 3}
    assert all(a["status"] == "resolved" for a in acc.alerts[resolved["id"]])
    types = [e["type"] for e in sorted((e for e in acc.log_entries.values() if e["incident"]["id"] == resolved["id"]),
                                       key=lambda e: e["created_at"])]
    assert types[0] == "trigger_log_entry" and types[-2:] == ["acknowledge_log_entry", "resolve_log_entry"]
    assert_consistent(acc)


# ---------------------------------------------------------------------------------------------
# A.3 evolve
# ---------------------------------------------------------------------------------------------
def snapshot(acc) -> str:
    return json.dumps([acc.incidents, acc.log_entries, acc.notes, acc.alerts], sort_keys=True)


def test_evolve_keeps_every_incident_consistent_and_inside_the_day():
    acc = generate_account(30, 4, START, START + timedelta(days=1))
    rnd = random.Random(7)
    assert_consistent(acc)
    touched_old = {"acknowledged": 0, "resolved": 0, "notes": 0}
    for k in range(1, 8):
        day_start, day_end = START + timedelta(days=k), START + timedelta(days=k + 1)
        before_inc = {i: (inc["status"], inc["updated_at"]) for i, inc in acc.incidents.items()}
        before_logs = set(acc.log_entries)
        before_notes = {n["id"] for v in acc.notes.values() for n in v}
        before_alerts = {a["id"] for v in acc.alerts.values() for a in v}
        stats = acc.evolve(day_start, day_end, rnd, new_incidents=20)
        assert stats["created"] == 20 and stats["acknowledged"] + stats["resolved"] > 0
        assert_consistent(acc)
        new_times = [e["created_at"] for i, e in acc.log_entries.items() if i not in before_logs]
        new_times += [n["created_at"] for v in acc.notes.values() for n in v if n["id"] not in before_notes]
        new_times += [a["created_at"] for v in acc.alerts.values() for a in v if a["id"] not in before_alerts]
        new_incidents = [inc for i, inc in acc.incidents.items() if i not in before_inc]
        new_times += [inc["created_at"] for inc in new_incidents]
        assert new_times and all(iso(day_start) <= t < iso(day_end) for t in new_times)
        for i, inc in acc.incidents.items():
            if i in before_inc and before_inc[i][1] != inc["updated_at"]:
                assert iso(day_start) <= inc["updated_at"] < iso(day_end), i
        # most new incidents come with 1-3 alerts
        with_alerts = [inc["alert_counts"]["all"] for inc in new_incidents]
        assert sum(1 for n in with_alerts if 1 <= n <= 3) >= len(with_alerts) // 2 and max(with_alerts) <= 4
        # incidents created on earlier days change too
        for i, (status, _) in before_inc.items():
            now = acc.incidents[i]["status"]
            if now != status:
                touched_old[now] = touched_old.get(now, 0) + 1
        touched_old["notes"] += sum(1 for i in before_inc for n in acc.notes.get(i, []) if n["id"] not in before_notes)
        touched_old["notes_2_days_old"] = touched_old.get("notes_2_days_old", 0) + sum(
            1 for i in before_inc for n in acc.notes.get(i, []) if n["id"] not in before_notes
            and acc.incidents[i]["created_at"] < iso(day_start - timedelta(days=2)))
        # the API's log for the day is exactly the day's new entries
        with FakePagerDuty(acc, token=TOKEN) as pd:
            ids, offset = [], 0
            while True:
                _, body = get(pd, f"/log_entries?since={iso(day_start)}&until={iso(day_end)}&time_zone=UTC"
                                  f"&limit=100&offset={offset}")
                ids += [e["id"] for e in body["log_entries"]]
                offset += 100
                if not body["more"]:
                    break
        assert set(ids) == {i for i in acc.log_entries if i not in before_logs}
    assert touched_old["acknowledged"] > 0 and touched_old["resolved"] > 0 and touched_old["notes"] > 0
    assert touched_old["notes_2_days_old"] > 0  # old incidents, idle for days, still get notes
    assert sum(1 for v in acc.alerts.values() for _ in v) > 0


def test_evolve_is_deterministic():
    runs = []
    for _ in range(2):
        acc = generate_account(25, 9, START, START + timedelta(days=1))
        rnd = random.Random(42)
        for k in range(1, 4):
            acc.evolve(START + timedelta(days=k), START + timedelta(days=k + 1), rnd, new_incidents=10)
        runs.append(snapshot(acc))
    assert runs[0] == runs[1]
    other = generate_account(25, 9, START, START + timedelta(days=1))
    other.evolve(START + timedelta(days=1), START + timedelta(days=2), random.Random(43), new_incidents=10)
    assert snapshot(other) != runs[0]


def test_evolve_acts_after_each_incidents_latest_entry():
    """An incident created just before the day ends has entries spilling into the next day: the next day's
    changes to it come after them."""
    acc = generate_account(5, 2, START, START + timedelta(days=1))
    late = acc.add_incident(START + timedelta(days=2) - timedelta(seconds=1), with_alerts=1)
    last_before = max(e["created_at"] for e in acc.log_entries.values() if e["incident"]["id"] == late["id"])
    assert last_before >= iso(START + timedelta(days=2))  # assign/notify after midnight
    rnd = random.Random(3)
    for k in range(2, 6):
        acc.evolve(START + timedelta(days=k), START + timedelta(days=k + 1), rnd, new_incidents=3,
                   ack_ratio=1.0, resolve_ratio=0.5, note_ratio=1.0)
        assert_consistent(acc)
    entries = sorted((e["created_at"], e["type"]) for e in acc.log_entries.values()
                     if e["incident"]["id"] == late["id"])
    status_entries = [t for _, t in entries if t in STATUS_OF]
    assert status_entries[0] == "trigger_log_entry" and len(status_entries) >= 2
    evolved = [t for t, type_ in entries if type_ in ("acknowledge_log_entry", "resolve_log_entry",
                                                       "annotate_log_entry")]
    assert evolved and min(evolved) > last_before


# ---------------------------------------------------------------------------------------------
# A.4 fault storms
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("count", [1000, None])
def test_fault_storm_on_every_path_until_cleared(pd, count):
    inc_id = next(iter(pd.account.incidents))
    paths = ["/teams", "/users", "/incidents?limit=1", f"/incidents/{inc_id}/notes", "/log_entries",
             f"/services/{next(iter(pd.account.services))}"]
    pd.inject(500, count=count)
    for _ in range(3):
        for path in paths:
            status, body = get(pd, path)
            assert status == 500 and body["error"]["code"] == 2000
    assert pd.pending_faults() == 1
    pd.clear_faults()
    assert pd.pending_faults() == 0
    assert all(get(pd, path)[0] == 200 for path in paths)
    assert [r.status for r in pd.requests].count(500) == 3 * len(paths)


def test_counted_faults_still_run_out(pd):
    pd.inject(503, count=2, path="/teams")
    assert [get(pd, "/teams")[0] for _ in range(3)] == [503, 503, 200]
    assert get(pd, "/users")[0] == 200 and pd.pending_faults() == 0
