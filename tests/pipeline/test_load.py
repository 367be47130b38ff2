"""End-to-end loads against the fake PagerDuty server and a real PostgreSQL: assert table contents."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

import pytest

from pagerduty_pipeline import steps
from pagerduty_pipeline.checks import CHECKS
from tests.pipeline.conftest import (START, count, envelope, make_env, make_server, run_pipeline, table_dump)
from tests.support.fake_pagerduty import generate_account, iso
from tests.support.pipeline import kept_alerts

UTC = timezone.utc
WEEK = {"since": "2024-03-01T00:00:00Z", "until": "2024-03-09T00:00:00Z"}  # data spans 7 days


def grouped(pairs) -> dict[str, set]:
    """(incident id, value) pairs -> incident id -> set of values."""
    out: dict[str, set] = {}
    for inc_id, value in pairs:
        out.setdefault(inc_id, set()).add(value)
    return out


def pages_per_day(created: Iterable[str]) -> int:
    """Requests to list items created at these times over WEEK (8 days) in daily chunks (one page at least each)."""
    per_day = Counter(c[:10] for c in created)
    return sum(max(1, math.ceil(per_day.get((START + timedelta(days=d)).strftime("%Y-%m-%d"), 0) / 100))
               for d in range(8))


def assert_matches_account(db, acc, incident_ids=None, policy: str = "resolved"):
    """Every incident of the account (or the given ids) is stored with its children, exactly (alerts as the
    ``policy`` keeps them)."""
    ids = list(incident_ids if incident_ids is not None else acc.incidents)
    rows = {r[0]: r for r in db.run(
        "SELECT id, incident_number, status, urgency, service_id, priority_id, resolved_at, title "
        "FROM pagerduty.incidents")}
    for inc_id in ids:
        inc = acc.incidents[inc_id]
        row = rows[inc_id]
        assert row[1] == inc["incident_number"]
        assert row[2] == inc["status"]
        assert row[3] == inc["urgency"]
        assert row[4] == inc["service"]["id"]
        assert row[5] == (inc["priority"] or {}).get("id")
        assert (row[6] is None) == (inc["resolved_at"] is None)
        assert row[7] == inc["title"]
    assign = grouped(db.run("SELECT incident_id, user_id FROM pagerduty.incident_assignments"))
    teams = grouped(db.run("SELECT incident_id, team_id FROM pagerduty.incident_teams"))
    logs = grouped(db.run("SELECT incident_id, id FROM pagerduty.log_entries"))
    notes = grouped(db.run("SELECT incident_id, id FROM pagerduty.notes"))
    alerts = grouped((inc_id, (aid, status)) for inc_id, aid, status in
                     db.run("SELECT incident_id, id, status FROM pagerduty.alerts"))
    acc_logs = grouped((e["incident"]["id"], e["id"]) for e in acc.log_entries.values())
    acc_alerts = kept_alerts(acc, policy)
    for inc_id in ids:
        inc = acc.incidents[inc_id]
        assert assign.get(inc_id, set()) == {a["assignee"]["id"] for a in inc["assignments"]}, inc_id
        assert teams.get(inc_id, set()) == {t["id"] for t in inc["teams"]}, inc_id
        assert logs.get(inc_id, set()) == acc_logs.get(inc_id, set()), inc_id
        assert notes.get(inc_id, set()) == {n["id"] for n in acc.notes.get(inc_id, [])}, inc_id
        assert alerts.get(inc_id, set()) == acc_alerts.get(inc_id, set()), inc_id


def test_multi_page_window_loads_everything(pg, secrets_arns, db):
    with make_server(n_incidents=350, seed=11) as server:
        env = make_env(pg, secrets_arns, server)
        out = run_pipeline(env, WEEK)
        assert out["step1"]["success"] and out["step1"]["expected_incidents"] == 350
        assert out["step3"]["success"], out["step3"]
        acc = server.account
        assert count(db, "incidents") == 350
        assert count(db, "log_entries") == len(acc.log_entries)
        assert_matches_account(db, acc)
        # paging: pages of 100 per daily chunk (+1 count request in step 1), every request with limit=100
        pages = [r for r in server.requests if r.path == "/incidents" and r.query.get("limit") == ["100"]]
        assert len(pages) == pages_per_day(inc["created_at"] for inc in acc.incidents.values())
        le_pages = [r for r in server.requests if r.path == "/log_entries"]
        assert len(le_pages) == pages_per_day(e["created_at"] for e in acc.log_entries.values())
        assert all(r.accept == "application/vnd.pagerduty+json;version=2" for r in server.requests)
        assert all(r.query.get("time_zone") == ["UTC"] for r in server.requests if r.path in ("/incidents",
                                                                                                 "/log_entries"))
        # references come from step 1's listings: no per-incident GET /incidents/{id}, and /incidents pages
        # expand only the first trigger log entry
        assert not [r for r in server.requests if r.path.startswith("/incidents/") and r.path.count("/") == 2]
        assert {tuple(r.query.get("include[]", [])) for r in pages} == {("first_trigger_log_entries",)}
        # notes only for incidents that have them, alerts once for resolved incidents that have them
        assert sorted(r.path for r in server.requests if r.path.startswith("/incidents/")) == sorted(
            [f"/incidents/{i}/notes" for i in acc.incidents if acc.notes.get(i)]
            + [f"/incidents/{i}/alerts" for i in kept_alerts(acc)])
        runs = db.run("SELECT status, step, window_since, window_until FROM pagerduty.pipeline_runs")
        assert runs[0][0] == "succeeded" and runs[0][1] == "lambda_3"
        results = db.run("SELECT check_name, passed, blocking FROM pagerduty.validation_results")
        assert len(results) == len(CHECKS) and all(r[1] for r in results)
        # the deleted user is still referenced: a stub row marked as such
        deleted = next(iter(acc.deleted))
        stub = db.run("SELECT is_stub, name FROM pagerduty.users WHERE id = :i", i=deleted)
        if stub:  # referenced only when some open incident is assigned to them
            assert stub[0][0] is True


def test_same_window_twice_gives_identical_tables(env, db, server):
    first = run_pipeline(env, WEEK, name="run-a")
    assert first["step3"]["success"]
    dump1 = table_dump(db)
    second = run_pipeline(env, WEEK, name="run-b")
    assert second["step3"]["success"]
    assert table_dump(db) == dump1
    assert count(db, "pipeline_runs", "status = 'succeeded'") == 2
    # the second run wrote no incident rows: nothing changed upstream
    assert second["step2"][-1]["counts"].get("notes", 0) == 0 and second["step2"][-1]["counts"].get("alerts", 0) == 0


def test_later_run_picks_up_update_to_old_incident(env, db, server):
    acc = server.account
    r1 = run_pipeline(env, {"since": "2024-03-01T00:00:00Z", "until": "2024-03-04T00:00:00Z"}, name="r1")
    assert r1["step3"]["success"]
    old = next(i for i in acc.incidents.values()
               if i["status"] == "triggered" and i["created_at"] < "2024-03-04")
    before = db.run("SELECT status, resolved_at FROM pagerduty.incidents WHERE id = :i", i=old["id"])[0]
    assert before == ["triggered", None]
    n_alerts = len(acc.alerts.get(old["id"], []))  # most incidents have alerts
    assert n_alerts > 0
    # alert policy "resolved": an open incident's alerts can still change, so they are not fetched yet
    assert count(db, "alerts", "incident_id = :i", i=old["id"]) == 0
    at = datetime(2024, 3, 6, 12, 0, tzinfo=UTC)
    acc.add_note(old["id"], "root cause: expired certificate", at - timedelta(minutes=5))
    new_alert = acc.add_alert(old["id"], at - timedelta(minutes=4))
    acc.update_incident(old["id"], at, status="resolved")  # its alerts, the new one too, resolve with it
    r2 = run_pipeline(env, {"since": "2024-03-05T00:00:00Z", "until": "2024-03-09T00:00:00Z"}, name="r2")
    assert r2["step3"]["success"], r2["step3"]
    row = db.run("SELECT status, resolved_at, updated_at, raw->>'status' FROM pagerduty.incidents WHERE id = :i",
                 i=old["id"])[0]
    assert row[0] == "resolved" and row[1] == at and row[2] == at and row[3] == "resolved"
    assert count(db, "notes", "incident_id = :i AND content = 'root cause: expired certificate'", i=old["id"]) == 1
    assert count(db, "alerts", "incident_id = :i AND status = 'resolved'", i=old["id"]) == n_alerts + 1
    assert count(db, "alerts", "incident_id = :i", i=old["id"]) == n_alerts + 1
    assert count(db, "alerts", "id = :a AND status = 'resolved'", a=new_alert["id"]) == 1
    assert count(db, "incident_assignments", "incident_id = :i", i=old["id"]) == 0
    assert count(db, "log_entries", "incident_id = :i AND type = 'resolve_log_entry'", i=old["id"]) == 1
    assert r2["step2"][-1]["counts"]["incidents_updated_from_log_entries"] >= 1


def test_deleted_service_becomes_missing_and_stub_references(env, db, server):
    acc = server.account
    assert run_pipeline(env, WEEK, name="r1")["step3"]["success"]
    svc_id = next(iter(acc.services))
    acc.delete_service(svc_id)
    out = run_pipeline(env, WEEK, name="r2")
    assert out["step3"]["success"], out["step3"]
    row = db.run("SELECT missing_since IS NOT NULL, is_stub FROM pagerduty.services WHERE id = :i", i=svc_id)[0]
    assert row == [True, False]
    assert count(db, "incidents", "service_id = :i", i=svc_id) > 0  # FK still resolves


def test_stub_rows_for_objects_pagerduty_no_longer_returns(pg, secrets_arns, db):
    acc = generate_account(60, 5, START)
    gone = next(iter(acc.users))
    acc.delete_user(gone)  # open incidents still assign them; include[]=assignees can't expand it
    referenced = any(a["assignee"]["id"] == gone for i in acc.incidents.values() for a in i["assignments"])
    assert referenced
    with make_server(account=acc) as server:
        out = run_pipeline(make_env(pg, secrets_arns, server), WEEK)
        assert out["step3"]["success"], out["step3"]
    assert db.run("SELECT is_stub, name FROM pagerduty.users WHERE id = :i", i=gone)[0][0] is True
    assert count(db, "incident_assignments", "user_id = :i", i=gone) > 0


def test_filters_limit_the_load(env, db, server):
    acc = server.account
    svc = next(iter(acc.services))
    out = run_pipeline(env, {**WEEK, "service_ids": [svc], "urgencies": ["high"]})
    assert out["step3"]["success"], out["step3"]
    expected = {i for i, inc in acc.incidents.items() if inc["service"]["id"] == svc and inc["urgency"] == "high"}
    assert out["step1"]["expected_incidents"] == len(expected)
    assert {r[0] for r in db.run("SELECT id FROM pagerduty.incidents")} == expected
    assert_matches_account(db, acc, expected)
    assert db.run("SELECT scope FROM pagerduty.watermarks")[0][0] == f"service_ids={svc};urgencies=high"


def test_eu_base_url_is_used(pg, secrets_arns, db):
    with make_server(n_incidents=40, base_path="/eu") as server:
        env = make_env(pg, secrets_arns, server)
        assert env["PAGERDUTY_API_URL"].endswith("/eu")
        out = run_pipeline(env, WEEK)
        assert out["step3"]["success"], out["step3"]
        assert count(db, "incidents") == 40
        assert server.requests and all(r.status == 200 for r in server.requests)
        # the same server refuses requests outside the mounted path: the client used the base URL's path
        env_wrong = dict(env, PAGERDUTY_API_URL=env["PAGERDUTY_API_URL"][: -len("/eu")])
        bad = steps.start_run(envelope(WEEK, "wrong"), env=env_wrong)
        assert bad["success"] is False and bad["error"] == "pagerduty_not_found"


def test_default_window_and_watermark(pg, secrets_arns, db):
    now = datetime.now(UTC).replace(microsecond=0)
    acc = generate_account(80, 9, now - timedelta(hours=48), now - timedelta(minutes=5))
    with make_server(account=acc) as server:
        env = make_env(pg, secrets_arns, server)
        first = run_pipeline(env, {}, name="first")
        assert first["step3"]["success"], first["step3"]
        w = first["step1"]["window"]
        since = datetime.fromisoformat(w["since"])
        until = datetime.fromisoformat(w["until"])
        assert until - since == timedelta(hours=24)
        assert abs((until - now).total_seconds()) < 60
        in_window = [i for i in acc.incidents.values() if since <= datetime.fromisoformat(i["created_at"]) < until]
        assert count(db, "incidents", "created_at >= :s AND created_at < :u", s=since, u=until) == len(in_window)
        wm = db.run("SELECT watermark FROM pagerduty.watermarks WHERE scope = 'all'")[0][0]
        assert wm == until
        second = run_pipeline(env, {}, name="second")
        assert second["step3"]["success"]
        assert datetime.fromisoformat(second["step1"]["window"]["since"]) == until - timedelta(hours=1)
        # an explicit older window never moves the watermark backwards
        third = run_pipeline(env, {"since": iso(now - timedelta(hours=40)), "until": iso(now - timedelta(hours=30))},
                             name="third")
        assert third["step3"]["success"]
        assert db.run("SELECT watermark FROM pagerduty.watermarks WHERE scope = 'all'")[0][0] >= until


@pytest.mark.slow
def test_window_over_offset_cap_is_split_and_fully_loaded(pg, secrets_arns, db):
    acc = generate_account(12_500, 21, START, note_ratio=0.01, alert_ratio=0.01)
    with make_server(account=acc) as server:
        env = make_env(pg, secrets_arns, server)
        env["PIPELINE_CHUNK_HOURS"] = "168"  # the week in one chunk: more than 10,000 rows per list
        out = run_pipeline(env, WEEK)
        assert out["step3"]["success"], out["step3"]
        assert out["step1"]["expected_incidents"] == 12_500
        assert count(db, "incidents") == 12_500
        assert count(db, "log_entries") == len(acc.log_entries)
        assert not [r for r in server.requests if r.status != 200]  # never hit the 10,000 cap
        counts = out["step2"][-1]["counts"]
        assert counts["incidents_window_splits"] >= 1 and counts["log_entries_window_splits"] >= 1
        assert counts["incidents_fetched"] == 12_500
        pages = [r for r in server.requests if r.path == "/incidents" and r.query.get("limit") == ["100"]]
        assert len(pages) <= math.ceil(12_500 / 100) * 1.05
        numbers = db.run("SELECT min(incident_number), max(incident_number), count(DISTINCT incident_number) "
                         "FROM pagerduty.incidents")[0]
        assert numbers == [1, 12_500, 12_500]


def test_a_team_filter_narrows_log_entries_at_the_api_and_a_service_filter_cannot(env, db, server):
    """/log_entries filters by team (team_ids[]) but not by service or urgency: a team-filtered run asks the API for
    its teams' entries only; a service-filtered run pages every entry of the account and drops the others."""
    acc = server.account
    team = next(iter(acc.teams))
    out = run_pipeline(env, {**WEEK, "team_ids": [team]}, name="by-team")
    assert out["step3"]["success"], out["step3"]
    expected = {i for i, inc in acc.incidents.items() if any(t["id"] == team for t in inc["teams"])}
    assert {r[0] for r in db.run("SELECT id FROM pagerduty.incidents")} == expected
    assert_matches_account(db, acc, expected)
    log_pages = [r for r in server.requests if r.path == "/log_entries"]
    assert log_pages and all(r.query.get("team_ids[]") == [team] for r in log_pages)
    team_entries = sum(1 for e in acc.log_entries.values() if e["incident"]["id"] in expected)
    assert out["step2"][-1]["counts"]["log_entries_fetched"] == team_entries < len(acc.log_entries)

    server.requests.clear()
    svc = next(iter(acc.services))
    out = run_pipeline(env, {**WEEK, "service_ids": [svc]}, name="by-service")
    assert out["step3"]["success"], out["step3"]
    log_pages = [r for r in server.requests if r.path == "/log_entries"]
    assert not [r for r in log_pages if "service_ids[]" in r.query or "team_ids[]" in r.query]
    counts = out["step2"][-1]["counts"]
    assert counts["log_entries_fetched"] == len(acc.log_entries)
    other = sum(1 for e in acc.log_entries.values() if acc.incidents[e["incident"]["id"]]["service"]["id"] != svc)
    assert counts["log_entries_other_incidents"] == other > 0
