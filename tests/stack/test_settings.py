"""Bad settings stop the synth with the field and the rule named, and write nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modules.settings import Settings, load_settings, settings_for
from tests.support.synth import ROOT, only, run_main

GOOD_BACKEND = json.loads((ROOT / "backend.tf.json").read_text())


def synth_with(tmp_path: Path, environments: object, backend: object = GOOD_BACKEND) -> tuple[int, str, Path]:
    settings_file, backend_file, outdir = tmp_path / "environments.json", tmp_path / "backend.tf.json", tmp_path / "out"
    settings_file.write_text(environments if isinstance(environments, str) else json.dumps(environments))
    backend_file.write_text(json.dumps(backend))
    completed = run_main("--settings", str(settings_file), "--backend", str(backend_file), "--outdir", str(outdir))
    return completed.returncode, completed.stderr, outdir


BAD_SETTINGS = [
    pytest.param({"dev": {"databse": {}}}, ["dev.databse", "unknown setting"], id="unknown-top-level-key"),
    pytest.param({"dev": {"database": {"engine": "mysql"}}}, ["dev.database.engine", "unknown setting"],
                 id="unknown-nested-key"),
    pytest.param({"dev": {"network": {"vpc_id": "vpc-12"}}}, ["dev.network.vpc_id", "'vpc-12' does not match"],
                 id="malformed-vpc-id"),
    pytest.param({"dev": {"network": {"private_subnet_ids": ["subnet-0e2842b86fa358d19", "sub-123"]}}},
                 ["dev.network.private_subnet_ids.1", "'sub-123' does not match"], id="malformed-subnet-id"),
    pytest.param({"dev": {"network": {"private_subnet_ids": ["subnet-0e2842b86fa358d19"]}}},
                 ["dev.network.private_subnet_ids", "at least two private subnets", "got 1"], id="one-subnet"),
    pytest.param({"dev": {"network": {"private_subnet_ids": ["subnet-0e2842b86fa358d19"] * 2}}},
                 ["dev.network.private_subnet_ids", "distinct"], id="repeated-subnet"),
    pytest.param({"dev": {"database": {"allocated_storage_gb": 40, "max_allocated_storage_gb": 30}}},
                 ["dev.database", "max_allocated_storage_gb (30) must be at least allocated_storage_gb (40)"],
                 id="max-storage-below-allocated"),
    pytest.param({"dev": {"api": {"authorization": "OPEN"}}},
                 ["dev.api.authorization", "'AWS_IAM', 'JWT' or 'NONE'"], id="unknown-auth-mode"),
    pytest.param({"dev": {"api": {"authorization": "JWT"}}}, ["dev.api", "needs jwt_issuer"], id="jwt-without-issuer"),
    pytest.param({"dev": {"api": {"jwt_issuer": "https://issuer.example.com"}}},
                 ["dev.api", "only used with authorization JWT"], id="jwt-issuer-without-jwt"),
    pytest.param({"dev": {"region": "London"}}, ["dev.region", "'London' does not match"], id="bad-region"),
    pytest.param({"dev": {"log_retention_days": 10}}, ["dev.log_retention_days", "CloudWatch Logs accepts only"],
                 id="bad-log-retention"),
    pytest.param({"dev": {"functions": {"timeout_seconds": 1200}}},
                 ["dev.functions.timeout_seconds", "less than or equal to 900"], id="function-timeout-over-lambda-max"),
    pytest.param({"dev": {"functions": {"architecture": "arm"}}},
                 ["dev.functions.architecture", "'arm64' or 'x86_64'"], id="unknown-architecture"),
    pytest.param({"dev": {"database": {"backup_retention_days": 1}}},
                 ["dev.database.backup_retention_days", "greater than or equal to 7"], id="short-backups"),
    pytest.param({"dev": {"database": {"master_username": "postgres"}}},
                 ["dev.database.master_username", "reserved"], id="reserved-master-user"),
    pytest.param({"dev": {"pagerduty": {"api_url": "http://api.pagerduty.com"}}},
                 ["dev.pagerduty.api_url"], id="pagerduty-url-not-https"),
    pytest.param({"dev": {"pagerduty": {"token_secret_arn": "my-secret"}}},
                 ["dev.pagerduty.token_secret_arn", "does not match"], id="token-secret-not-an-arn"),
    pytest.param({"dev": {"pagerduty": {"rate_limit_per_minute": 1000}}},
                 ["dev.pagerduty.rate_limit_per_minute", "less than or equal to 960"], id="rate-above-the-key-limit"),
    pytest.param({"dev": {"pagerduty": {"max_in_flight": 0}}},
                 ["dev.pagerduty.max_in_flight", "greater than or equal to 1"], id="nothing-in-flight"),
    pytest.param({"dev": {"pagerduty": {"alerts": "some"}}},
                 ["dev.pagerduty.alerts", "'all', 'resolved' or 'off'"], id="unknown-alert-policy"),
    pytest.param({"dev": {"database": {"engine_version": "16.4"}}},
                 ["dev.database.engine_version", "'16.4' does not match"], id="other-major-version"),
    pytest.param({"dev": {"pagerduty": {"token_recovery_window_days": 3}}},
                 ["dev.pagerduty.token_recovery_window_days", "0 (delete at once) or 7 to 30 days"],
                 id="recovery-window-secrets-manager-refuses"),
    pytest.param({"dev": {"network": {"rds_sg_description": "caf\u00e9 <db>"}}},
                 ["dev.network.rds_sg_description", "does not match"], id="description-ec2-refuses"),
    pytest.param({"dev": {"schedule": {"enabled": True, "expression": "rate(30 minutes)"}}},
                 ["starts a run every 30 minutes", "workflow.timeout_seconds (2700 s)", "at most every 45 minutes"],
                 id="schedule-faster-than-a-run-may-last"),
    pytest.param({"dev": {"schedule": {"enabled": True, "expression": "rate(10 minutes)"},
                          "workflow": {"timeout_seconds": 900}}},
                 ["starts a run every 10 minutes", "(900 s)"], id="schedule-faster-than-a-shortened-run"),
    pytest.param({"dev": {"schedule": {"expression": "every hour"}}},
                 ["dev.schedule.expression", "is not an EventBridge Scheduler expression", "rate(<n> minutes|hours|days)"],
                 id="schedule-expression-unknown"),
    pytest.param({"dev": {"schedule": {"expression": "rate(1 hours)"}}},
                 ["dev.schedule.expression", "a rate of 1 with the singular unit"], id="schedule-rate-plural-of-one"),
    pytest.param({"dev": {"schedule": {"expression": "cron(0 6 * * * *)"}}},
                 ["dev.schedule.expression", "one of day-of-month and day-of-week must be '?'"],
                 id="schedule-cron-without-question-mark"),
    pytest.param({"dev": {"schedule": {"expression": "at(2026-13-01T00:00:00)"}}},
                 ["dev.schedule.expression", "is not an EventBridge Scheduler expression"], id="schedule-at-bad-date"),
    pytest.param({"dev": {"schedule": {"timezone": "Mars/Olympus_Mons"}}},
                 ["dev.schedule.timezone", "is not an IANA time zone name"], id="schedule-unknown-timezone"),
    pytest.param({"dev": {"schedule": {"max_retry_attempts": 186}}},
                 ["dev.schedule.max_retry_attempts", "less than or equal to 185"], id="schedule-too-many-retries"),
    pytest.param({"dev": {"schedule": {"max_event_age_seconds": 30}}},
                 ["dev.schedule.max_event_age_seconds", "greater than or equal to 60"], id="schedule-event-age-short"),
    pytest.param({"dev": {"schedule": {"enabled": "sometimes"}}}, ["dev.schedule.enabled", "valid boolean"],
                 id="schedule-enabled-not-bool"),
    pytest.param({"dev": {"schedule": {"enabled": True, "expression": "cron(0 6 ? * MON-FRI *)"}}},
                 ["dev: alarms.freshness_max_age_minutes is required", "is not rate(...)"],
                 id="freshness-bound-required-for-cron"),
    pytest.param({"dev": {"schedule": {"enabled": True, "expression": "rate(1 day)"}}},
                 ["dev: twice the schedule's interval (2880 minutes)", "at most 1440"],
                 id="freshness-default-beyond-a-day"),
    pytest.param({"dev": {"schedule": {"enabled": True, "expression": "rate(2 hours)"},
                          "alarms": {"freshness_max_age_minutes": 90}}},
                 ["alarms.freshness_max_age_minutes (90) must be longer than the schedule's interval (120 minutes)"],
                 id="freshness-bound-within-the-interval"),
    pytest.param({"dev": {"alarms": {"freshness_max_age_minutes": 2000}}},
                 ["dev.alarms.freshness_max_age_minutes", "less than or equal to 1440"], id="freshness-beyond-a-day"),
    pytest.param({"dev": {"alarms": {"period_seconds": 90}}},
                 ["dev.alarms.period_seconds", "90 s", "multiple of 60"], id="alarm-period-not-whole-minutes"),
    pytest.param({"dev": {"alarms": {"db_period_seconds": 30}}},
                 ["dev.alarms.db_period_seconds", "30 s", "per-minute"], id="alarm-period-high-resolution"),
    pytest.param({"dev": {"alarms": {"period_seconds": 3600, "evaluation_periods": 25}}},
                 ["dev.alarms", "period_seconds x evaluation_periods = 90000 s", "at most one day"],
                 id="alarm-window-beyond-a-day"),
    pytest.param({"dev": {"alarms": {"db_cpu_percent": 120}}},
                 ["dev.alarms.db_cpu_percent", "less than or equal to 100"], id="alarm-cpu-over-100"),
    pytest.param({"dev": {"alarms": {"db_free_storage_share": 1}}},
                 ["dev.alarms.db_free_storage_share", "less than 1"], id="alarm-storage-share-whole"),
    pytest.param({"dev": {"alarms": {"db_freeable_memory_mb": 0}}},
                 ["dev.alarms.db_freeable_memory_mb", "greater than or equal to 1"], id="alarm-memory-zero"),
    pytest.param({"dev": {"notifications": {"emails": ["oncall at example.com"]}}},
                 ["dev.notifications.emails.0", "'oncall at example.com' does not match"], id="email-malformed"),
    pytest.param({"dev": {"notifications": {"emails": ["a@example.com", "A@example.com"]}}},
                 ["dev.notifications.emails", "only once"], id="email-twice"),
    pytest.param({"dev": {"notifications": {"https_endpoints": ["http://hooks.example.com/x"]}}},
                 ["dev.notifications.https_endpoints.0", "does not match"], id="endpoint-not-https"),
    pytest.param({"dev": {"notifications": {"sms": ["+440000"]}}},
                 ["dev.notifications.sms", "unknown setting"], id="notification-unknown-protocol"),
    pytest.param({"dev": {"analytics": {"day_starts": "17:00", "day_ends": "09:00"}}},
                 ["dev.analytics", "day_starts (17:00) must be earlier than day_ends (09:00)"],
                 id="working-day-reversed"),
    pytest.param({"dev": {"analytics": {"day_ends": "24:00"}}}, ["dev.analytics.day_ends", "does not match"],
                 id="working-day-end-not-a-clock-time"),
    pytest.param({"dev": {"analytics": {"working_days": [1, 8]}}},
                 ["dev.analytics.working_days.1", "less than or equal to 7"], id="working-day-not-a-weekday"),
    pytest.param({"dev": {"analytics": {"working_days": []}}}, ["dev.analytics.working_days", "at least 1"],
                 id="no-working-days"),
    pytest.param({"dev": {"analytics": {"working_days": [1, 1]}}}, ["dev.analytics", "lists a day twice"],
                 id="working-day-twice"),
    pytest.param({"dev": {"analytics": {"default_time_zone": "Mars/Olympus_Mons"}}},
                 ["dev.analytics.default_time_zone", "not an IANA time zone name"], id="working-hours-zone-unknown"),
    pytest.param({"dev": {}, "prod": {"database": {"port": "five"}}}, ["prod.database.port"],
                 id="one-bad-environment-stops-all"),
    pytest.param({"dev": []}, ["environment 'dev' must map to an object"], id="environment-not-an-object"),
    pytest.param("{not json", ["not valid JSON"], id="malformed-json"),
]


@pytest.mark.parametrize(("environments", "expected"), BAD_SETTINGS)
def test_bad_settings_are_refused_and_nothing_is_written(tmp_path: Path, environments: object,
                                                          expected: list[str]) -> None:
    code, stderr, outdir = synth_with(tmp_path, environments)
    assert code == 2, stderr
    for fragment in expected:
        assert fragment in stderr
    assert not outdir.exists()


@pytest.mark.parametrize(("change", "expected"), [
    pytest.param({"encrypt": False}, "terraform.backend.s3.encrypt", id="unencrypted-state"),
    pytest.param({"dynamodb_table": None}, "terraform.backend.s3.dynamodb_table", id="no-lock-table"),
    pytest.param({"buckett": "x"}, "terraform.backend.s3.buckett: unknown setting", id="unknown-backend-key"),
    pytest.param({"key": "state.json"}, "terraform.backend.s3.key", id="key-not-tfstate"),
    pytest.param({"kms_key_id": None}, "terraform.backend.s3.kms_key_id: Field required", id="state-not-kms"),
    pytest.param({"kms_key_id": "arn:aws:kms:eu-west-2:123456789012:key/abc"}, "terraform.backend.s3.kms_key_id",
                 id="state-key-not-an-alias"),
])
def test_bad_backend_is_refused(tmp_path: Path, change: dict[str, object], expected: str) -> None:
    s3 = {key: value for key, value in {**GOOD_BACKEND["terraform"]["backend"]["s3"], **change}.items()
          if value is not None}
    code, stderr, outdir = synth_with(tmp_path, {"dev": {}}, {"terraform": {"backend": {"s3": s3}}})
    assert code == 2 and expected in stderr, stderr
    assert not outdir.exists()


def test_unknown_environment_is_named(tmp_path: Path) -> None:
    settings_file = tmp_path / "environments.json"
    settings_file.write_text(json.dumps({"dev": {}}))
    completed = run_main("--settings", str(settings_file), "--environment", "staging", "--outdir", str(tmp_path / "o"))
    assert completed.returncode == 2
    assert "no environment named staging (have: dev)" in completed.stderr
    assert not (tmp_path / "o").exists()


def test_reviewed_environments_are_valid_and_differ_where_intended() -> None:
    dev, prod = load_settings()
    assert (dev.environment, prod.environment) == ("dev", "prod")
    assert not dev.database.deletion_protection and prod.database.deletion_protection
    assert not dev.database.multi_az and prod.database.multi_az
    assert prod.database.final_snapshot


def test_embedded_defaults_match_the_product() -> None:
    defaults = settings_for("dev", {})
    assert defaults.region == "eu-west-2"
    assert defaults.network.vpc_id == "vpc-0e01c3c7ae69fd92b"
    assert defaults.network.private_subnet_ids == ("subnet-0e2842b86fa358d19", "subnet-0ff5a9d643e0b97c8")
    assert defaults.api.authorization == "AWS_IAM"
    assert isinstance(defaults, Settings) and defaults.stack_name == "stepfuncproject-dev"


def test_operations_defaults() -> None:
    """The schedule runs in production unless switched off, hourly in UTC; nobody is subscribed by default; the
    freshness alarm's bound is twice the schedule's interval."""
    dev, prod = settings_for("dev", {}), settings_for("prod", {})
    assert (dev.schedule.is_enabled, prod.schedule.is_enabled) == (False, True)
    assert (prod.schedule.expression, prod.schedule.timezone) == ("rate(1 hour)", "UTC")
    assert (prod.schedule.max_retry_attempts, prod.schedule.max_event_age_seconds) == (3, 3600)
    assert (dev.freshness_max_age_minutes, prod.freshness_max_age_minutes) == (None, 120)
    assert prod.notifications.emails == () and prod.notifications.https_endpoints == ()
    alarms = prod.alarms
    assert (alarms.period_seconds, alarms.evaluation_periods) == (300, 1)
    assert (alarms.db_period_seconds, alarms.db_evaluation_periods) == (300, 3)
    assert (alarms.db_cpu_percent, alarms.db_freeable_memory_mb, alarms.db_free_storage_share) == (80, 128, 0.10)
    assert not settings_for("prod", {"schedule": {"enabled": False}}).schedule.is_enabled
    on = settings_for("dev", {"schedule": {"enabled": True, "expression": "rate(15 minutes)"},
                              "workflow": {"timeout_seconds": 900}})
    assert on.schedule.is_enabled and on.freshness_max_age_minutes == 30
    cron = settings_for("dev", {"schedule": {"enabled": True, "expression": "cron(0 6 ? * MON-FRI *)",
                                             "timezone": "Europe/London"},
                                "alarms": {"freshness_max_age_minutes": 1440}})
    assert cron.freshness_max_age_minutes == 1440
    assert settings_for("dev", {"schedule": {"expression": "at(2026-12-24T18:00:00)"}}).schedule.expression


def test_the_api_pace_and_alert_policy_are_set_per_environment(tmp_path: Path) -> None:
    """A team sharing the PagerDuty key with other integrations lowers the pipeline's share of it."""
    shared_key = {"rate_limit_per_minute": 480, "max_in_flight": 4, "alerts": "off"}
    code, stderr, outdir = synth_with(tmp_path, {"dev": {"pagerduty": shared_key}, "prod": {}})
    assert code == 0, stderr
    for env, expected in (("dev", ("480", "4", "off")), ("prod", ("900", "8", "resolved"))):
        config = json.loads((outdir / "stacks" / f"stepfuncproject-{env}" / "cdk.tf.json").read_text())
        callers = [fn for fn in config["resource"]["aws_lambda_function"].values()
                   if "PAGERDUTY_TOKEN_SECRET_ARN" in fn["environment"]["variables"]]
        assert len(callers) == 2  # steps 1 and 2 call PagerDuty; the others are not told about it
        for fn in callers:
            variables = fn["environment"]["variables"]
            assert (variables["PAGERDUTY_RATE_LIMIT_PER_MINUTE"], variables["PAGERDUTY_MAX_IN_FLIGHT"],
                    variables["PIPELINE_ALERTS"]) == expected


