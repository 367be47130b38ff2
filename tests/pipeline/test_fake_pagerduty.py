"""Unit tests of the fake PagerDuty server's newer parts: GET by id of the dimensions, add_incident, evolve,
fault storms, latency, concurrency, the enforced rate limit, the generated data mix and the command line.
(No database: these run in milliseconds, or a fraction of a second where a latency is measured.)"""

from __future__ import annotations

import http.client
import json
import random
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

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


# ---------------------------------------------------------------------------------------------
# A.5 latency, concurrency, rate limit (issue 11)
# ---------------------------------------------------------------------------------------------
LATENCY = 0.05


def timed_get(pd: FakePagerDuty, path: str, token: str = TOKEN) -> tuple[float, int, dict, dict]:
    """(seconds, status, headers, body) of one request on a fresh http.client connection."""
    conn = http.client.HTTPConnection("127.0.0.1", pd.port, timeout=10)
    try:
        t0 = time.perf_counter()
        conn.request("GET", path, headers={"Authorization": f"Token token={token}"})
        resp = conn.getresponse()
        body = json.loads(resp.read())
        return time.perf_counter() - t0, resp.status, dict(resp.getheaders()), body
    finally:
        conn.close()


def wait_idle(pd: FakePagerDuty) -> None:
    """The server decrements in_flight just after writing a response: give it that moment."""
    deadline = time.monotonic() + 5
    while pd.in_flight and time.monotonic() < deadline:
        time.sleep(0.005)
    assert pd.in_flight == 0


def test_latency_delays_every_answered_request():
    with FakePagerDuty(generate_account(10, 4, START, START + timedelta(days=1)), token=TOKEN,
                       latency=LATENCY) as pd:
        took, status, _, _ = timed_get(pd, "/teams")
        assert status == 200 and took >= LATENCY
        took, status, _, body = timed_get(pd, "/teams", token="wrong")
        assert status == 401 and body["error"]["code"] == 2006 and took >= LATENCY
        took, status, _, _ = timed_get(pd, "/users/PNOSUCH")
        assert status == 404 and took >= LATENCY
        pd.inject(503)
        took, status, _, _ = timed_get(pd, "/teams")
        assert status == 503 and took >= LATENCY
        pd.inject_drop()  # a dropped connection is not answered, so not delayed either
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            timed_get(pd, "/teams")
        deadline = time.monotonic() + 5  # a request is logged just after its answer is sent
        while len(pd.requests) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [r.status for r in pd.requests] == [200, 401, 404, 503, 0]


def test_no_latency_by_default_means_no_sleep(pd, monkeypatch):
    sleeps = []
    real_sleep = time.sleep
    monkeypatch.setattr(time, "sleep", lambda s: (sleeps.append(s), real_sleep(s)))
    assert pd.latency == 0 and pd.jitter == 0
    for path in ("/teams", "/users", "/users/PNOSUCH"):
        timed_get(pd, path)
    assert sleeps == []


def test_jitter_is_bounded_and_seeded():
    acc = generate_account(10, 4, START, START + timedelta(days=1))
    servers = [FakePagerDuty(acc, token=TOKEN, latency=0.02, jitter=0.03, seed=5) for _ in range(2)]
    draws = [[s._response_delay() for _ in range(500)] for s in servers]
    assert draws[0] == draws[1]  # the same seed, the same delays
    assert all(0.02 <= d <= 0.05 for d in draws[0])
    assert min(draws[0]) < 0.025 and max(draws[0]) > 0.045  # spread over the whole range
    assert FakePagerDuty(acc, latency=0.02, jitter=0.03, seed=6)._response_delay() != draws[0][0]
    with FakePagerDuty(acc, token=TOKEN, latency=0.02, jitter=0.03, seed=5) as pd:
        assert all(timed_get(pd, "/teams")[0] >= 0.02 for _ in range(3))
    with pytest.raises(ValueError):
        FakePagerDuty(acc, latency=-1)


def test_concurrent_requests_overlap_and_the_peak_is_measured():
    latency = 0.2  # long enough that four requests started together are surely in flight at once
    with FakePagerDuty(generate_account(10, 4, START, START + timedelta(days=1)), token=TOKEN,
                       latency=latency) as pd:
        conns = [http.client.HTTPConnection("127.0.0.1", pd.port, timeout=10) for _ in range(4)]
        for c in conns:
            c.connect()
        barrier = threading.Barrier(4)
        results: list = [None] * 4

        def worker(k: int) -> None:
            barrier.wait()
            t0 = time.perf_counter()
            conns[k].request("GET", "/teams", headers={"Authorization": f"Token token={TOKEN}"})
            resp = conns[k].getresponse()
            resp.read()
            results[k] = (resp.status, time.perf_counter() - t0)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        for c in conns:
            c.close()
        assert [r[0] for r in results] == [200] * 4 and all(r[1] >= latency for r in results)
        assert pd.max_concurrent == 4
        wait_idle(pd)
        pd.reset_stats()
        assert pd.max_concurrent == 0
        # one connection, requests one after the other: never more than one at a time
        conn = http.client.HTTPConnection("127.0.0.1", pd.port, timeout=10)
        for _ in range(3):
            conn.request("GET", "/users", headers={"Authorization": f"Token token={TOKEN}"})
            conn.getresponse().read()
        conn.close()
        wait_idle(pd)
        assert pd.max_concurrent == 1 and pd.request_count() == 7


