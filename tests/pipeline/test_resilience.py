"""Retries, fail-fast errors, rate limits, dropped database connections, Lambda time limits."""

from __future__ import annotations

import threading

import pytest

from pagerduty_pipeline import paging, steps
from pagerduty_pipeline.client import PagerDutyClient
from pagerduty_pipeline.errors import PagerDutyError
from tests.pipeline.conftest import (START, TOKEN, FakeContext, count, envelope, make_env, make_server,
                                     run_pipeline, table_dump)
from tests.pipeline.test_load import WEEK, assert_matches_account
from tests.support.fake_pagerduty import generate_account
from tests.support.postgres import drop_pipeline_schemas


class Sleeps:
    def __init__(self):
        self.calls = []

    def __call__(self, seconds):
        self.calls.append(seconds)


def test_429_with_headers_waits_for_reset_then_succeeds(env, db, server):
    sleeps = Sleeps()
    server.inject(429, count=2, headers=True, path="/incidents")
    out = run_pipeline(env, WEEK, sleep=sleeps)
    assert out["step3"]["success"], out["step3"]
    assert [r.status for r in server.requests if r.path == "/incidents"][:2] == [429, 429]
    # ratelimit-reset (seconds left in the fake's 60 s window) was honoured, plus < 1 s jitter
    assert len([s for s in sleeps.calls if s >= 1]) >= 2
    assert count(db, "incidents") == len(server.account.incidents)


def test_429_without_headers_backs_off_then_succeeds(env, db, server):
    sleeps = Sleeps()
    server.inject(429, count=3, headers=False, path="/log_entries")
    # one request at a time, so the three 429s are one request's three attempts
    out = run_pipeline({**env, "PAGERDUTY_MAX_IN_FLIGHT": "1"}, WEEK, sleep=sleeps)
    assert out["step3"]["success"], out["step3"]
    # Each 429 pauses every worker (the bucket's block) for the backoff: exponential with jitter within [b/2, b],
    # b = 1, 2, 4 s. A worker that queued during a pause sleeps what is left of it, so the sleeps are the three
    # pauses, or less; the sleeps are not timed, so the clock barely moves and the longest is the third pause.
    assert any(0.5 <= s <= 1.0 for s in sleeps.calls), sleeps.calls
    assert 1.99 <= max(sleeps.calls) <= 4.0, sleeps.calls
    assert count(db, "log_entries") == len(server.account.log_entries)
    assert out["step2"][-1]["counts"]["api_retries"] == 3


@pytest.mark.parametrize("status", [500, 502, 503, 408])
def test_transient_errors_are_retried(env, db, server, status):
    server.inject(status, count=2, path="/incidents")
    out = run_pipeline(env, WEEK, sleep=Sleeps())
    assert out["step3"]["success"], out["step3"]
    assert count(db, "incidents") == len(server.account.incidents)


def test_dropped_connection_and_malformed_json_are_retried(env, db, server):
    server.inject_drop(count=1, path="/log_entries")
    server.inject_malformed(count=1, path="/incidents")
    out = run_pipeline(env, WEEK, sleep=Sleeps())
    assert out["step3"]["success"], out["step3"]
    assert_matches_account(db, server.account)


def test_persistent_5xx_gives_up_after_bounded_attempts(env, db, server):
    server.inject(503, count=1000, path="/incidents")
    sleeps = Sleeps()
    r1 = steps.start_run(envelope(WEEK), env=env, sleep=sleeps)
    assert r1["success"] is False
    assert r1["error"] == "pagerduty_unavailable"
    assert "503" in r1["message"] and "gave up after 6 attempts" in r1["message"]
    assert server.request_count("/incidents") == 6 and len(sleeps.calls) == 5
    assert db.run("SELECT status, error FROM pagerduty.pipeline_runs")[0] == ["failed", "pagerduty_unavailable"]


def test_malformed_json_everywhere_is_a_clear_error(env, db, server):
    server.inject_malformed(count=1000, path="/teams")
    r1 = steps.start_run(envelope(WEEK), env=env, sleep=Sleeps())
    assert r1["success"] is False and r1["error"] == "pagerduty_bad_response"
    assert "malformed JSON" in r1["message"] and "/teams" in r1["message"]


def test_401_fails_fast_with_pagerduty_message(env, db, server):
    server.inject(401, count=1000)
    sleeps = Sleeps()
    r1 = steps.start_run(envelope(WEEK), env=env, sleep=sleeps)
    assert r1["success"] is False
    assert r1["error"] == "pagerduty_unauthorized"
    assert "Unauthorized" in r1["message"] and "2006" in r1["message"]
    assert r1["status"] == 401 and r1["pagerduty_code"] == 2006
    assert len(server.requests) == 1 and sleeps.calls == []
    assert TOKEN not in r1["message"]
    run = db.run("SELECT status, step, error, message FROM pagerduty.pipeline_runs")[0]
    assert run[:3] == ["failed", "lambda_1", "pagerduty_unauthorized"] and "Unauthorized" in run[3]


