"""Day 2 through the synthesized state machine: two executions at once, and an execution stopped by its timeout
(no Catch runs) that the next start reconciles."""

from __future__ import annotations

import threading
import time

from tests.support.lambda_runtime import Database, LocalWorkflow
from tests.workflow.conftest import BODY, HAPPY_PATH, TOKEN, failed_path, pipeline_runs
from tests.workflow.test_workflow import assert_whole

FAST = {"PAGERDUTY_RATE_LIMIT_PER_MINUTE": "1000000"}


def local(synthesized, pg, pagerduty, **kwargs) -> LocalWorkflow:
    env = {**FAST, **kwargs.pop("extra_env", {})}
    return LocalWorkflow(synthesized, db=Database.of(pg), pagerduty={"url": pagerduty.url, "token": TOKEN},
                         extra_env=env, **kwargs)


def test_two_executions_at_once_one_loads_the_other_is_refused_and_a_third_runs(synthesized, pg, db, pagerduty,
                                                                                   account):
    step1_calls: list[str] = []
    both_started = threading.Event()

    def count_step1(handler):
        def wrapped(event, context):
            step1_calls.append(event["execution_name"])
            if len(step1_calls) >= 2:
                both_started.set()
            return handler(event, context)
        return wrapped

    def still_loading_until_the_other_started(handler):
        """The holder's step 2 keeps reporting `complete: false` (a long load) until the other execution's step 1
        has run, so the two overlap whichever the interpreter schedules first."""
        def wrapped(event, context):
            for _ in range(400):
                if both_started.is_set():
                    return handler(event, context)
                time.sleep(0.05)
            raise TimeoutError("the second execution never reached step 1")
        return wrapped

    with local(synthesized, pg, pagerduty, wrap={"lambda_1": count_step1,
                                                  "lambda_2": still_loading_until_the_other_started}) as workflow:
        arns = [workflow.start(BODY, name) for name in ("morning", "overlap")]
        runs = [workflow.wait(arn, timeout=120) for arn in arns]
        third = workflow.execute(BODY, "third", timeout=120)
    statuses = sorted(run.status for run in runs)
    assert statuses == ["FAILED", "SUCCEEDED"], [(r.status, r.error, r.cause) for r in runs]
    won = next(run for run in runs if run.status == "SUCCEEDED")
    lost = next(run for run in runs if run.status == "FAILED")
    assert won.path == HAPPY_PATH
    assert lost.path == failed_path("FetchInitialData") and lost.error == "run_in_progress"
    assert won.execution_arn in lost.cause  # names the execution that holds the run
    assert third.status == "SUCCEEDED", (third.error, third.cause)
    rows = {row["execution_id"]: row for row in pipeline_runs(db)}
    assert (rows[won.execution_arn]["status"], rows[won.execution_arn]["error"]) == ("succeeded", None)
    assert (rows[lost.execution_arn]["status"], rows[lost.execution_arn]["error"]) == ("failed", "run_in_progress")
    assert rows[third.execution_arn]["status"] == "succeeded"
    assert_whole(db, account)


def test_an_execution_stopped_by_its_timeout_is_reconciled_and_the_next_run_loads_what_it_missed(
        synthesized, pg, db, pagerduty, account):
    def hangs_in_the_first_execution(handler):
        """Step 2 of the first execution is still waiting on PagerDuty when the execution's timeout stops it."""
        def wrapped(event, context):
            if event["execution_name"] == "stopped":
                time.sleep(7)
                return {**event["input"], "success": True, "complete": False}
            return handler(event, context)
        return wrapped

    # the synthesized definition with its timeout cut from 45 minutes to 6 s (and every step told so)
    with local(synthesized, pg, pagerduty, execution_timeout=6, wrap={"lambda_2": hangs_in_the_first_execution},
               extra_env={"PIPELINE_EXECUTION_RESERVE_SECONDS": "0"}) as workflow:
        stopped = workflow.execute(BODY, "stopped", timeout=60)
        assert stopped.status == "TIMED_OUT"
        (row,) = pipeline_runs(db)
        assert row["status"] == "running"  # no Catch sees an execution timeout
        assert db.run("SELECT count(*) FROM pagerduty.incidents")[0][0] == 0
        time.sleep(1.5)  # the hanging invocation ends (a Lambda outlives its execution)
        nxt = workflow.execute(BODY, "next", timeout=60)
    assert nxt.status == "SUCCEEDED", (nxt.error, nxt.cause)
    rows = {row["execution_id"]: row for row in pipeline_runs(db)}
    assert (rows[stopped.execution_arn]["status"], rows[stopped.execution_arn]["error"]) == ("timed_out", "reconciled")
    assert "TIMED_OUT" in rows[stopped.execution_arn]["message"]  # read from Step Functions, not guessed
    first_step = nxt.invocations[0].result
    assert first_step["reconciled"] == [{"run_id": row["run_id"], "execution_id": stopped.execution_arn,
                                         "status": "timed_out"}]
    assert rows[nxt.execution_arn]["status"] == "succeeded"
    assert_whole(db, account)


def test_a_window_longer_than_the_execution_can_load_ends_partial_not_timed_out(synthesized, pg, db, pagerduty,
                                                                                account):
    """A slow PagerDuty (1 s a log entry page) and a state machine timeout cut to 10 s with 4 s kept for step 3:
    the week cannot load in one execution. Step 2 sees the deadline coming, the execution SUCCEEDS with the run
    `partial` and coverage up to what committed, and the next execution loads the rest."""
    pagerduty.inject_delay(1.0, count=None, path="/log_entries")
    with local(synthesized, pg, pagerduty, execution_timeout=10,
               extra_env={"PIPELINE_EXECUTION_RESERVE_SECONDS": "4"}) as workflow:
        first = workflow.execute(BODY, "first", timeout=60)
        assert first.status == "SUCCEEDED", (first.status, first.error, first.cause)
        assert first.output["partial"] is True
        covered = first.output["coverage"]["intervals"]
        assert len(covered) == 1 and covered[0][0] == "2024-03-01T00:00:00Z" and covered[0][1] < "2024-03-08T00:00:00Z"
        (row,) = pipeline_runs(db)
        assert row["status"] == "partial"
        pagerduty.clear_faults()
        rest = workflow.execute('{"until": "2024-03-08T00:00:00Z"}', "rest", timeout=60)
    assert rest.status == "SUCCEEDED", (rest.error, rest.cause)
    assert rest.output["partial"] is False
    assert rest.output["coverage"]["intervals"] == [["2024-03-01T00:00:00Z", "2024-03-08T00:00:00Z"]]
    assert_whole(db, account)