def test_enforced_rate_limit_answers_429_with_headers_and_counts_them():
    with FakePagerDuty(generate_account(10, 4, START, START + timedelta(days=1)), token=TOKEN,
                       enforce_rate_limit=True, rate_limit=5) as pd:
        answers = [timed_get(pd, "/teams")[1:] for _ in range(7)]
        assert [a[0] for a in answers] == [200] * 5 + [429] * 2
        assert [a[1]["ratelimit-remaining"] for a in answers[:5]] == ["4", "3", "2", "1", "0"]
        for status, headers, body in answers[5:]:
            assert body == {"error": {"message": "Rate Limit Exceeded", "code": 2020}}
            assert headers["ratelimit-limit"] == "5" and headers["ratelimit-remaining"] == "0"
            assert 1 <= int(headers["ratelimit-reset"]) <= 60
        assert pd.rate_limited == 2
        pd.inject(429)  # an injected 429 is a fault, not the limit
        assert timed_get(pd, "/teams")[1] == 429 and pd.rate_limited == 2
        assert pd.request_count() == 8


def test_rate_limit_counts_concurrent_requests_exactly():
    with FakePagerDuty(generate_account(10, 4, START, START + timedelta(days=1)), token=TOKEN,
                       enforce_rate_limit=True, rate_limit=20) as pd:
        statuses: list[int] = []
        lock = threading.Lock()

        def worker() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", pd.port, timeout=10)
            for _ in range(5):
                conn.request("GET", "/teams", headers={"Authorization": f"Token token={TOKEN}"})
                resp = conn.getresponse()
                resp.read()
                with lock:
                    statuses.append(resp.status)
            conn.close()

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sorted(statuses) == [200] * 20 + [429] * 20
        assert pd.rate_limited == 20 and pd.request_count() == 40


# ---------------------------------------------------------------------------------------------
# A.6 data mix (issue 11)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big():
    return generate_account(2000, 1)


def test_nearly_every_incident_has_alerts_and_the_others_are_manual(big):
    acc = big
    with_alerts = [i for i in acc.incidents if acc.alerts.get(i)]
    assert 0.94 <= len(with_alerts) / len(acc.incidents) <= 0.995
    assert {len(acc.alerts[i]) for i in with_alerts} == {1, 2, 3}
    for inc_id, inc in acc.incidents.items():
        trigger = acc.log_entries[inc["first_trigger_log_entry"]["id"]]
        if acc.alerts.get(inc_id):
            assert trigger["channel"]["type"] != "web_trigger" and not acc.is_manual(inc_id), inc_id
            continue
        # manual: created by a user in the web UI
        assert acc.is_manual(inc_id) and trigger["channel"] == {"type": "web_trigger"}, inc_id
        assert trigger["agent"]["type"] == "user_reference", inc_id
        assert inc["alert_counts"] == {"all": 0, "triggered": 0, "resolved": 0}, inc_id


def test_alerts_resolve_with_their_incident_and_alert_counts_match(big):
    acc = big
    for inc_id, inc in acc.incidents.items():
        alerts = acc.alerts.get(inc_id, [])
        want = "resolved" if inc["status"] == "resolved" else "triggered"
        assert all(a["status"] == want for a in alerts), inc_id
        assert all(a["incident"]["id"] == inc_id for a in alerts), inc_id
        resolved = sum(1 for a in alerts if a["status"] == "resolved")
        assert inc["alert_counts"] == {"all": len(alerts), "triggered": len(alerts) - resolved,
                                       "resolved": resolved}, inc_id
    assert {i["status"] for i in acc.incidents.values()} == {"triggered", "acknowledged", "resolved"}
    assert acc.status_log_mismatches() == []
    ids = [a["id"] for v in acc.alerts.values() for a in v]
    assert len(ids) == len(set(ids))