def test_wrong_token_is_rejected_by_the_server(pg, secrets_arns, db):
    with make_server(n_incidents=5) as server:
        server.token = "another-token"
        r1 = steps.start_run(envelope(WEEK), env=make_env(pg, secrets_arns, server), sleep=Sleeps())
        assert r1["error"] == "pagerduty_unauthorized" and "2006" in r1["message"]


def test_400_offset_cap_error_is_not_retried(server):
    client = PagerDutyClient(TOKEN, server.url, sleep=Sleeps())
    with pytest.raises(PagerDutyError) as exc:
        client.page("/incidents", "incidents", [("date_range", "all")], offset=9950, limit=100)
    assert exc.value.status == 400 and exc.value.pd_code == 2002
    assert "Offset must be less than 10001." in exc.value.message
    assert client.request_count == 1


def test_client_honours_ratelimit_remaining(server):
    server.rate_limit = 3
    sleeps = Sleeps()
    client = PagerDutyClient(TOKEN, server.url, sleep=sleeps, rate_per_minute=1_000_000)
    for _ in range(3):
        client.get("/priorities")
    # after the response with ratelimit-remaining <= 1 the client pauses for ratelimit-reset seconds
    assert sleeps.calls and sleeps.calls[0] >= 1
    assert not [r for r in server.requests if r.status == 429]


def test_token_bucket_keeps_below_the_limit(server):
    clock = [0.0]
    sleeps = []

    def sleep(s):
        sleeps.append(s)
        clock[0] += s

    client = PagerDutyClient(TOKEN, server.url, sleep=sleep, clock=lambda: clock[0], rate_per_minute=900)
    for _ in range(40):
        client.get("/priorities")
    # 10-request burst, then 15 req/s: 30 more requests need >= 2 s of (virtual) waiting
    assert sum(sleeps) >= 30 / 15 - 1e-6
    assert repr(client).find(TOKEN) == -1


def test_db_connection_dropped_mid_transaction_then_rerun_completes(env, db, server, pg, monkeypatch):
    """A trigger terminates the loader's own backend inside an incident batch transaction."""
    monkeypatch.setattr(paging, "WRITE_BATCH_ITEMS", 100)  # one page per transaction: several batches
    env["PIPELINE_CHUNK_HOURS"] = "192"  # the whole window in one chunk: batches of exactly 100 incidents
    r1 = steps.start_run(envelope(WEEK), env=env)
    assert r1["success"]
    admin = pg.admin_connect()
    admin.run("""CREATE TABLE public.kill_switch (armed boolean)""")
    admin.run("INSERT INTO public.kill_switch VALUES (true)")
    admin.run("GRANT ALL ON public.kill_switch TO pipeline")
    # a statement trigger on incident_teams (written after the incidents, in the same transaction)
    # kills the loader's backend in the middle of the second batch
    admin.run("""CREATE FUNCTION public.kill_once() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN
                   IF (SELECT count(*) FROM pagerduty.incidents) > 100
                      AND (SELECT armed FROM public.kill_switch) THEN
                     PERFORM pg_terminate_backend(pg_backend_pid());
                   END IF;
                   RETURN NULL;
                 END $$""")
    admin.run("""CREATE TRIGGER kill_once AFTER INSERT ON pagerduty.incident_teams
                 FOR EACH STATEMENT EXECUTE FUNCTION public.kill_once()""")
    r2 = steps.load_incidents(envelope(r1), env=env)
    assert r2["success"] is False and r2["error"] == "db_error", r2
    assert r2["run_id"] == r1["run_id"]
    # nothing half-written: only the first batch (committed before the kill), complete with children
    stored = [r[0] for r in db.run("SELECT id FROM pagerduty.incidents")]
    assert len(stored) == 100
    assert_matches_account_partial(db, server.account, stored)
    admin.run("UPDATE public.kill_switch SET armed = false")
    # rerun step 2 with the same input (as a Step Functions retry / new execution would)
    state = r1
    while True:
        state = steps.load_incidents(envelope(state), env=env)
        assert state["success"], state
        if state["complete"]:
            break
    r3 = steps.validate_run(envelope(state), env=env)
    assert r3["success"], r3
    assert_matches_account(db, server.account)
    admin.run("DROP TRIGGER kill_once ON pagerduty.incident_teams")
    admin.close()


def assert_matches_account_partial(db, acc, ids):
    for inc_id in ids:
        inc = acc.incidents[inc_id]
        assert count(db, "incident_teams", "incident_id = :i", i=inc_id) == len(inc["teams"])
        assert count(db, "incident_assignments", "incident_id = :i", i=inc_id) == len(
            {a["assignee"]["id"] for a in inc["assignments"]})
        assert count(db, "log_entries", "incident_id = :i AND type = 'trigger_log_entry'", i=inc_id) == 1


