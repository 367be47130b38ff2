"""The error handler on EventBridge's "Step Functions Execution Status Change" (FAILED, TIMED_OUT, ABORTED): the run
of an execution that ended without a Catch (its own timeout, StopExecution) is recorded as ended. On the real
PostgreSQL, with the handler logged in as the real pagerduty_error_recorder, which may call
pagerduty.record_run_ended and record_run_failure and nothing else."""

from __future__ import annotations

import copy

import pytest

from pagerduty_pipeline import metrics, roles, runs, steps
from pagerduty_pipeline.migrations import migrate
from pagerduty_pipeline.step_error import MAX_MESSAGE
from tests.pipeline.conftest import envelope
from tests.pipeline.test_roles import PASSWORD, add_run, db_secret, denied, login_as, passwords

STARTED_MS = 1_796_205_600_000  # 2026-12-02T09:00:00Z


def arn(name: str) -> str:
    return envelope({}, name=name)["execution_id"]


def status_change(name: str, status: str, *, error=None, cause=None, **detail) -> dict:
    """The event EventBridge sends (error, cause and input are null when Step Functions has none)."""
    execution = arn(name)
    return {"version": "0", "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
            "detail-type": "Step Functions Execution Status Change", "source": "aws.states",
            "account": "123456789012", "time": "2026-12-02T10:00:00Z", "region": "eu-west-2",
            "resources": [execution],
            "detail": {"executionArn": execution,
                       "stateMachineArn": "arn:aws:states:eu-west-2:123456789012:stateMachine:sm", "name": name,
                       "status": status, "startDate": STARTED_MS, "stopDate": STARTED_MS + 2_700_000,
                       "input": None, "output": None, "error": error, "cause": cause, **detail}}


@pytest.fixture
def recorder_env(pg, env, db):
    """The error handler's environment: it logs in as pagerduty_error_recorder (IAM on RDS, a password here)."""
    migrate(db)
    with passwords(pg, roles.ERROR_RECORDER):
        yield {**env, "DB_SECRET_ARN": db_secret(roles.ERROR_RECORDER, PASSWORD, pg)}


def stored(db, name: str) -> list:
    return db.run("SELECT status, step, error, message, finished_at IS NOT NULL FROM pagerduty.pipeline_runs "
                  "WHERE execution_id = :e", e=arn(name))


def all_runs(db) -> list:
    return db.run("SELECT to_jsonb(r)::text FROM pagerduty.pipeline_runs r ORDER BY run_id")


def test_a_timed_out_execution_ends_its_running_run_timed_out(db, recorder_env):
    run_id = add_run(db, arn("slow"))
    out = steps.handle_error(status_change("slow", "TIMED_OUT"), env=recorder_env)
    assert out == {"success": False, "source": "status_change", "execution_arn": arn("slow"), "status": "TIMED_OUT",
                   "run_id": run_id, "recorded": True, "run_status": "timed_out"}
    ((status, step, error, message, finished),) = stored(db, "slow")
    assert (status, step, error, finished) == ("timed_out", "lambda_1", "States.Timeout", True)
    assert "TimeoutSeconds" in message and "no Catch ran" in message


def test_an_aborted_execution_ends_its_running_run_aborted_with_the_cause(db, recorder_env):
    run_id = add_run(db, arn("stopped"))
    out = steps.handle_error(status_change("stopped", "ABORTED", cause="stopped by the on-call engineer"),
                             env=recorder_env)
    assert (out["recorded"], out["run_id"], out["run_status"]) == (True, run_id, "aborted")
    assert stored(db, "stopped") == [["aborted", "lambda_1", "States.Aborted", "stopped by the on-call engineer",
                                      True]]


def test_a_failed_execution_no_catch_saw_records_the_events_error_and_cause(db, recorder_env):
    add_run(db, arn("crashed"))
    cause = "x" * (MAX_MESSAGE + 500)
    out = steps.handle_error(status_change("crashed", "FAILED", error="States.Runtime", cause=cause), env=recorder_env)
    assert (out["recorded"], out["run_status"]) == (True, "failed")
    assert stored(db, "crashed") == [["failed", "lambda_1", "States.Runtime", "x" * MAX_MESSAGE, True]]
    # without error and cause: a name and a sentence all the same
    add_run(db, arn("quiet"))  # the one running run now
    event = status_change("quiet", "FAILED")
    for key in ("error", "cause", "input", "output"):
        del event["detail"][key]  # absent, not only null
    assert steps.handle_error(event, env=recorder_env)["recorded"] is True
    ((_, _, error, message, _),) = stored(db, "quiet")
    assert error == "States.Failed" and "no Catch recorded why" in message


