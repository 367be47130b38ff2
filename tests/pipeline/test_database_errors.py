"""A database failure anywhere after a step has connected is a `db_error` result, never an exception
out of the Lambda (which the workflow would only see as an unhandled error)."""

from __future__ import annotations

from pagerduty_pipeline import steps
from tests.pipeline.conftest import envelope
from tests.pipeline.test_load import WEEK


def test_step1_database_error_while_reading_the_watermark(env, db, server, pg):
    assert steps.start_run(envelope(WEEK, name="first"), env=env)["success"]
    admin = pg.admin_connect()
    admin.run("DROP TABLE pagerduty.watermarks")  # migrations are recorded as done: nothing recreates it
    admin.close()
    r1 = steps.start_run(envelope({}, name="second"), env=env)  # no 'since': the watermark is read
    assert r1["success"] is False and r1["error"] == "db_error", r1
    assert "watermarks" in r1["message"]
    assert db.run("SELECT status, error FROM pagerduty.pipeline_runs WHERE execution_name = 'second'") == [
        ["failed", "db_error"]]
