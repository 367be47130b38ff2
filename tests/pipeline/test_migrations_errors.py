"""Migrations (concurrent, repeated), the error handler, and the thin Lambda handlers."""

from __future__ import annotations

import json
import threading

import pytest

from pagerduty_pipeline import steps
from pagerduty_pipeline.migrations import MIGRATIONS, migrate
from tests.pipeline.conftest import count, envelope, run_pipeline
from tests.pipeline.test_load import WEEK
from tests.support.lambda_runtime import load_handler


def test_migrations_run_concurrently_and_twice(pg, db):
    conns = [pg.connect() for _ in range(4)]
    results, errors = [None] * 4, []
    barrier = threading.Barrier(4)

    def worker(i):
        try:
            barrier.wait()
            results[i] = migrate(conns[i])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    applied = sorted(v for r in results for v in r)
    assert applied == [v for v, _, _ in MIGRATIONS]  # each version applied exactly once, by someone
    assert migrate(conns[0]) == []  # and again: nothing to do
    rows = db.run("SELECT version, name FROM pagerduty.schema_migrations ORDER BY version")
    assert rows == [[v, n] for v, n, _ in MIGRATIONS]
    tables = {r[0] for r in db.run("SELECT table_name FROM information_schema.tables WHERE table_schema = 'pagerduty'")}
    assert {"services", "teams", "users", "escalation_policies", "priorities", "incidents", "incident_assignments",
            "incident_teams", "log_entries", "notes", "alerts", "pipeline_runs", "validation_results",
            "schema_migrations", "watermarks"} <= tables
    for c in conns:
        c.close()


def test_foreign_keys_are_enforced(pg, db):
    migrate(db)
    with pytest.raises(Exception) as exc:
        db.run("INSERT INTO pagerduty.incidents (id, incident_number, created_at, service_id, raw) "
               "VALUES ('Q1', 1, now(), 'PNOPE', '{}')")
    assert "foreign key" in str(exc.value)


def caught_state(inp, message="boom", error_type="RuntimeError", name="Lambda.Unknown"):
    cause = json.dumps({"errorMessage": message, "errorType": error_type, "stackTrace": ["..."]})
    return {**inp, "error": {"Error": name, "Cause": cause}}


def test_error_handler_caught_exception_in_step1(env, db, server):
    r1 = steps.start_run(envelope(WEEK, name="e1"), env=env)
    state = caught_state(WEEK, "Task timed out after 600.00 seconds", "Sandbox.Timedout", "Sandbox.Timedout")
    out = steps.handle_error(envelope({"failed_step": "Step1", "state": state}, name="e1", state="HandleError"),
                             env=env)
    assert out == {"success": False, "error": "Sandbox.Timedout",
                   "message": "Step1: Sandbox.Timedout: Task timed out after 600.00 seconds", "failed_step": "Step1",
                   "run_id": r1["run_id"], "recorded": True}
    run = db.run("SELECT status, step, error, message, finished_at IS NOT NULL FROM pagerduty.pipeline_runs")[0]
    assert run == ["failed", "Step1", "Sandbox.Timedout", "Sandbox.Timedout: Task timed out after 600.00 seconds",
                   True]


def test_error_handler_caught_states_error_with_plain_cause(env, db, server):
    r1 = steps.start_run(envelope(WEEK, name="e2"), env=env)
    state = {**r1, "error": {"Error": "States.Timeout", "Cause": "State timed out"}}
    out = steps.handle_error(envelope({"failed_step": "Step2", "state": state}, name="e2"), env=env)
    assert out["error"] == "States.Timeout" and out["message"] == "Step2: State timed out"
    assert out["run_id"] == r1["run_id"] and out["recorded"]


def test_error_handler_success_false_payload(env, db, server):
    server.inject(401, count=100, path="/log_entries")
    out = run_pipeline(env, WEEK, name="e3")
    failed = out["step2"][-1]
    assert failed["success"] is False and failed["error"] == "pagerduty_unauthorized"
    res = steps.handle_error(envelope({"failed_step": "Step2", "state": failed}, name="e3"), env=env)
    assert res["success"] is False and res["error"] == "pagerduty_unauthorized"
    assert isinstance(res["message"], str) and "Unauthorized" in res["message"]
    assert res["failed_step"] == "Step2" and res["run_id"] == failed["run_id"]
    assert db.run("SELECT status, step, error FROM pagerduty.pipeline_runs")[0] == ["failed", "Step2",
                                                                                     "pagerduty_unauthorized"]
    # a step that omitted success
    res = steps.handle_error(envelope({"failed_step": "Step3", "state": {"run_id": failed["run_id"]}}, name="e3"),
                             env=env)
    assert res["error"] == "missing_success" and isinstance(res["message"], str) and res["message"]


def test_error_handler_when_database_is_unreachable(env, db, server):
    bad_env = {**env, "DB_PORT": "1"}
    state = caught_state({"run_id": 7, "window": {}}, "connection refused")
    out = steps.handle_error(envelope({"failed_step": "Step2", "state": state}), env=bad_env)
    assert out["success"] is False and out["recorded"] is False
    assert out["error"] == "Lambda.Unknown" and out["message"] == "Step2: RuntimeError: connection refused"
    assert out["run_id"] == 7
    out = steps.handle_error(envelope({"failed_step": "Step1", "state": "garbage"}), env={})
    assert isinstance(out["error"], str) and isinstance(out["message"], str) and out["success"] is False


def test_lambda_handlers_wire_the_steps_through_the_environment(env, db, server, monkeypatch):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    h1, h2, h3, he = (load_handler(n) for n in ("lambda_1", "lambda_2", "lambda_3", "lambda_error_handler"))
    r1 = h1(envelope(WEEK, name="h", state="Step1"), None)
    assert r1["success"], r1
    r2 = h2(envelope(r1, name="h", state="Step2"), None)
    assert r2["success"] and r2["complete"]
    json.dumps(r2)  # JSON-serialisable, as Lambda requires
    r3 = h3(envelope(r2, name="h", state="Step3"), None)
    assert r3["success"], r3
    assert count(db, "incidents") == len(server.account.incidents)
    assert db.run("SELECT status FROM pagerduty.pipeline_runs")[0][0] == "succeeded"
    out = he(envelope({"failed_step": "Step3", "state": {**r3, "success": False, "error": "x", "message": "y"}},
                      name="h"), None)
    assert out["error"] == "x" and out["message"] == "Step3: y" and out["run_id"] == r1["run_id"]
