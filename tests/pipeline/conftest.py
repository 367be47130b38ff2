"""Fixtures: a session-scoped throwaway PostgreSQL, moto Secrets Manager (in-process), and a fresh
fake PagerDuty server per test. Tests talk to both over the network; nothing is mocked in between."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from unittest import mock

import pytest

from moto import mock_aws

from pagerduty_pipeline import steps
from tests.support.fake_pagerduty import FakePagerDuty, generate_account
from tests.support.pipeline import DATA_TABLES, envelope, row_count as count  # noqa: F401  (re-exported for tests)
from tests.support.postgres import empty_pipeline_schema, throwaway_postgres

UTC = timezone.utc
TOKEN = "pd-test-token-0123456789"
START = datetime(2024, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="session")
def pg():
    with throwaway_postgres() as instance:
        yield instance


AWS_TEST_ENV = {"AWS_DEFAULT_REGION": "eu-west-2", "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
                "AWS_ENDPOINT_URL": None, "AWS_PROFILE": None}


@pytest.fixture(scope="session", autouse=True)
def aws_test_env():
    """Fake AWS credentials for moto, restored afterwards (other suites share the process)."""
    with mock.patch.dict(os.environ, {k: v for k, v in AWS_TEST_ENV.items() if v is not None}):
        for k, v in AWS_TEST_ENV.items():
            if v is None:
                os.environ.pop(k, None)  # restored by patch.dict on exit
        yield


@pytest.fixture(scope="session")
def secrets_arns(pg, aws_test_env):
    with mock_aws():
        import boto3

        sm = boto3.client("secretsmanager")
        db_arn = sm.create_secret(Name="pipeline/db", SecretString=json.dumps(pg.secret()))["ARN"]
        tok_arn = sm.create_secret(Name="pipeline/pagerduty", SecretString=json.dumps({"token": TOKEN}))["ARN"]
        plain_arn = sm.create_secret(Name="pipeline/pagerduty-plain", SecretString=TOKEN)["ARN"]
        yield {"db": db_arn, "token": tok_arn, "token_plain": plain_arn}


@pytest.fixture
def db(pg):
    with empty_pipeline_schema(pg) as conn:
        yield conn


def make_server(n_incidents=120, seed=3, **kwargs) -> FakePagerDuty:
    account = kwargs.pop("account", None) or generate_account(n_incidents, seed, START)
    return FakePagerDuty(account, token=TOKEN, rate_limit=kwargs.pop("rate_limit", 1_000_000), **kwargs)


@pytest.fixture
def server():
    with make_server() as srv:
        yield srv


def make_env(pg, arns, server) -> dict:
    env = pg.env()
    env.update({"DB_SECRET_ARN": arns["db"], "PAGERDUTY_TOKEN_SECRET_ARN": arns["token"],
                "PAGERDUTY_API_URL": server.url, "PAGERDUTY_RATE_LIMIT_PER_MINUTE": "1000000"})
    return env


@pytest.fixture
def env(pg, secrets_arns, server, db):
    return make_env(pg, secrets_arns, server)


class FakeContext:
    """Lambda context stand-in: remaining time given by a callable or a fixed sequence."""

    def __init__(self, remaining=lambda: 600_000, on_call=None):
        self.remaining = remaining
        self.calls = 0
        self.on_call = on_call

    def get_remaining_time_in_millis(self):
        self.calls += 1
        if self.on_call:
            self.on_call(self.calls)
        return self.remaining()


def noop_sleep(seconds):
    """Retry waits of the steps, skipped."""


def run_pipeline(env, inp, name="exec-1", context=None, sleep=noop_sleep, max_loops=1000):
    """Run step 1, step 2 until complete, step 3 as the state machine would. Returns a dict of results."""
    r1 = steps.start_run(envelope(inp, name, "Step1"), context, env=env, sleep=sleep)
    out = {"step1": r1, "step2": [], "step3": None}
    if not r1["success"]:
        return out
    state = r1
    for _ in range(max_loops):
        state = steps.load_incidents(envelope(state, name, "Step2"), context, env=env, sleep=sleep)
        out["step2"].append(state)
        if not state["success"] or state["complete"]:
            break
    if state["success"]:
        out["step3"] = steps.validate_run(envelope(state, name, "Step3"), None, env=env)
    return out


def table_dump(conn, tables=DATA_TABLES) -> dict:
    dump = {}
    for t in tables:
        # when a note was fetched is bookkeeping, not data
        rows = conn.run(f"SELECT (to_jsonb(x) - 'note_fetched_at')::text FROM pagerduty.{t} x ORDER BY 1")
        dump[t] = [r[0] for r in rows]
    return dump