def test_a_run_the_catch_already_failed_keeps_its_precise_error(db, recorder_env):
    run_id = add_run(db, arn("caught"))
    state = {"success": False, "run_id": run_id, "error": "pagerduty_unauthorized", "message": "HTTP 401"}
    caught = steps.handle_error(envelope({"failed_step": "FetchIncidents", "state": state}, name="caught"),
                                env=recorder_env)
    assert caught["recorded"] is True
    before = stored(db, "caught")
    out = steps.handle_error(status_change("caught", "FAILED", error="pagerduty_unauthorized",
                                           cause="FetchIncidents: HTTP 401"), env=recorder_env)
    assert (out["run_id"], out["recorded"], out["run_status"]) == (run_id, False, "failed")
    assert "already" in out["reason"]
    assert stored(db, "caught") == before == [["failed", "FetchIncidents", "pagerduty_unauthorized", "HTTP 401", True]]


@pytest.mark.parametrize("status", ["FAILED", "TIMED_OUT", "ABORTED"])
def test_a_finished_run_is_never_changed(db, recorder_env, status):
    done = add_run(db, arn("done"), "succeeded")
    partial = add_run(db, arn("partial"), "partial")
    reconciled = add_run(db, arn("reconciled"), "timed_out")
    before = all_runs(db)
    for name, run_id, now in (("done", done, "succeeded"), ("partial", partial, "partial"),
                              ("reconciled", reconciled, "timed_out")):
        out = steps.handle_error(status_change(name, status, error="States.Timeout"), env=recorder_env)
        assert (out["run_id"], out["recorded"], out["run_status"]) == (run_id, False, now)
    assert all_runs(db) == before


def test_an_execution_without_a_run_records_nothing(db, recorder_env):
    add_run(db, arn("other"))
    before = all_runs(db)
    out = steps.handle_error(status_change("refused-input", "FAILED", error="States.Runtime"), env=recorder_env)
    assert out == {"success": False, "source": "status_change", "execution_arn": arn("refused-input"),
                   "status": "FAILED", "run_id": None, "recorded": False, "run_status": None,
                   "reason": "no run has this execution id (its input was refused before step 1 recorded one)"}
    assert all_runs(db) == before


def malformed() -> list[tuple[str, object, str]]:
    good = status_change("odd", "TIMED_OUT")

    def changed(edit) -> dict:
        event = copy.deepcopy(good)
        edit(event)
        return event

    return [
        ("no detail", changed(lambda e: e.pop("detail")), "detail is missing or not an object"),
        ("detail null", changed(lambda e: e.update(detail=None)), "detail is missing or not an object"),
        ("detail a list", changed(lambda e: e.update(detail=[good["detail"]])), "detail is missing or not an object"),
        ("no executionArn", changed(lambda e: e["detail"].pop("executionArn")), "no executionArn"),
        ("executionArn a number", changed(lambda e: e["detail"].update(executionArn=7)), "no executionArn"),
        ("still running", changed(lambda e: e["detail"].update(status="RUNNING")), "'RUNNING' does not end a run"),
        ("succeeded", changed(lambda e: e["detail"].update(status="SUCCEEDED")), "'SUCCEEDED' does not end a run"),
        ("unknown status", changed(lambda e: e["detail"].update(status="EXPLODED")), "'EXPLODED' does not end a run"),
        ("no status", changed(lambda e: e["detail"].pop("status")), "None does not end a run"),
        ("another detail-type", changed(lambda e: e.update({"detail-type": "Step Functions State Machine Status"})),
         "not a Step Functions status change"),
        ("another source", changed(lambda e: e.update(source="aws.ec2")), "not a Step Functions status change"),
    ]


