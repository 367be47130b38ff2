"""The deploy rehearsal (tools/rehearsal.py): a failed phase leaves nothing behind, and (RUN_REHEARSAL=1) the
whole rehearsal passes. CI runs the whole rehearsal as its own step, `make rehearse`, so the normal test run
checks the cleanup and the pieces only.

The rehearsal runs as a subprocess here: its emulator shares moto's process-wide backends and configuration,
which other suites in the same pytest worker use (e.g. session-scoped `mock_aws` fixtures)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import processes_using
from tools import rehearsal
from tools.terraform import terraform_path

needs_terraform = pytest.mark.skipif(terraform_path() is None and os.environ.get("CI") != "true",
                                     reason="terraform is not installed")


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def run_rehearsal(*args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tools.rehearsal", *args], cwd=rehearsal.ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


def assert_nothing_left(completed: subprocess.CompletedProcess[str]) -> None:
    """The folders, processes and ports this run printed are gone (other runs may be going on meanwhile)."""
    match = re.search(r"emulator at http://127\.0\.0\.1:(\d+), .* scratch (\S+)", completed.stdout)
    assert match, completed.stdout
    port, scratch = int(match.group(1)), match.group(2)
    assert not Path(scratch).exists(), "the scratch folder is left behind"
    assert not processes_using(scratch), "processes left behind"
    assert not listening(port), "the emulator's port still answers"
    for pg_port, data in re.findall(r"PostgreSQL at 127\.0\.0\.1:(\d+), data (\S+)", completed.stdout):
        assert not Path(data).exists(), "PostgreSQL's folder is left behind"
        assert not processes_using(data), "PostgreSQL still runs"
        assert not listening(int(pg_port)), "PostgreSQL's port still answers"


@needs_terraform
@pytest.mark.slow
@pytest.mark.parametrize("phase", ["init", "plan"])
def test_a_failed_phase_leaves_nothing_behind(phase):
    completed = run_rehearsal("--fail-at", phase, timeout=300)
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert f"rehearsal: {phase} FAILED" in completed.stdout
    assert completed.stdout.splitlines()[-1].startswith("rehearsal: FAILED in ")
    assert_nothing_left(completed)


def test_integration_request_parameters_become_start_execution_parameters(monkeypatch):
    started = {}

    class FakeSfn:
        def start_execution(self, **params):
            started.update(params)
            return {"executionArn": "arn:x"}

    monkeypatch.setattr(rehearsal, "aws_client", lambda url, service: FakeSfn())
    integration = {"IntegrationSubtype": "StepFunctions-StartExecution",
                   "RequestParameters": {"StateMachineArn": "arn:sm", "Input": "$request.body"}}
    assert rehearsal.start_like_the_integration("u", integration, '{"a": 1}', "n") == "arn:x"
    assert started == {"stateMachineArn": "arn:sm", "input": '{"a": 1}', "name": "n"}


def test_the_kept_plan_has_no_emulator_settings_or_paths(tmp_path):
    scratch = tmp_path / "rehearsal-x"
    plan = {"timestamp": "2026-01-01T00:00:00Z", "configuration": {"provider_config": {"aws": {"expressions": {
        "region": {"constant_value": "eu-west-2"}, "access_key": {"constant_value": "rehearsal"},
        "secret_key": {"constant_value": "rehearsal"}, "endpoints": [{"sts": {"constant_value": "http://x"}}],
        "skip_credentials_validation": {"constant_value": True}}}}},
        "planned_values": {"x": str(scratch / "stack" / "assets" / "a.zip")}}
    kept = rehearsal.sanitize_plan(plan, scratch)
    assert kept["configuration"]["provider_config"]["aws"]["expressions"] == {
        "region": {"constant_value": "eu-west-2"}}
    assert "timestamp" not in kept and str(scratch) not in json.dumps(kept)


def test_the_overrides_leave_the_synthesized_stack_alone(tmp_path):
    stack = tmp_path / "stack"
    stack.mkdir()
    (stack / "cdk.tf.json").write_text('{"provider": {"aws": [{"region": "eu-west-2"}]}}')
    rehearsal.prepare_stack(stack, tmp_path / "copy", "http://127.0.0.1:1")
    assert (tmp_path / "copy" / "cdk.tf.json").read_text() == (stack / "cdk.tf.json").read_text()
    provider = json.loads((tmp_path / "copy" / rehearsal.PROVIDER_OVERRIDE).read_text())["provider"]["aws"][0]
    assert set(provider["endpoints"][0]) == set(rehearsal.ENDPOINT_SERVICES)
    assert "region" not in provider and "default_tags" not in provider  # the stack's own stay in force
    backend = json.loads((tmp_path / "copy" / rehearsal.BACKEND_OVERRIDE).read_text())["terraform"]["backend"]
    assert list(backend) == ["local"]


@needs_terraform
@pytest.mark.slow
@pytest.mark.rehearsal
@pytest.mark.skipif(os.environ.get("RUN_REHEARSAL") != "1",
                    reason="takes minutes: CI runs `make rehearse` as its own step; RUN_REHEARSAL=1 runs it here")
def test_the_whole_rehearsal_passes_and_cleans_up(tmp_path):
    completed = run_rehearsal("--keep-plan", str(tmp_path / "plan.json"))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stdout.splitlines()[-1].startswith("rehearsal: PASSED in ")
    for phase in rehearsal.PHASES:
        assert f"rehearsal: {phase} ok (" in completed.stdout
    assert json.loads((tmp_path / "plan.json").read_text())["resource_changes"]
    assert_nothing_left(completed)
