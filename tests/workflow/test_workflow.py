"""Issue 4: the synthesized workflow, run for real on one machine (see conftest.py for the harness)."""

from __future__ import annotations

import json

import pytest

from tests.support.pipeline import kept_alerts
from tests.workflow.conftest import (
    BODY, HAPPY_PATH, STEP_STATES, failed_path, pipeline_runs, row_counts,
)


def expected_rows(account) -> dict[str, int]:
    return {"incidents": len(account.incidents), "log_entries": len(account.log_entries),
            "notes": sum(map(len, account.notes.values())), "alerts": sum(map(len, kept_alerts(account).values())),
            "services": len(account.services), "teams": len(account.teams),
            "escalation_policies": len(account.escalation_policies), "priorities": len(account.priorities)}


def assert_whole(db, account) -> None:
    counts = row_counts(db)
    assert {k: counts[k] for k in expected_rows(account)} == expected_rows(account)
    assert counts["users"] == len(account.users) + 1  # + the deleted user still referenced (a stub)


def assert_recorded_failure(db, outcome, state: str, error: str) -> dict:
    """The error handler got the failed step's name and recorded the failure on the run."""
    (handled,) = outcome.results("lambda_error_handler")
    assert handled["failed_step"] == state and handled["error"] == error
    (call,) = outcome.lambdas.calls(outcome.workflow.function_arns["lambda_error_handler"])
    assert call.event["input"]["failed_step"] == state
    assert call.event["state_name"] == "HandleError"
    assert outcome.run.status == "FAILED" and outcome.run.error == error
    assert outcome.run.cause == handled["message"] and handled["message"].startswith(f"{state}: ")
    if handled["run_id"] is not None:
        assert handled["recorded"] is True
        (row,) = pipeline_runs(db)
        assert (row["status"], row["step"], row["error"], row["message"]) == (
            "failed", state, error, handled["message"].removeprefix(f"{state}: "))
        assert row["execution_id"] == outcome.run.execution_arn
    return handled


def test_the_definition_is_the_synthesized_one(synthesized):
    arns = {folder: f"arn:aws:lambda:eu-west-2:123456789012:function:{folder}" for folder in synthesized.functions}
    definition = json.loads(synthesized.definition(arns))
    on_disk = json.loads((synthesized.stack_dir / "state-machine.asl.json").read_text())
    tasks = {name for name, state in definition["States"].items() if state["Type"] == "Task"}
    assert {definition["States"][t]["Parameters"]["FunctionName"] for t in tasks} == set(arns.values())
    for name in tasks:  # the same states as the asl file beside it, only the function ARNs differ
        on_disk["States"][name]["Parameters"]["FunctionName"] = definition["States"][name]["Parameters"]["FunctionName"]
    assert definition == on_disk
    assert synthesized.request_parameters["Input"] == "$request.body"
    assert synthesized.execution_input(b'{"since": "x"}') == '{"since": "x"}'


def test_happy_path_succeeds_records_checks_and_moves_the_watermark(run_workflow, db, account, pagerduty):
    outcome = run_workflow()
    run = outcome.run
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    assert run.path == HAPPY_PATH
    assert all(state.exited is not None and state.seconds >= 0 for state in run.states)
    assert [call.function.rsplit("-", 1)[1] for call in run.invocations] == ["lambda_1", "lambda_2", "lambda_3"]
    first = run.invocations[0].event  # the Lambda task's Payload envelope around the request body
    assert first["input"] == json.loads(BODY) and first["state_name"] == "FetchInitialData"
    assert first["execution_id"] == run.execution_arn and first["execution_name"] == run.execution_arn.split(":")[-1]
    assert run.output["success"] is True and run.output["failed_checks"] == []
    assert_whole(db, account)
    (row,) = pipeline_runs(db)
    assert (row["status"], row["error"], row["execution_id"]) == ("succeeded", None, run.execution_arn)
    checks = db.run("SELECT check_name, passed FROM pagerduty.validation_results WHERE run_id = :r", r=row["run_id"])
    assert checks and dict(checks) == run.output["checks"] and all(passed for _, passed in checks)
    (watermark,) = db.run("SELECT to_char(watermark AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), run_id "
                          "FROM pagerduty.watermarks WHERE scope = 'all'")
    assert watermark == ["2024-03-08T00:00:00Z", row["run_id"]] and run.output["watermark"] == watermark[0]
    assert pagerduty.request_count() > 0
    assert not outcome.lambdas.calls(outcome.workflow.function_arns["lambda_error_handler"])


# -- success: false, each step, failing for real --------------------------------------------------------
# Each breaks the run for one step and returns the run_workflow arguments that go with it.
def _step1_unauthorized(pagerduty, pg) -> dict:
    pagerduty.inject(401, count=1, path="/teams")
    return {}


def _step2_unauthorized(pagerduty, pg) -> dict:
    pagerduty.inject(401, count=1, path="/log_entries")  # step 1 never asks for log entries
    return {}


