"""The local run (`python -m tools.local_run`, what `make run` ends with), end to end in a subprocess: its
verdict and exit code, and that it leaves no process or temporary folder behind (also when interrupted)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.support.fake_pagerduty import FakePagerDuty, generate_account
from tests.support.postgres import throwaway_postgres
from tests.support.processes import processes_using
from tests.support.synth import ROOT
from tests.support.tools import terraform_binary

pytestmark = pytest.mark.slow


@pytest.fixture
def tmpdir_for_run():
    """TMPDIR for the run; world-traversable, since PostgreSQL runs as the postgres user when we are root."""
    path = Path(tempfile.mkdtemp(prefix="local-run-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def local_run(tmp: Path, *args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
    environ = {k: v for k, v in os.environ.items() if k not in ("PAGERDUTY_TOKEN", "PAGERDUTY_API_URL",
                                                               "DATABASE_URL")}
    environ.update(env or {}, TMPDIR=str(tmp))
    return subprocess.Popen([sys.executable, "-m", "tools.local_run", *args], cwd=ROOT, env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def assert_nothing_left(tmp: Path) -> None:
    assert list(tmp.iterdir()) == []
    assert processes_using(tmp) == []


def test_local_run_succeeds_and_leaves_nothing_behind(tmpdir_for_run):
    terraform_binary()  # the run validates the stack with Terraform (skips here, fails under CI, without it)
    started = time.monotonic()
    proc = local_run(tmpdir_for_run, "--incidents", "150")
    out, _ = proc.communicate(timeout=300)
    seconds = time.monotonic() - started
    assert proc.returncode == 0, out
    assert out.rstrip().splitlines()[-1].startswith("VERDICT: SUCCEEDED"), out
    for expected in ("validate stepfuncproject-dev", "terraform validate + asl-validator + statelint",
                     "PipelineSucceeded", "Rows per table", "incident_count_matches_api", "Validation results"):
        assert expected in out
    incidents = next(line for line in out.splitlines() if line.strip().startswith("incidents "))
    assert incidents.split()[-1] == "150"
    emitted = metrics_table(out)
    assert emitted[("RowsWritten", "Table=incidents", "Count")] == "150"
    assert int(emitted[("ApiRequests", "Step=lambda_1", "Count")]) > 0
    assert int(emitted[("ApiRequests", "Step=lambda_2", "Count")].replace(",", "")) > 0
    assert emitted[("ApiRateLimited", "Step=lambda_2", "Count")] == "0"
    assert emitted[("ChecksFailed", "-", "Count")] == "0"
    assert {"lambda_1", "lambda_2", "lambda_3"} <= {dims.split("=")[1] for name, dims, _ in emitted
                                                   if name == "StepDuration"}
    assert float(emitted[("DataFreshness", "Scope=all", "Seconds")].replace(",", "")) > 0
    assert_nothing_left(tmpdir_for_run)
    assert seconds < 120  # under a minute on its own; this suite shares the machine with others


def metrics_table(out: str) -> dict[tuple[str, str, str], str]:
    """The local run's "Metrics emitted (CloudWatch EMF)" table: (metric, dimensions, unit) -> value."""
    lines = out.splitlines()
    start = lines.index("Metrics emitted (CloudWatch EMF)")
    assert "namespace PagerDutyPipeline" in lines[start + 1], lines[start + 1]
    assert lines[start + 2].split() == ["metric", "dimensions", "unit", "value"]
    rows = {}
    for line in lines[start + 3:]:
        if not line.strip():
            break
        name, dims, unit, value = line.split(None, 3)
        rows[(name, dims, unit)] = value.strip()
    return rows


def test_local_run_interrupted_stops_everything(tmpdir_for_run):
    proc = local_run(tmpdir_for_run, "--no-validate", "--incidents", "2000")
    lines = []
    for line in proc.stdout:  # interrupt once PostgreSQL is up and the workflow is being set up or running
        lines.append(line)
        if "local PagerDuty server" in line:
            break
    assert any("start a throwaway PostgreSQL" in line for line in lines), "".join(lines)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(lines) + out
    assert "VERDICT: INTERRUPTED" in out
    assert_nothing_left(tmpdir_for_run)


def test_local_run_reads_a_given_account_into_a_given_database(tmpdir_for_run):
    """PAGERDUTY_TOKEN (+ PAGERDUTY_API_URL) and DATABASE_URL: no server or database of its own; default body {}
    (first run: the last 24 hours)."""
    now = datetime.now(timezone.utc)
    account = generate_account(40, seed=5, start=now - timedelta(hours=20), end=now - timedelta(hours=1))
    with throwaway_postgres() as pg, FakePagerDuty(account, token="real-token", rate_limit=1_000_000) as server:
        proc = local_run(tmpdir_for_run, "--no-validate", env={
            "PAGERDUTY_TOKEN": "real-token", "PAGERDUTY_API_URL": server.url, "DATABASE_URL": pg.url})
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
        assert "VERDICT: SUCCEEDED" in out and "throwaway" not in out and "sample" not in out
        assert '{}' in out  # the request body
        conn = pg.connect()
        try:
            assert conn.run("SELECT count(*) FROM pagerduty.incidents")[0][0] == 40
            (row,) = conn.run("SELECT status, input::text FROM pagerduty.pipeline_runs")
            assert row[0] == "succeeded" and json.loads(row[1]) == {}
        finally:
            conn.close()
        assert server.request_count() > 0
        assert_nothing_left(tmpdir_for_run)