def test_notes_on_a_realistic_share_each_with_its_annotate_entry(big):
    acc = big
    noted = [i for i in acc.incidents if acc.notes.get(i)]
    assert 0.11 <= len(noted) / len(acc.incidents) <= 0.19
    annotate: dict = {}
    for e in acc.log_entries.values():
        if e["type"] == "annotate_log_entry":
            annotate.setdefault(e["incident"]["id"], []).append(e)
    assert set(annotate) == set(noted)
    for inc_id in noted:
        assert sorted((n["created_at"], n["content"]) for n in acc.notes[inc_id]) == \
            sorted((e["created_at"], e["channel"]["summary"]) for e in annotate[inc_id]), inc_id


def test_the_mix_is_deterministic_and_its_ratios_can_be_given():
    assert snapshot(generate_account(300, 1)) == snapshot(generate_account(300, 1))
    assert snapshot(generate_account(300, 2)) != snapshot(generate_account(300, 1))
    few = generate_account(1000, 1, alert_ratio=0.10, note_ratio=0.0)
    share = sum(1 for i in few.incidents if few.alerts.get(i)) / 1000
    assert 0.07 <= share <= 0.13 and not any(few.notes.values())
    assert all(few.is_manual(i) for i in few.incidents if not few.alerts.get(i))
    # the mix draws do not disturb the rest: the same seed gives the same incidents
    assert [(i["created_at"], i["status"], i["service"]["id"]) for i in few.incidents.values()] == \
        [(i["created_at"], i["status"], i["service"]["id"]) for i in generate_account(1000, 1).incidents.values()]


def test_evolve_creates_alerts_on_nearly_every_new_incident_and_none_on_manual_ones():
    acc = generate_account(30, 4, START, START + timedelta(days=1))
    rnd = random.Random(11)
    before = set(acc.incidents)
    for k in range(1, 5):
        acc.evolve(START + timedelta(days=k), START + timedelta(days=k + 1), rnd, new_incidents=150,
                   alert_ratio=0.3)
    new = [i for i in acc.incidents if i not in before]
    manual = [i for i in new if acc.is_manual(i)]
    assert len(new) == 600 and 0.94 <= 1 - len(manual) / len(new) <= 0.995 and manual
    assert all(acc.alerts.get(i) for i in new if i not in manual)
    for inc_id in [i for i in acc.incidents if acc.is_manual(i)]:  # no grouped alerts either, days later
        assert not acc.alerts.get(inc_id), inc_id
        trigger = acc.log_entries[acc.incidents[inc_id]["first_trigger_log_entry"]["id"]]
        assert trigger["agent"]["type"] == "user_reference" and trigger["agent"]["id"] in acc.users
    assert_consistent(acc)


def test_add_incident_created_by_a_user_is_manual(pd):
    acc = pd.account
    user_id = list(acc.users)[2]
    inc = acc.add_incident(START + timedelta(days=2), created_by=user_id)
    trigger = acc.log_entries[inc["first_trigger_log_entry"]["id"]]
    assert trigger["channel"] == {"type": "web_trigger"} and trigger["agent"]["id"] == user_id
    assert inc["last_status_change_by"]["id"] == user_id and acc.is_manual(inc["id"])
    assert inc["alert_counts"] == {"all": 0, "triggered": 0, "resolved": 0}
    assert not acc.is_manual(acc.add_incident(START + timedelta(days=2), with_alerts=1)["id"])
    assert_consistent(acc)


# ---------------------------------------------------------------------------------------------
# A.7 command line
# ---------------------------------------------------------------------------------------------
def test_command_line_serves_with_latency_rate_limit_and_the_given_mix():
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.fake_pagerduty", "--incidents", "20",
                             "--token", TOKEN, "--latency", str(LATENCY), "--jitter", "0.01", "--enforce-rate-limit",
                             "--rate-limit", "3", "--alert-ratio", "0", "--note-ratio", "1"],
                            cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")

        def call(path: str) -> tuple[float, int, dict]:
            req = urllib.request.Request(url + path, headers={"Authorization": f"Token token={TOKEN}"})
            t0 = time.perf_counter()
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    return time.perf_counter() - t0, resp.status, json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                with exc:
                    return time.perf_counter() - t0, exc.code, json.loads(exc.read())

        took, status, body = call("/incidents?date_range=all&limit=100")
        assert status == 200 and took >= LATENCY and len(body["incidents"]) == 20
        assert all(i["alert_counts"]["all"] == 0 for i in body["incidents"])  # --alert-ratio 0: all manual
        took, status, notes = call(f"/incidents/{body['incidents'][0]['id']}/notes")
        assert status == 200 and len(notes["notes"]) == 1  # --note-ratio 1
        call("/teams")
        took, status, body = call("/teams")
        assert status == 429 and body["error"]["code"] == 2020 and took >= LATENCY
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