@pytest.mark.parametrize("case, event, reason", malformed(), ids=[c[0] for c in malformed()])
def test_an_odd_event_is_answered_and_logged_and_writes_nothing(db, recorder_env, caplog, case, event, reason):
    add_run(db, arn("odd"))
    before = all_runs(db)
    out = steps.handle_error(event, env=recorder_env)
    assert out["success"] is False and out["source"] == "status_change" and out["recorded"] is False
    assert out["run_id"] is None and out["run_status"] is None
    assert reason in out["reason"], out
    assert "status_change_ignored" in caplog.text
    assert all_runs(db) == before


@pytest.mark.parametrize("event", [None, "garbage", [], 42])
def test_an_event_that_is_not_an_object_does_not_raise_and_writes_nothing(db, recorder_env, event):
    add_run(db, arn("odd"))
    before = all_runs(db)
    out = steps.handle_error(event, env=recorder_env)
    assert out["success"] is False and out["recorded"] is False and out["run_id"] is None
    assert isinstance(out["error"], str) and isinstance(out["message"], str)
    assert all_runs(db) == before


def test_a_database_that_cannot_be_reached_is_logged_and_raised_for_lambda_to_retry(db, recorder_env, caplog):
    """Asynchronous invocations are retried by Lambda, then go to the function's dead-letter queue (an alarm)."""
    from pagerduty_pipeline.step_error import StatusChangeNotRecorded

    add_run(db, arn("unreachable"))
    with pytest.raises(StatusChangeNotRecorded, match="ended TIMED_OUT; not recorded: cannot connect to PostgreSQL"):
        steps.handle_error(status_change("unreachable", "TIMED_OUT"), env={**recorder_env, "DB_PORT": "1"})
    assert "execution_ended" in caplog.text
    assert stored(db, "unreachable")[0][0] == "running"  # unchanged; a retry, or the next start, ends it


def test_the_handler_reports_its_duration_for_the_execution(db, recorder_env):
    add_run(db, arn("measured"))
    lines: list[str] = []
    with metrics.writing_to(lines.append):
        assert steps.handle_error(status_change("measured", "ABORTED"), env=recorder_env)["recorded"]
    (record,) = metrics.parse_lines("".join(lines))
    assert (record.name, record.unit, record.dimensions["Step"]) == ("StepDuration", "Milliseconds",
                                                                     "lambda_error_handler")
    assert record.properties["execution_id"] == arn("measured") and record.properties["run_id"] is not None


def test_the_error_recorder_may_end_a_run_and_do_nothing_else(pg, db):
    migrate(db)
    running = add_run(db, "e-running")
    add_run(db, "e-done", "succeeded")
    with login_as(pg, roles.ERROR_RECORDER) as recorder:
        assert runs.record_end(recorder, "e-running", "aborted", "States.Aborted", "stopped") == (running, True,
                                                                                                  "aborted")
        assert runs.record_end(recorder, "e-done", "failed", "x", "y")[1:] == (False, "succeeded")
        # only an ended status: the function refuses the rest
        with pytest.raises(Exception) as exc:
            recorder.run("SELECT * FROM pagerduty.record_run_ended('e-done', 'running', 'x', 'y')")
        assert exc.value.args[0]["C"] == "22023" and "failed, timed_out or aborted" in exc.value.args[0]["M"]
        with pytest.raises(ValueError, match="not 'succeeded'"):
            runs.record_end(recorder, "e-done", "succeeded", "x", "y")
        denied(recorder, "UPDATE pagerduty.pipeline_runs SET status = 'succeeded' WHERE run_id = :r", r=running)
        denied(recorder, "UPDATE pagerduty.pipeline_runs SET status = 'running'")
        denied(recorder, "DELETE FROM pagerduty.pipeline_runs")
        denied(recorder, "SELECT * FROM pagerduty.pipeline_runs")
        denied(recorder, "INSERT INTO pagerduty.pipeline_runs (execution_id) VALUES ('forged')")
        denied(recorder, "CREATE FUNCTION pagerduty.mine() RETURNS int LANGUAGE sql AS 'SELECT 1'")
    with login_as(pg, roles.LOADER) as loader:  # the steps have no use for it
        denied(loader, "SELECT * FROM pagerduty.record_run_ended('e-running', 'failed', 'x', 'y')")
    assert db.run("SELECT execution_id, status, error FROM pagerduty.pipeline_runs ORDER BY run_id") == [
        ["e-running", "aborted", "States.Aborted"], ["e-done", "succeeded", None]]