def test_the_working_hours_reach_step_1_only(tmp_path: Path) -> None:
    """The analytics views' working hours are a setting per environment; the migrating function (step 1) writes them
    into the database, so only it is told."""
    hours = {"working_days": [1, 2, 3, 4], "day_starts": "08:30", "day_ends": "18:00",
             "default_time_zone": "America/New_York"}
    code, stderr, outdir = synth_with(tmp_path, {"dev": {"analytics": hours}, "prod": {}})
    assert code == 0, stderr
    for env, expected in (("dev", hours), ("prod", {"working_days": [1, 2, 3, 4, 5], "day_starts": "09:00",
                                                     "day_ends": "17:00", "default_time_zone": "UTC"})):
        config = json.loads((outdir / "stacks" / f"stepfuncproject-{env}" / "cdk.tf.json").read_text())
        told = {fn["function_name"].rsplit("-", 1)[-1]:
                json.loads(fn["environment"]["variables"]["ANALYTICS_WORKING_HOURS"])
                for key, fn in config["resource"]["aws_lambda_function"].items()
                if "ANALYTICS_WORKING_HOURS" in fn["environment"]["variables"]}
        assert told == {"lambda_1": expected}  # stepfuncproject-<env>-lambda_1


def test_descriptions_are_settings(tmp_path: Path) -> None:
    """Descriptions force a replacement; they are settings so the replacement path can be exercised on purpose."""
    code, stderr, outdir = synth_with(tmp_path, {"dev": {
        "network": {"lambda_sg_description": "functions v2", "rds_sg_description": "database v2"},
        "database": {"parameter_group_description": "parameters v2"},
        "pagerduty": {"token_recovery_window_days": 0}}})
    assert code == 0, stderr
    stack = json.loads((outdir / "stacks" / "stepfuncproject-dev" / "cdk.tf.json").read_text())
    assert sorted(g["description"] for g in stack["resource"]["aws_security_group"].values()) == [
        "database v2", "functions v2"]
    assert only(stack["resource"], "aws_db_parameter_group")["description"] == "parameters v2"
    assert only(stack["resource"], "aws_secretsmanager_secret")["recovery_window_in_days"] == 0