def _step3_finds_bad_data(pagerduty, pg) -> dict:
    """Before the real step 3 runs, a resolved incident is set back to acknowledged behind the pipeline's back: its
    latest status log entry (a resolve) disagrees, and the blocking status check catches it."""
    def breaking(real):
        def handler(event, context):
            conn = pg.connect()
            try:
                conn.run("UPDATE pagerduty.incidents SET status = 'acknowledged' WHERE id = "
                         "(SELECT min(id) FROM pagerduty.incidents WHERE status = 'resolved')")
            finally:
                conn.close()
            return real(event, context)
        return handler

    return {"wrap": {"lambda_3": breaking}}


@pytest.mark.parametrize(("folder", "break_it", "error"), [
    ("lambda_1", _step1_unauthorized, "pagerduty_unauthorized"),
    ("lambda_2", _step2_unauthorized, "pagerduty_unauthorized"),
    ("lambda_3", _step3_finds_bad_data, "validation_failed"),
], ids=["step1", "step2", "step3"])
def test_a_step_reporting_failure_goes_to_the_error_handler(run_workflow, db, pagerduty, pg, folder, break_it,
                                                             error):
    state = STEP_STATES[folder]
    outcome = run_workflow(**break_it(pagerduty, pg))
    assert outcome.run.path == failed_path(state)
    (result,) = outcome.results(folder)
    assert result["success"] is False and result["error"] == error
    handled = assert_recorded_failure(db, outcome, state, error)
    assert handled["message"] == f"{state}: {result['message']}"
    assert db.run("SELECT count(*) FROM pagerduty.watermarks")[0][0] == 0
    if folder == "lambda_3":
        assert result["failed_checks"] == ["status_matches_latest_log_entry"]
        failed = db.run("SELECT check_name FROM pagerduty.validation_results WHERE NOT passed AND blocking")
        assert failed == [["status_matches_latest_log_entry"]]


@pytest.mark.parametrize("folder", ["lambda_1", "lambda_2", "lambda_3"])
def test_a_step_returning_no_success_goes_to_the_error_handler(run_workflow, db, folder):
    def without_success(real):
        def handler(event, context):
            result = real(event, context)
            result.pop("success")
            return result
        return handler

    state = STEP_STATES[folder]
    outcome = run_workflow(wrap={folder: without_success})
    assert outcome.run.path == failed_path(state)
    assert "success" not in outcome.results(folder)[0]
    handled = assert_recorded_failure(db, outcome, state, "missing_success")
    assert handled["run_id"] is not None
    # the real step 3 moved the watermark before the wrapper dropped `success` from its result
    assert db.run("SELECT count(*) FROM pagerduty.watermarks")[0][0] == (folder == "lambda_3")


def test_a_step_raising_is_caught_and_recorded(run_workflow, db):
    def raising(real):
        def handler(event, context):
            raise RuntimeError("disk on fire")
        return handler

    outcome = run_workflow(wrap={"lambda_2": raising})
    # a function error (not a service error) is not retried: one attempt, straight to the catch
    assert outcome.run.path == HAPPY_PATH[:2] + ["FetchIncidents", "FetchIncidentsFailed", "HandleError",
                                                 "PipelineFailed"]
    assert len(outcome.lambdas.calls(outcome.workflow.function_arns["lambda_2"])) == 1
    assert outcome.lambdas.retry_waits == []
    handled = assert_recorded_failure(db, outcome, "FetchIncidents", "RuntimeError")
    assert handled["message"] == "FetchIncidents: RuntimeError: disk on fire"


# -- Lambda service errors: the definition's Retry, then its Catch ------------------------------------
def retrier(synthesized, state: str) -> dict:
    arns = {folder: f"arn:aws:lambda:eu-west-2:123456789012:function:{folder}" for folder in synthesized.functions}
    (retry,) = json.loads(synthesized.definition(arns))["States"][state]["Retry"]
    return retry


@pytest.mark.parametrize("error", ["TooManyRequestsException", "ServiceException"])
def test_service_errors_are_retried_as_configured_then_caught(run_workflow, db, synthesized, error):
    retry = retrier(synthesized, "FetchInitialData")
    assert f"Lambda.{error}" in retry["ErrorEquals"]
    attempts = 1 + retry["MaxAttempts"]
    outcome = run_workflow(prepare=lambda wf: wf.lambdas.fail_next(wf.function_arns["lambda_1"], error,
                                                                  times=attempts + 5))
    assert len(outcome.lambdas.service_errors) == attempts  # then no more attempts: caught
    assert outcome.run.path == ["FetchInitialData", "FetchInitialDataFailed", "HandleError", "PipelineFailed"]
    waits = outcome.lambdas.retry_waits
    assert len(waits) == retry["MaxAttempts"]
    for n, wait in enumerate(waits):  # FULL jitter: uniform between 0 and IntervalSeconds * BackoffRate^n
        assert 0 <= wait <= retry["IntervalSeconds"] * retry["BackoffRate"] ** n
    handled = assert_recorded_failure(db, outcome, "FetchInitialData", f"Lambda.{error}")
    assert handled["run_id"] is None and handled["recorded"] is False  # step 1 never ran: no run to mark
    assert db.run("SELECT to_regclass('pagerduty.pipeline_runs')") == [[None]]  # nor a schema


