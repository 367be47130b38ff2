"""Step 1 input validation and environment/secret handling: failures name the key or variable and
write nothing but the run record."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import boto3
import pytest

from pagerduty_pipeline import steps
from tests.pipeline.conftest import DATA_TABLES, count, envelope

UTC = timezone.utc
FUTURE = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")

BAD_INPUTS = [
    ({"sincee": "2024-03-01T00:00:00Z"}, "unknown_key", "sincee"),
    ({"since": "2024-03-01T00:00:00Z", "extra": 1}, "unknown_key", "extra"),
    ({"since": 1709251200}, "invalid_type", "since"),
    ({"until": ["2024-03-01"]}, "invalid_type", "until"),
    ({"service_ids": "PABC123"}, "invalid_type", "service_ids"),
    ({"team_ids": [1, 2]}, "invalid_type", "team_ids"),
    ({"service_ids": ["not an id!"]}, "invalid_value", "service_ids"),
    ({"urgencies": "high"}, "invalid_type", "urgencies"),
    ({"urgencies": ["medium"]}, "invalid_value", "urgencies"),
    ({"since": "yesterday"}, "invalid_date", "since"),
    ({"since": "2024-02-30T00:00:00Z"}, "invalid_date", "since"),
    ({"since": "2024-03-01T00:00:00"}, "invalid_date", "since"),  # no time zone
    ({"since": "2024-03-05T00:00:00Z", "until": "2024-03-01T00:00:00Z"}, "reversed_window", "since"),
    ({"since": "2024-03-01T00:00:00Z", "until": "2024-03-01T00:00:00Z"}, "reversed_window", "since"),
    ({"since": FUTURE}, "future_window", "since"),
    ({"since": "2024-03-01T00:00:00Z", "until": FUTURE}, "future_window", "until"),
    ({"since": "2020-01-01T00:00:00Z", "until": "2024-03-01T00:00:00Z"}, "window_too_long", "since"),
    ({"since": "2019-01-01T00:00:00Z"}, "window_too_long", "since"),  # until defaults to now: same bound
    (["since", "until"], "invalid_input", "object"),
    ("since=2024-03-01", "invalid_input", "object"),
    (42, "invalid_input", "object"),
]


@pytest.mark.parametrize("inp,code,key", BAD_INPUTS, ids=[f"{c}-{k}-{i}" for i, (_, c, k) in enumerate(BAD_INPUTS)])
def test_bad_input_fails_naming_the_key_and_writes_only_the_run(env, db, server, inp, code, key):
    r = steps.start_run(envelope(inp), env=env)
    assert r["success"] is False
    assert r["error"] == code
    assert key in r["message"]
    assert isinstance(r["run_id"], int)
    if code != "invalid_input":
        assert r["key"] == key
    runs = db.run("SELECT status, step, error, message, input FROM pagerduty.pipeline_runs")
    assert len(runs) == 1 and runs[0][:3] == ["failed", "lambda_1", code] and key in runs[0][3]
    assert runs[0][4] == inp
    for table in DATA_TABLES:
        assert count(db, table) == 0, table
    assert count(db, "validation_results") == 0 and count(db, "watermarks") == 0
    assert server.requests == []  # PagerDuty not even asked


def test_missing_or_bad_environment_names_the_variable(env, db, server):
    for var in ("DB_HOST", "DB_NAME", "DB_SECRET_ARN", "PAGERDUTY_TOKEN_SECRET_ARN"):
        bad = {k: v for k, v in env.items() if k != var}
        r = steps.start_run(envelope({}), env=bad)
        assert r["success"] is False and r["error"] == "config_error" and var in r["message"], var
        assert r["variable"] == var
    for var, value in (("DB_PORT", "fivefourthreetwo"), ("DB_SSL", "prefer"), ("PAGERDUTY_API_URL", "ftp://x"),
                       ("PAGERDUTY_RATE_LIMIT_PER_MINUTE", "-1"), ("PAGERDUTY_MAX_IN_FLIGHT", "0"),
                       ("PAGERDUTY_MAX_IN_FLIGHT", "64"), ("PIPELINE_ALERTS", "some")):
        r = steps.start_run(envelope({}), env={**env, var: value})
        assert r["success"] is False and var in r["message"] and r["variable"] == var, var
    no_bundle = {k: v for k, v in env.items() if k != "DB_SSL_ROOT_CERT"}
    r = steps.start_run(envelope({}), env={**no_bundle, "DB_SSL": "verify-full"})
    assert r["success"] is False and "DB_SSL_ROOT_CERT" in r["message"]
    for fn in (steps.load_incidents, steps.validate_run):
        r = fn(envelope({"run_id": 1, "window": {"since": "a", "until": "b"}}), env={})
        assert r["success"] is False and r["error"] == "config_error" and "DB_HOST" in r["message"]


def test_envelope_is_required(env, db):
    r = steps.start_run({"since": "2024-03-01T00:00:00Z"}, env=env)
    assert r["success"] is False and r["error"] == "invalid_envelope"


def test_plain_string_token_secret_and_bad_db_secret(env, db, server, secrets_arns):
    r = steps.start_run(envelope({"since": "2024-03-01T00:00:00Z", "until": "2024-03-02T00:00:00Z"}),
                        env={**env, "PAGERDUTY_TOKEN_SECRET_ARN": secrets_arns["token_plain"]})
    assert r["success"], r
    sm = boto3.client("secretsmanager")
    bad = sm.create_secret(Name=f"bad-db-{id(r)}", SecretString=json.dumps({"user": "x"}))["ARN"]
    r = steps.start_run(envelope({}, name="x2"), env={**env, "DB_SECRET_ARN": bad})
    assert r["success"] is False and r["error"] == "secret_error" and "DB_SECRET_ARN" in r["message"]
    r = steps.start_run(envelope({}, name="x3"), env={**env, "DB_SECRET_ARN": "arn:aws:secretsmanager:eu-west-2:"
                                                      "123456789012:secret:nope"})
    assert r["success"] is False and r["error"] == "secret_error" and "ResourceNotFoundException" in r["message"]


def end_the_running_run(db) -> None:
    """Let the next start claim a run: the one step 1 left running ends as steps 2 and 3 would end it."""
    db.run("UPDATE pagerduty.pipeline_runs SET status = 'succeeded', finished_at = now() WHERE status = 'running'")


def working_hours(db) -> list:
    return db.run("SELECT working_days, day_starts::text, day_ends::text, default_time_zone, updated_at "
                  "FROM analytics.working_hours")


def test_step1_writes_the_working_hours_setting_and_refuses_a_bad_one_changing_nothing(env, db, server):
    """ANALYTICS_WORKING_HOURS (the stack's analytics setting) lands in analytics.working_hours on every run; the
    same value again changes nothing; a value the database cannot use fails step 1 with config_error and leaves the
    setting as it was."""
    inp = {"since": "2024-03-01T00:00:00Z", "until": "2024-03-02T00:00:00Z"}
    hours = '{"working_days":[1,2,3,4],"day_starts":"08:30","day_ends":"18:00","default_time_zone":"Asia/Tokyo"}'
    r = steps.start_run(envelope(inp, name="wh-1"), env={**env, "ANALYTICS_WORKING_HOURS": hours})
    assert r["success"], r
    written = working_hours(db)
    assert [row[:4] for row in written] == [[[1, 2, 3, 4], "08:30:00", "18:00:00", "Asia/Tokyo"]]
    end_the_running_run(db)
    assert steps.start_run(envelope(inp, name="wh-2"), env={**env, "ANALYTICS_WORKING_HOURS": hours})["success"]
    assert working_hours(db) == written  # not rewritten: updated_at kept
    end_the_running_run(db)
    for bad, fragment in (('{"default_time_zone":"Mars/Olympus_Mons"}', "not a time zone this PostgreSQL knows"),
                          ('{"day_starts":"18:00","day_ends":"08:00"}', "day_starts must be earlier than day_ends"),
                          ('{"working_days":[0]}', "ISO weekdays"), ("not json", "is not JSON")):
        r = steps.start_run(envelope(inp, name=f"wh-bad-{len(bad)}"), env={**env, "ANALYTICS_WORKING_HOURS": bad})
        assert r["success"] is False and r["error"] == "config_error", r
        assert fragment in r["message"] and "ANALYTICS_WORKING_HOURS" in r["message"], r
        assert working_hours(db) == written


def test_wrong_db_password_is_a_clear_error(env, db, server, secrets_arns):
    sm = boto3.client("secretsmanager")
    arn = sm.create_secret(Name="wrong-pw", SecretString=json.dumps({"username": "pipeline", "password": "nope"}))[
        "ARN"]
    r = steps.start_run(envelope({}), env={**env, "DB_SECRET_ARN": arn})
    assert r["success"] is False and r["error"] == "db_unavailable"
    assert "password authentication failed" in r["message"] and "nope" not in r["message"]


def test_step1_retry_reuses_the_run(env, db, server):
    inp = {"since": "2024-03-01T00:00:00Z", "until": "2024-03-02T00:00:00Z"}
    a = steps.start_run(envelope(inp, name="same"), env=env)
    b = steps.start_run(envelope(inp, name="same"), env=env)
    assert a["success"] and b["success"] and a["run_id"] == b["run_id"]
    assert count(db, "pipeline_runs") == 1


def test_a_connection_without_tls_is_refused_by_the_server(env, db, server):
    """The throwaway server, like RDS with rds.force_ssl=1, accepts TCP logins only over TLS."""
    r = steps.start_run(envelope({}), env={**env, "DB_SSL": "disable"})
    assert r["success"] is False and r["error"] == "db_tls"
    assert "only over TLS" in r["message"] and "no encryption" in r["message"] and env["DB_HOST"] in r["message"]
