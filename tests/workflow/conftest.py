"""The synthesized state machine executed by moto's ASL interpreter with the real Lambda handlers, against a
throwaway PostgreSQL (one per worker, schema reset per test) and a fresh local PagerDuty server per test.

Nothing of the definition is copied: it is read from `python main.py` output (tests.support.synth), its
function ARNs replaced by moto's; retry waits are recorded instead of slept (InProcessLambdas.serving)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from tests.support.fake_pagerduty import Account, FakePagerDuty, generate_account
from tests.support.lambda_runtime import (
    Database, InProcessLambdas, LocalWorkflow, SynthesizedWorkflow, WorkflowRun,
)
from tests.support.pipeline import row_counts  # noqa: F401  (re-exported for tests)
from tests.support.postgres import empty_pipeline_schema, throwaway_postgres
from tests.support.synth import synthesized_app

UTC = timezone.utc
TOKEN = "pd-workflow-token-0123456789"
START = datetime(2024, 3, 1, tzinfo=UTC)
END = START + timedelta(days=7)
BODY = json.dumps({"since": "2024-03-01T00:00:00Z", "until": "2024-03-08T00:00:00Z"})
STACK = "stepfuncproject-dev"
HAPPY_PATH = ["FetchInitialData", "CheckFetchInitialData", "FetchIncidents", "CheckFetchIncidents",
              "ValidateData", "CheckValidateData", "PipelineSucceeded"]
STEP_STATES = {"lambda_1": "FetchInitialData", "lambda_2": "FetchIncidents", "lambda_3": "ValidateData"}


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> SynthesizedWorkflow:
    # the synth tests/stack uses too (the dev stack is the same as from `--environment dev` alone)
    return SynthesizedWorkflow.load(synthesized_app(tmp_path_factory) / "stacks" / STACK)


@pytest.fixture(scope="session")
def pg(synthesized: SynthesizedWorkflow):
    # the database the stack names (DB_NAME), so only host, port, TLS and the secret are redirected
    with throwaway_postgres(dbname=synthesized.functions["lambda_1"].environment["DB_NAME"]) as instance:
        yield instance


@pytest.fixture
def db(pg):
    with empty_pipeline_schema(pg) as conn:
        yield conn


@pytest.fixture
def account() -> Account:
    return generate_account(60, seed=11, start=START, end=END)


@pytest.fixture
def pagerduty(account: Account):
    with FakePagerDuty(account, token=TOKEN, rate_limit=1_000_000) as server:
        yield server


@dataclass
class Outcome:
    run: WorkflowRun
    lambdas: InProcessLambdas
    workflow: LocalWorkflow

    def results(self, folder: str) -> list[Any]:
        return [call.result for call in self.lambdas.calls(self.workflow.function_arns[folder])]


@pytest.fixture
def run_workflow(synthesized, pg, db, pagerduty) -> Callable[..., Outcome]:
    """Execute the synthesized workflow once (fresh mock_aws each time) with `body` as the HTTP request body."""

    def run(body: str = BODY, *, prepare: Callable[[LocalWorkflow], None] | None = None,
            extra_env: dict[str, str] | None = None, **kwargs: Any) -> Outcome:
        env = {"PAGERDUTY_RATE_LIMIT_PER_MINUTE": "1000000", **(extra_env or {})}
        with LocalWorkflow(synthesized, db=Database.of(pg), pagerduty={"url": pagerduty.url, "token": TOKEN},
                           extra_env=env, **kwargs) as workflow:
            if prepare is not None:
                prepare(workflow)
            run = workflow.execute(body, timeout=120)
        return Outcome(run, workflow.lambdas, workflow)

    return run


def pipeline_runs(conn) -> list[dict[str, Any]]:
    cols = ["run_id", "execution_id", "status", "step", "error", "message"]
    return [dict(zip(cols, row)) for row in
            conn.run(f"SELECT {', '.join(cols)} FROM pagerduty.pipeline_runs ORDER BY run_id")]


def failed_path(state: str) -> list[str]:
    """The states from the start to the Fail state when `state` reports failure (success not true)."""
    before = HAPPY_PATH[:HAPPY_PATH.index(state)]
    return before + [state, f"Check{state}", f"{state}Failed", "HandleError", "PipelineFailed"]