def test_throttling_within_the_retries_is_survived(run_workflow, db, account, synthesized):
    retry = retrier(synthesized, "FetchIncidents")
    throttles = retry["MaxAttempts"]  # the last allowed retry succeeds
    outcome = run_workflow(prepare=lambda wf: wf.lambdas.fail_next(wf.function_arns["lambda_2"], times=throttles))
    assert outcome.run.status == "SUCCEEDED" and outcome.run.path == HAPPY_PATH
    assert len(outcome.lambdas.service_errors) == throttles and len(outcome.lambdas.retry_waits) == throttles
    assert len(outcome.results("lambda_2")) == 1
    assert_whole(db, account)


# -- step 2 out of time: the Choice loops it until complete -------------------------------------------
def test_step2_out_of_time_loops_until_complete_and_the_data_is_whole(run_workflow, db, account, pagerduty):
    # 3 s of Lambda time with a 1.5 s margin: each invocation has ~1.5 s, less its setup (which must stay well
    # under that even on a loaded machine, or step 2 rightly fails with no_progress). The log entry pages are
    # slowed (0.8 s each; the sample has 4 pages, so ≥ 3.2 s in all) so that the load needs several invocations
    # whatever the machine's speed.
    pagerduty.inject_delay(0.8, count=20, path="/log_entries")
    outcome = run_workflow(timeouts={"lambda_2": 3.0}, extra_env={"PIPELINE_TIME_MARGIN_MS": "1500"})
    run = outcome.run
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    results = outcome.results("lambda_2")
    loops = len(results)
    assert loops > 1
    assert run.path == HAPPY_PATH[:2] + ["FetchIncidents", "CheckFetchIncidents"] * loops + HAPPY_PATH[4:]
    assert [r["complete"] for r in results] == [False] * (loops - 1) + [True]
    assert all(r["cursor"] for r in results[:-1]) and results[-1]["cursor"] is None
    assert [r["invocations"] for r in results] == list(range(1, loops + 1))
    assert_whole(db, account)
    assert run.output["failed_checks"] == [] and all(run.output["checks"].values())


# -- a bad request body --------------------------------------------------------------------------------
@pytest.mark.parametrize(("body", "error", "key"), [
    ('{"since": "2024-03-01T00:00:00Z", "servce_ids": ["PABC123"]}', "unknown_key", "servce_ids"),
    ('{"since": "last tuesday"}', "invalid_date", "since"),
    ('{"since": "2024-03-08T00:00:00Z", "until": "2024-03-01T00:00:00Z"}', "reversed_window", "since"),
    ('["2024-03-01T00:00:00Z"]', "invalid_input", None),
], ids=["unknown-key", "bad-date", "reversed", "not-an-object"])
def test_a_bad_request_body_fails_in_step1_and_loads_nothing(run_workflow, db, pagerduty, body, error, key):
    outcome = run_workflow(body)
    assert outcome.run.path == failed_path("FetchInitialData")
    (result,) = outcome.results("lambda_1")
    assert result["success"] is False and result["error"] == error and result.get("key") == key
    if key:
        assert f"'{key}'" in result["message"] or key in result["message"]
    assert_recorded_failure(db, outcome, "FetchInitialData", error)
    assert key is None or key in outcome.run.cause
    assert not any(row_counts(db).values())
    assert pagerduty.request_count() == 0
    assert not outcome.lambdas.calls(outcome.workflow.function_arns["lambda_2"])


def test_the_functions_use_the_deployed_roles_so_a_missing_grant_fails(run_workflow, db, pagerduty):
    """Steps 2 and 3 log in as pagerduty_loader and the error handler as pagerduty_error_recorder, as in AWS (with
    passwords standing in for IAM tokens): a grant the migrations give is what lets a step work."""
    first = run_workflow(BODY)
    assert first.run.status == "SUCCEEDED", first.run.cause
    users = {folder: env.get("DB_USER") for folder, env in first.workflow.environments.items()}
    assert users == {"lambda_1": None, "lambda_2": "pagerduty_loader", "lambda_3": "pagerduty_loader",
                     "lambda_error_handler": "pagerduty_error_recorder"}
    db.run("REVOKE INSERT ON pagerduty.log_entries FROM pagerduty_loader")  # as if migration 4 had missed it
    second = run_workflow(json.dumps({"since": "2024-03-02T00:00:00Z", "until": "2024-03-03T00:00:00Z"}))
    assert second.run.path == failed_path("FetchIncidents")
    (result,) = second.results("lambda_2")
    assert result["error"] == "db_error" and "permission denied for table log_entries" in result["message"]
    (handled,) = second.results("lambda_error_handler")
    assert handled["recorded"] is True  # the error handler's role may record it, and only that
    status = db.run("SELECT status, step FROM pagerduty.pipeline_runs WHERE execution_id = :e",
                    e=second.run.execution_arn)
    assert status == [["failed", "FetchIncidents"]]
