"""Day 2: re-runs, gaps, backfills, two runs at once, dead executions, odd records, late notes, rate limits that
outlast the Lambda. Each test names the defect it proves fixed (issue "runs every day without losing data")."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from pagerduty_pipeline import steps
from pagerduty_pipeline.migrations import migrate
from pagerduty_pipeline.step_load import ChunkLoader, new_cursor
from tests.pipeline.conftest import (START, FakeContext, count, envelope, make_env, make_server, run_pipeline,
                                     table_dump)
from tests.pipeline.test_load import WEEK, assert_matches_account, grouped
from tests.support.fake_pagerduty import generate_account, iso

UTC = timezone.utc


def day(k: float) -> str:
    return iso(START + timedelta(days=k))


def run_rows(db) -> dict[str, list]:
    return {r[0]: r[1:] for r in db.run(
        "SELECT execution_name, status, error, coverage FROM pagerduty.pipeline_runs ORDER BY run_id")}


# -- 1. coverage, not a high-water mark ------------------------------------------------------------
def test_a_window_past_a_gap_leaves_the_watermark_at_the_gap_and_the_next_run_fills_it(env, db, server):
    first = run_pipeline(env, {"since": day(0), "until": day(2)}, name="first")
    assert first["step3"]["watermark"] == day(2)
    later = run_pipeline(env, {"since": day(4), "until": day(5)}, name="later")
    assert later["step3"]["success"], later["step3"]
    assert later["step3"]["watermark"] == day(2)  # [day 2, day 4) was never loaded
    assert later["step3"]["coverage"]["intervals"] == [[day(0), day(2)], [day(4), day(5)]]
    assert later["step3"]["coverage"]["gaps"] == [[day(2), day(4)]]
    assert run_rows(db)["later"][2]["gaps"] == [[day(2), day(4)]]  # pipeline_runs shows it too
    resumed = run_pipeline(env, {"until": day(8)}, name="resumed")  # what a scheduled `{}` run does
    assert resumed["step1"]["window"]["since"] == iso(START + timedelta(days=2, hours=-1))  # gap less the overlap
    cover = resumed["step3"]["coverage"]
    assert cover == {"scope": "all", "intervals": [[day(0), day(8)]], "gaps": [], "watermark": day(8)}
    assert_matches_account(db, server.account)


def test_a_window_that_no_longer_overlaps_does_not_move_the_watermark_backwards(env, db, server):
    run_pipeline(env, {"since": day(3), "until": day(5)}, name="recent")
    old = run_pipeline(env, {"since": day(0), "until": day(1)}, name="backfill")  # an old quarter, say
    assert old["step3"]["watermark"] == day(5) and old["step3"]["coverage"]["gaps"] == [[day(1), day(3)]]
    assert db.run("SELECT count(*) FROM pagerduty.coverage WHERE scope = 'all'")[0][0] == 3  # 2 + 1 daily chunks


# -- 9. a long history: windows PagerDuty accepts, since and until always sent ---------------------
def test_a_first_run_over_a_long_history_is_split_into_windows_the_api_accepts(env, db, server):
    env["PIPELINE_CHUNK_HOURS"] = str(24 * 30)
    since = iso(START - timedelta(days=200))
    out = run_pipeline(env, {"since": since, "until": WEEK["until"]}, name="history", max_loops=50)
    assert out["step3"] and out["step3"]["success"], out["step3"] or out["step2"][-1:] or out["step1"]
    listed = [r for r in server.requests if r.path in ("/incidents", "/log_entries")]
    assert listed and all(r.query.get("since") and r.query.get("until") for r in listed)
    spans = [datetime.fromisoformat(r.query["until"][0]) - datetime.fromisoformat(r.query["since"][0])
             for r in listed]
    assert max(spans) <= timedelta(days=180)
    assert out["step3"]["coverage"]["intervals"][0][0] == since and out["step3"]["coverage"]["gaps"] == []
    assert_matches_account(db, server.account)


# -- long backfills end cleanly before the execution's deadline ------------------------------------
def test_near_the_execution_deadline_the_run_ends_partial_and_the_next_run_continues(env, db, server, pg):
    started = datetime.now(UTC)
    watcher = pg.connect()

    def clock() -> float:  # real time until three daily chunks are loaded, then the deadline is close
        loaded = watcher.run("SELECT count(*) FROM pagerduty.run_windows")[0][0] if \
            watcher.run("SELECT to_regclass('pagerduty.run_windows') IS NOT NULL")[0][0] else 0
        return time.time() + (2_700 - 200 if loaded >= 3 else 0)

    name = "backfill"
    r1 = steps.start_run(envelope(WEEK, name=name, started=iso(started), timeout_seconds=2_700), env=env)
    r2 = steps.load_incidents(envelope(r1, name=name, started=iso(started), timeout_seconds=2_700), env=env,
                              clock=clock)
    watcher.close()
    assert r2["success"] and r2["complete"] is True and r2["partial"] is True and r2["cursor"] is None, r2
    r3 = steps.validate_run(envelope(r2, name=name), env=env)
    assert r3["success"] and r3["partial"] is True, r3
    assert r3["coverage"]["intervals"] == [[day(0), day(3)]] and r3["watermark"] == day(3)
    assert run_rows(db)[name][:2] == ["partial", None]
    nxt = run_pipeline(env, {"until": WEEK["until"]}, name="next")
    assert nxt["step1"]["window"]["since"] == iso(START + timedelta(days=3, hours=-1))
    assert nxt["step3"]["coverage"]["intervals"] == [[day(0), WEEK["until"]]]
    assert_matches_account(db, server.account)


# -- 2. one run at a time --------------------------------------------------------------------------
def test_a_second_run_is_refused_while_one_runs_and_changes_nothing(env, db, server):
    first = steps.start_run(envelope(WEEK, name="a"), env=env)
    assert first["success"]
    before, requests = table_dump(db), server.request_count()
    second = steps.start_run(envelope(WEEK, name="b"), env=env)
    assert second["success"] is False and second["error"] == "run_in_progress", second
    assert second["holder_execution"].endswith(":execution:sm:a") and "execution:sm:a" in second["message"]
    assert table_dump(db) == before and server.request_count() == requests  # nothing loaded, nothing asked
    handled = steps.handle_error(envelope({"failed_step": "FetchInitialData", "state": second}, name="b"), env=env)
    assert handled["recorded"] is True and handled["run_id"] == second["run_id"]
    rows = run_rows(db)
    assert rows["a"][:2] == ["running", None] and rows["b"][:2] == ["failed", "run_in_progress"]
    r2 = steps.load_incidents(envelope(first, name="a"), env=env)  # the holder goes on untouched
    assert steps.validate_run(envelope(r2, name="a"), env=env)["success"]
    third = run_pipeline(env, WEEK, name="c")
    assert third["step3"]["success"] and run_rows(db)["c"][0] == "succeeded"
    assert_matches_account(db, server.account)


def test_two_step_ones_at_the_same_moment_let_exactly_one_run(env, db, server):
    """Two Lambdas of two executions claim at once, each on its own connection: the claim is serialised."""
    barrier = threading.Barrier(4)
    results: dict[str, dict] = {}

    def start(name: str) -> None:
        barrier.wait()
        results[name] = steps.start_run(envelope(WEEK, name=name), env=env)

    threads = [threading.Thread(target=start, args=(f"at-once-{k}",)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    won = [name for name, r in results.items() if r["success"]]
    assert len(results) == 4 and len(won) == 1, results
    assert all(r["error"] == "run_in_progress" and r["holder_execution"].endswith(won[0])
               for name, r in results.items() if name not in won)
    assert db.run("SELECT count(*) FROM pagerduty.pipeline_runs WHERE status = 'running'") == [[1]]


@pytest.mark.parametrize("execution,expected", [("TIMED_OUT", "timed_out"), ("ABORTED", "aborted")])
def test_a_run_whose_execution_died_is_reconciled_by_the_next_start(env, db, server, execution, expected):
    dead = steps.start_run(envelope(WEEK, name="dead"), env=env)  # no Catch ever runs for it

    def status(execution_id: str) -> str | None:
        return execution if execution_id.endswith(":dead") else None

    nxt = steps.start_run(envelope(WEEK, name="next"), env=env, execution_status=status)
    assert nxt["success"], nxt
    assert nxt["reconciled"] == [{"run_id": dead["run_id"], "execution_id": dead_id(), "status": expected}]
    assert run_rows(db)["dead"][:2] == [expected, "reconciled"]
    late = steps.load_incidents(envelope(dead, name="dead"), env=env)  # the dead run may not write on
    assert late["success"] is False and late["error"] == "run_not_running"
    assert run_rows(db)["dead"][0] == expected


def dead_id() -> str:
    return envelope(None, name="dead")["execution_id"]


def test_without_a_readable_status_the_run_deadline_decides(env, db, server):
    now = datetime.now(UTC)
    steps.start_run(envelope(WEEK, name="alive", started=iso(now - timedelta(minutes=30)), timeout_seconds=2_700),
                    env=env)
    refused = steps.start_run(envelope(WEEK, name="second"), env=env)  # its status unreadable, deadline ahead
    assert refused["error"] == "run_in_progress"
    run_pipeline(env, WEEK, name="unused")  # still refused: nothing changes while it may run
    assert run_rows(db)["alive"][0] == "running"
    db.run("UPDATE pagerduty.pipeline_runs SET deadline = now() - interval '1 minute' WHERE execution_name = 'alive'")
    after = steps.start_run(envelope(WEEK, name="after"), env=env)
    assert after["success"] and [r["status"] for r in after["reconciled"]] == ["timed_out"]


# -- 3. odd records are kept, flagged and never block later windows --------------------------------
def test_odd_records_are_kept_flagged_and_do_not_wedge_later_runs(pg, secrets_arns, db):
    acc = generate_account(120, 3, START)
    first_day = sorted((inc for inc in acc.incidents.values() if inc["created_at"] < day(1)),
                       key=lambda inc: inc["incident_number"])
    odd = first_day[0]
    odd.update(title=None, urgency=None, priority=None, assignments=[])  # values the real API returns
    acc.touch()
    with make_server(account=acc) as server:
        env = make_env(pg, secrets_arns, server)
        one = run_pipeline(env, {"since": day(0), "until": day(2)}, name="one")
        assert one["step3"]["success"], one["step3"]
        assert one["step3"]["warnings"] == ["data_rules"] and one["step3"]["failed_checks"] == []
        (details,) = db.run("SELECT details FROM pagerduty.validation_results WHERE check_name = 'data_rules'")[0]
        reasons = {s["id"]: s["reason"] for s in details["records"]}
        assert reasons == {odd["id"]: "title is null; urgency is null"}
        assert db.run("SELECT title, urgency, priority_id FROM pagerduty.incidents WHERE id = :i", i=odd["id"]) == [
            [None, None, None]]
        two = run_pipeline(env, {"until": day(4)}, name="two")
        assert two["step3"]["success"] and two["step3"]["warnings"] == [], two["step3"]
        assert two["step3"]["coverage"]["intervals"] == [[day(0), day(4)]]


# -- 5. notes decided by annotate entry ids, not counts ---------------------------------------------
def test_a_note_added_later_to_an_incident_whose_early_entries_were_never_loaded_is_loaded(pg, secrets_arns, db):
    acc = generate_account(40, 5, START)
    inc = next(i for i in sorted(acc.incidents.values(), key=lambda i: i["incident_number"])
               if i["created_at"] < day(1) and not acc.notes.get(i["id"]))
    acc.add_note(inc["id"], "before the first window", START + timedelta(hours=20))
    with make_server(account=acc) as server:
        env = make_env(pg, secrets_arns, server)
        acc.add_note(inc["id"], "in the first window", START + timedelta(days=1, hours=2))
        assert run_pipeline(env, {"since": day(1), "until": day(2)}, name="one")["step3"]["success"]
        acc.add_note(inc["id"], "in the second window", START + timedelta(days=2, hours=2))
        assert run_pipeline(env, {"until": day(3)}, name="two")["step3"]["success"]
        stored = grouped(db.run("SELECT incident_id, content FROM pagerduty.notes"))[inc["id"]]
        assert stored == {"before the first window", "in the first window", "in the second window"}
        assert count(db, "log_entries", "type = 'annotate_log_entry' AND note_fetched_at IS NULL") == 0
        notes_requests = server.request_count(f"/incidents/{inc['id']}/notes")
        assert run_pipeline(env, {"until": day(3)}, name="again")["step3"]["success"]
        assert server.request_count(f"/incidents/{inc['id']}/notes") == notes_requests  # nothing left to fetch


# -- 7. retries that would outlast the Lambda hand back the cursor -----------------------------------
def test_a_rate_limit_pause_longer_than_the_time_left_returns_the_cursor(pg, secrets_arns, db):
    with make_server(n_incidents=80, seed=9, rate_window=300) as server:  # ratelimit-reset up to 300 s
        env = make_env(pg, secrets_arns, server)
        r1 = steps.start_run(envelope(WEEK), env=env)
        server.inject(429, count=None, path="/log_entries")  # rate limited from now on
        waits: list[float] = []
        began = time.monotonic()
        r2 = steps.load_incidents(envelope(r1), FakeContext(remaining=lambda: 120_000), env=env,
                                  sleep=waits.append)
        assert time.monotonic() - began < 30
        assert all(w < 60 for w in waits), waits  # no wait past the 60 s the margin leaves
        # the log entries' first page is fetched ahead, while incidents load: its 429 pauses every request, so the
        # step may stop in either phase of the first chunk, or, when the 429 comes before the first incidents page
        # is written (seen under load), before loading anything, which is a failure, not a cursor to loop on
        server.clear_faults()
        if r2["success"] is False:
            assert r2["error"] == "no_progress" and "before loading anything" in r2["message"], json.dumps(r2)
            assert r2["cursor"]["chunk"] == [day(0), day(1)] and r2["cursor"]["totals"]["incidents"] == 0
            assert count(db, "incidents") == 0
            state = steps.start_run(envelope(WEEK, name="exec-2"), env=env)  # the next execution starts over
            assert state["success"], state
        else:
            assert r2["complete"] is False, json.dumps(r2)[:3000]
            assert r2["cursor"]["phase"] in ("incidents", "log_entries") and r2["cursor"]["chunk"] == [day(0), day(1)]
            assert r2["counts"]["api_rate_limited"] >= 1
            state = r2
        while not state.get("complete"):
            state = steps.load_incidents(envelope(state), env=env)
            assert state["success"], state
        assert steps.validate_run(envelope(state), env=env)["success"]
        assert_matches_account(db, server.account)


# -- 6. lists without a time window past the 10,000 offset cap ------------------------------------
def test_reference_lists_past_the_offset_cap_load_and_unseen_references_are_fetched_by_id(pg, secrets_arns, db):
    acc = generate_account(30, 6, START)
    template = next(iter(acc.users.values()))
    for n in range(10_050):  # more users than offset paging can reach
        uid = f"PU{n:06d}"
        acc.users[uid] = {**template, "id": uid, "name": f"User {n}", "summary": f"User {n}",
                          "email": f"user{n}@example.com"}
    late_user = uid  # listed after the 10,000th: the API never serves it in /users
    inc = next(i for i in acc.incidents.values() if day(1) <= i["created_at"] < day(2))
    acc.add_note(inc["id"], "from a user past the cap", START + timedelta(days=1, hours=12), user_id=late_user)
    acc.touch()
    with make_server(account=acc) as server:
        env = make_env(pg, secrets_arns, server)
        out = run_pipeline(env, WEEK, name="many-users")
        assert out["step3"] and out["step3"]["success"], out["step3"] or out["step2"][-1:] or out["step1"]
        assert out["step1"]["truncated_dimensions"] == ["users"]
        assert db.run("SELECT is_stub, email, missing_since FROM pagerduty.users WHERE id = :i", i=late_user) == [
            [False, "user10049@example.com", None]]  # the stub its note made was looked up by id
        assert server.request_count(f"/users/{late_user}") == 1
        assert count(db, "users", "NOT is_stub AND missing_since IS NOT NULL") == 0  # a cut list proves no deletion
        deleted = next(iter(acc.deleted))  # referenced by open incidents, gone from PagerDuty: 404, stays a stub
        assert db.run("SELECT is_stub, missing_since IS NOT NULL FROM pagerduty.users WHERE id = :i",
                      i=deleted) in ([], [[True, True]])
        assert_matches_account(db, acc)


def test_an_incident_with_more_alerts_than_the_api_pages_is_loaded_up_to_the_cap(pg, secrets_arns, db):
    acc = generate_account(20, 7, START)
    inc = next(i for i in sorted(acc.incidents.values(), key=lambda i: i["incident_number"])
               if i["status"] == "resolved")
    template = {"type": "alert", "summary": inc["title"], "status": "resolved", "service": inc["service"],
                "incident": acc.ref(inc, "incident"), "severity": "warning", "suppressed": False,
                "created_at": inc["created_at"], "body": {"type": "alert_body", "details": {}}}
    acc.alerts[inc["id"]] = [{**template, "id": f"QA{n:08d}", "alert_key": f"storm-{n}"} for n in range(10_050)]
    inc["alert_counts"] = {"all": 10_050, "triggered": 0, "resolved": 10_050}
    acc.touch()
    with make_server(account=acc) as server:
        env = make_env(pg, secrets_arns, server)
        out = run_pipeline(env, WEEK, name="alert-storm")
        assert out["step3"] and out["step3"]["success"], out["step3"] or out["step2"][-1:]
        assert count(db, "alerts", "incident_id = :i", i=inc["id"]) == 10_000  # all the API serves
        assert out["step2"][-1]["counts"]["incidents_with_alerts_truncated"] == 1


def test_an_execution_with_no_time_left_for_one_chunk_fails_clearly_instead_of_recording_nothing(env, db, server):
    started = iso(datetime.now(UTC))
    r1 = steps.start_run(envelope(WEEK, name="late", started=started, timeout_seconds=2_700), env=env)
    # step 2 starts with a minute to the deadline: inside the reserve kept for step 3
    r2 = steps.load_incidents(envelope(r1, name="late", started=started, timeout_seconds=2_700), env=env,
                              clock=lambda: time.time() + 2_700 - 60)
    assert r2["success"] and r2["complete"] and r2["partial"], r2
    r3 = steps.validate_run(envelope(r2, name="late"), env=env)
    assert r3["success"] is False and r3["error"] == "no_progress", r3
    assert run_rows(db)["late"][:2] == ["failed", "no_progress"] and count(db, "coverage") == 0


@pytest.mark.parametrize("started,timeout", [("yesterday", 2_700), ("2024-03-01T00:00:00", 2_700),
                                             ("2024-03-01T00:00:00Z", 0), ("2024-03-01T00:00:00Z", "2700")])
def test_a_malformed_execution_deadline_is_refused(env, db, server, started, timeout):
    out = steps.start_run(envelope(WEEK, name="odd-envelope", started=started, timeout_seconds=timeout), env=env)
    assert out["success"] is False and out["error"] == "invalid_envelope"
    assert "execution_start_time" in out["message"]
    assert db.run("SELECT to_regclass('pagerduty.pipeline_runs')") == [[None]] and server.requests == []


def test_step1_without_time_left_fails_and_releases_the_run(env, db, server):
    started = iso(datetime.now(UTC) - timedelta(seconds=2_700 - 60))  # a minute to the deadline: inside the reserve
    out = steps.start_run(envelope(WEEK, name="too-late", started=started, timeout_seconds=2_700), env=env)
    assert out["success"] is False and out["error"] == "out_of_time", out
    assert server.requests == [] and count(db, "incidents") == 0
    assert run_rows(db)["too-late"][:2] == ["failed", "out_of_time"]
    assert run_pipeline(env, WEEK, name="after")["step3"]["success"]  # nothing left holding the run



def test_an_incident_without_an_id_is_skipped_not_a_crash_of_its_batch(db):
    """Such a record cannot be stored; the rest of its page is, and the API's count (step 3) shows it missing."""
    migrate(db)
    acc = generate_account(3, 8, START)
    good, broken = [dict(i) for i in list(acc.incidents.values())[:2]]
    del broken["id"]
    for inc in (good, broken):  # as include[]=first_trigger_log_entries serves it
        inc["first_trigger_log_entry"] = acc.log_entries[inc["first_trigger_log_entry"]["id"]]
    loader = ChunkLoader(db, None, {"filters": {}}, new_cursor((day(0), day(1))), counts := {}, None,
                         chunk_length=timedelta(days=1))
    loader.incident_page([good, broken])
    assert db.run("SELECT id FROM pagerduty.incidents") == [[good["id"]]]
    assert counts["incidents_fetched"] == 1 and count(db, "log_entries") == 1  # its trigger entry too