def test_db_server_stopped_mid_load_then_rerun_completes(pg, secrets_arns, db, monkeypatch):
    """Stop PostgreSQL while step 2 runs (from the fake server's request path), then restart and rerun."""
    monkeypatch.setattr(paging, "WRITE_BATCH_ITEMS", 100)  # one page per transaction: several batches
    with make_server(n_incidents=600, seed=8) as server:
        env = make_env(pg, secrets_arns, server)
        env["PIPELINE_CHUNK_HOURS"] = "192"  # the whole window in one chunk: batches of exactly 100 incidents
        r1 = steps.start_run(envelope(WEEK), env=env)
        assert r1["success"]
        stopped = threading.Event()
        watcher = pg.connect()

        def on_call(_n):  # once the first batch is committed (the writer runs in its own thread)
            if not stopped.is_set() and watcher.run("SELECT count(*) FROM pagerduty.incidents")[0][0] >= 100:
                watcher.close()
                pg.stop(mode="fast")
                stopped.set()

        try:
            r2 = steps.load_incidents(envelope(r1), FakeContext(on_call=on_call), env=env)
        finally:
            if stopped.is_set():
                pg.start()  # also when the step raised: later tests share this PostgreSQL
        assert stopped.is_set()
        assert r2["success"] is False and r2["error"] == "db_error", r2
        conn = pg.connect()
        try:
            stored = [r[0] for r in conn.run("SELECT id FROM pagerduty.incidents")]
            assert len(stored) % 100 == 0 and 0 < len(stored) < 600
            assert_matches_account_partial(conn, server.account, stored)
            state = r1
            for _ in range(10):
                state = steps.load_incidents(envelope(state), env=env)
                if state["complete"]:
                    break
            assert state["success"] and state["complete"]
            assert steps.validate_run(envelope(state), env=env)["success"]
            assert_matches_account(conn, server.account)
        finally:
            conn.close()


def test_step2_time_limit_stops_and_resumes_exactly(pg, secrets_arns, db):
    # Few incidents with alerts or notes: the budget below allows only a couple of detail requests per invocation,
    # and the point is stops in all three phases within the loop's 200 invocations (with alerts on nearly every
    # incident, the details phases of the first chunks alone would use them all up).
    account = generate_account(450, 4, START, alert_ratio=0.10, note_ratio=0.05)
    with make_server(account=account) as server:
        env = make_env(pg, secrets_arns, server)
        env.update(PIPELINE_TIME_MARGIN_MS="30000", PAGERDUTY_MAX_IN_FLIGHT="1", PIPELINE_CHUNK_HOURS="192")
        r1 = steps.start_run(envelope(WEEK), env=env)
        state, invocations = r1, []
        for _ in range(400):
            # time runs out once the server has answered a few requests in this invocation (one page in flight
            # plus at most two first pages fetched ahead; an incident's details take two: what the step waits for
            # is answered among the first four; later ones are dropped, not committed). One chunk for the week:
            # five pages of incidents, so the time can run out inside every phase.
            ctx = FakeContext(remaining=lambda s=len(server.requests): 33_000 if len(server.requests) - s < 4
                              else 1_000)
            state = steps.load_incidents(envelope(state, state="Step2"), ctx, env=env)
            invocations.append(state)
            assert state["success"], (state.get("error"), state.get("message"))
            if state["complete"]:
                break
        assert len(invocations) > 5
        assert all(s["complete"] is False and s["cursor"] for s in invocations[:-1])
        phases = {s["cursor"]["phase"] for s in invocations[:-1]}
        assert phases == {"incidents", "log_entries", "details"}
        counts = invocations[-1]["counts"]
        assert counts["incidents_fetched"] == 450  # nothing fetched twice
        assert counts["log_entries_fetched"] == len(server.account.log_entries)
        r3 = steps.validate_run(envelope(invocations[-1]), env=env)
        assert r3["success"], r3
        assert_matches_account(db, server.account)
        # the resumed load equals a load in one go
        resumed = table_dump(db)
        drop_pipeline_schemas(db)
        one_go = run_pipeline(env, WEEK, name="one-go")
        assert one_go["step3"]["success"] and len(one_go["step2"]) == 1
        assert table_dump(db) == resumed


def test_context_none_means_no_time_limit(env, db, server):
    r1 = steps.start_run(envelope(WEEK), None, env=env)
    r2 = steps.load_incidents(envelope(r1), None, env=env)
    assert r2["success"] and r2["complete"] and r2["cursor"] is None


def test_step2_without_time_to_work_fails_instead_of_looping(pg, secrets_arns, db):
    """A margin larger than the time left would make the workflow call step 2 forever: fail clearly."""
    with make_server(n_incidents=50, seed=5) as server:
        env = make_env(pg, secrets_arns, server)
        r1 = steps.start_run(envelope(WEEK), env=env)
        requests_before = server.request_count()
        r2 = steps.load_incidents(envelope(r1, state="Step2"), FakeContext(remaining=lambda: 5_000), env=env)
        assert r2["success"] is False and r2["error"] == "no_progress", r2
        assert "PIPELINE_TIME_MARGIN_MS (60000 ms)" in r2["message"]
        assert server.request_count() == requests_before
        assert count(db, "incidents") == 0
        assert db.run("SELECT status, error FROM pagerduty.pipeline_runs")[0] == ["failed", "no_progress"]
