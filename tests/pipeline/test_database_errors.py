"""A database failure anywhere after a step has connected is a `db_error` result, never an exception
out of the Lambda (which the workflow would only see as an unhandled error)."""

from __future__ import annotations

import pytest

from pagerduty_pipeline import steps
from pagerduty_pipeline.db import PgError
from tests.pipeline.conftest import envelope, run_pipeline
from tests.pipeline.test_load import WEEK


def test_step1_database_error_while_reading_the_watermark(env, db, server, pg):
    assert run_pipeline(env, WEEK, name="first")["step3"]["success"]
    admin = pg.admin_connect()
    admin.run("DROP TABLE pagerduty.watermarks")  # migrations are recorded as done: nothing recreates it
    admin.close()
    r1 = steps.start_run(envelope({}, name="second"), env=env)  # no 'since': the watermark is read
    assert r1["success"] is False and r1["error"] == "db_error", r1
    assert "watermarks" in r1["message"]
    assert db.run("SELECT status, error FROM pagerduty.pipeline_runs WHERE execution_name = 'second'") == [
        ["failed", "db_error"]]


def test_a_rolled_back_batch_leaves_no_reference_believed_written(db):
    """The escalation policy of a new service is inserted inside the batch's transaction; when that
    transaction rolls back, the loader must not remember the policy as stored."""
    from pagerduty_pipeline.loaders import Loader
    from pagerduty_pipeline.migrations import migrate

    migrate(db)
    loader = Loader(db)
    policy = {"id": "PEPNEW1", "type": "escalation_policy", "name": "Night shift"}
    service = {"id": "PSVNEW1", "type": "service", "name": "Billing", "escalation_policy": policy}

    def incident(number):
        return {"id": f"PINC{number}", "incident_number": number, "title": "t", "status": "triggered",
                "urgency": "high", "service": service, "escalation_policy": policy,
                "created_at": "2024-03-01T00:00:00Z", "updated_at": "2024-03-01T00:00:00Z"}

    broken = {**incident(1), "incident_number": "not a number"}  # the INSERT fails: the batch rolls back
    with pytest.raises(PgError):
        loader.write_batch([broken])
    assert db.run("SELECT count(*) FROM pagerduty.escalation_policies")[0][0] == 0
    assert loader.write_batch([incident(2)])["incidents_written"] == 1
    assert db.run("SELECT id, is_stub FROM pagerduty.escalation_policies") == [["PEPNEW1", False]]
