"""Step 3's checks: each compares the loaded rows with the API's totals or another source than the one the
rows came from, so each can fail; here each one does, on data corrupted behind the pipeline's back."""

from __future__ import annotations

import pytest

from pagerduty_pipeline import steps
from pagerduty_pipeline.checks import CHECKS
from tests.pipeline.conftest import count, envelope
from tests.pipeline.test_load import WEEK

# an incident resolved in the sample account (its latest status log entry is a resolve entry)
RESOLVED = "SELECT id FROM pagerduty.incidents WHERE status = 'resolved' ORDER BY incident_number LIMIT 1"

CORRUPTIONS = {
    "incident_count_matches_api": [f"UPDATE pagerduty.incidents SET created_at = created_at - interval '30 days' "
                                   f"WHERE id = ({RESOLVED})"],
    "log_entry_count_matches_api": ["DELETE FROM pagerduty.log_entries WHERE id = (SELECT id FROM "
                                    "pagerduty.log_entries WHERE type = 'notify_log_entry' ORDER BY id LIMIT 1)"],
    "incidents_have_trigger_entry": [f"UPDATE pagerduty.log_entries SET type = 'notify_log_entry' "
                                     f"WHERE type = 'trigger_log_entry' AND incident_id = ({RESOLVED})"],
    "status_matches_latest_log_entry": [f"UPDATE pagerduty.incidents SET status = 'acknowledged' "
                                        f"WHERE id = ({RESOLVED})"],
    "references_present": ["UPDATE pagerduty.log_entries SET agent_id = 'PNOSUCHUSER' WHERE id = (SELECT id FROM "
                           "pagerduty.log_entries WHERE agent_type = 'user_reference' ORDER BY id LIMIT 1)"],
}


def loaded(env, name: str) -> dict:
    r1 = steps.start_run(envelope(WEEK, name=name), env=env)
    r2 = steps.load_incidents(envelope(r1, name=name), env=env)
    assert r2["success"] and r2["complete"], r2
    return r2


def test_every_check_is_covered_here():
    assert {c.name for c in CHECKS} == set(CORRUPTIONS) | {"data_rules"}


@pytest.mark.parametrize("check", sorted(CORRUPTIONS))
def test_a_blocking_check_fails_on_corrupted_data_and_blocks_coverage(env, db, server, check):
    r2 = loaded(env, f"corrupt-{check}")
    for sql in CORRUPTIONS[check]:
        db.run(sql)
    r3 = steps.validate_run(envelope(r2, name=f"corrupt-{check}"), env=env)
    assert r3["success"] is False and r3["error"] == "validation_failed", r3
    assert r3["failed_checks"] == [check], r3["failed_checks"]  # exactly the check the corruption breaks
    (row,) = db.run("SELECT passed, blocking, severity, failures, details FROM pagerduty.validation_results "
                    "WHERE check_name = :c", c=check)
    assert row[:3] == [False, True, "error"] and row[3] >= 1 and row[4]["compares"]
    assert count(db, "watermarks") == 0 and count(db, "coverage") == 0
    assert db.run("SELECT status, error FROM pagerduty.pipeline_runs")[0] == ["failed", "validation_failed"]


def test_each_check_passes_on_the_loaded_week(env, db, server):
    r3 = steps.validate_run(envelope(loaded(env, "clean"), name="clean"), env=env)
    assert r3["success"], r3
    assert set(r3["checks"]) == {c.name for c in CHECKS} and all(r3["checks"].values())
    figures = {r[0]: r[1] for r in db.run("SELECT check_name, details FROM pagerduty.validation_results")}
    assert figures["incident_count_matches_api"]["api_total"] == len(server.account.incidents)
    assert figures["log_entry_count_matches_api"]["api_total"] == len(server.account.log_entries)
    assert figures["references_present"]["stubs"] >= 0 and figures["references_present"]["referenced"] > 0


def test_a_broken_data_rule_warns_lists_the_record_and_does_not_block(env, db, server):
    r2 = loaded(env, "odd")
    (odd,) = db.run(f"UPDATE pagerduty.incidents SET title = NULL WHERE id = ({RESOLVED}) RETURNING id")[0]
    r3 = steps.validate_run(envelope(r2, name="odd"), env=env)
    assert r3["success"] is True and r3["warnings"] == ["data_rules"] and r3["failed_checks"] == []
    (row,) = db.run("SELECT passed, blocking, severity, failures, details FROM pagerduty.validation_results "
                    "WHERE check_name = 'data_rules'")
    assert row[:4] == [False, False, "warn", 1]
    assert row[4]["records"] == [{"id": odd, "reason": "title is null"}]
    assert db.run("SELECT status FROM pagerduty.pipeline_runs")[0] == ["succeeded"]


def test_incomplete_load_is_refused(env, db, server):
    r2 = loaded(env, "incomplete")
    out = steps.validate_run(envelope({**r2, "complete": False}, name="incomplete"), env=env)
    assert out["success"] is False and out["error"] == "incomplete_load"
