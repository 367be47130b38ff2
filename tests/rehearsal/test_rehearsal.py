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
import threading
import time
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
@pytest.mark.parametrize("phase", ["init", "plan", "serve"])  # serve: the prod-like environment is mid-terraform
def test_a_failed_phase_leaves_nothing_behind(phase):
    completed = run_rehearsal("--fail-at", phase, timeout=600)
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert f"rehearsal: {phase} FAILED" in completed.stdout, completed.stdout[-4000:]
    assert completed.stdout.splitlines()[-1].startswith("rehearsal: FAILED in ")
    # The prod-like environment, started alongside, was stopped and reported before the verdict.
    assert re.search(rf"rehearsal: {rehearsal.PRODLIKE} (FAILED|ok)", completed.stdout), completed.stdout
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
    completed = run_rehearsal("--keep-plan", str(tmp_path / "plan.json"), timeout=1500)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stdout.splitlines()[-1].startswith("rehearsal: PASSED in ")
    for phase in rehearsal.PHASES:
        assert f"rehearsal: {phase} ok (" in completed.stdout
    assert json.loads((tmp_path / "plan.json").read_text())["resource_changes"]
    assert_nothing_left(completed)


# -- the second act's pieces --------------------------------------------------------------------------
def test_the_settings_file_changes_three_descriptions_and_adds_a_prodlike_environment(tmp_path):
    from modules.settings import ENVIRONMENTS_FILE, load_settings

    base = json.loads(ENVIRONMENTS_FILE.read_text())
    document = rehearsal.rehearsal_settings(base, "dev", "stepfuncproject-dev")
    assert base == json.loads(ENVIRONMENTS_FILE.read_text()), "the base document is not modified"
    assert {k: v for k, v in document.items() if k not in ("dev", rehearsal.PRODLIKE)} == \
        {k: v for k, v in base.items() if k != "dev"}
    (tmp_path / "s.json").write_text(json.dumps(document))
    dev, prodlike = load_settings(tmp_path / "s.json", ["dev", rehearsal.PRODLIKE])
    (original,) = load_settings(only=["dev"])
    changed = {"lambda_sg_description", "rds_sg_description", "parameter_group_description"}
    for section in ("network", "database"):
        new, old = getattr(dev, section).model_dump(), getattr(original, section).model_dump()
        assert {k for k in new if new[k] != old[k]} == changed & set(new)
    assert prodlike.stack_name == f"stepfuncproject-{rehearsal.PRODLIKE}"
    assert prodlike.database.final_snapshot and not prodlike.database.deletion_protection
    prod = base["prod"]["database"]
    assert prodlike.database.multi_az == prod.get("multi_az", False)  # otherwise prod's settings


def change(address: str, kind: str, *actions: str) -> dict:
    return {"address": address, "type": kind, "mode": "managed", "change": {"actions": list(actions)}}


REPLACEMENT_PLAN = {"resource_changes": [
    change("aws_security_group.lambda_sg", "aws_security_group", "create", "delete"),
    change("aws_security_group.rds_sg", "aws_security_group", "create", "delete"),
    change("aws_db_parameter_group.pg", "aws_db_parameter_group", "create", "delete"),
    change("aws_vpc_security_group_ingress_rule.r", "aws_vpc_security_group_ingress_rule", "create", "delete"),
    change("aws_vpc_security_group_egress_rule.e", "aws_vpc_security_group_egress_rule", "create", "delete"),
    change("aws_db_instance.db", "aws_db_instance", "update"),
    change("aws_kms_key.k", "aws_kms_key", "no-op"),
]}


def test_the_replacement_plan_check_accepts_create_before_destroy():
    assert rehearsal.check_replacement_plan(REPLACEMENT_PLAN) == []
    assert rehearsal.plan_summary(REPLACEMENT_PLAN) == (
        "create-before-destroy: 1 aws_db_parameter_group, 2 aws_security_group, "
        "1 aws_vpc_security_group_egress_rule, 1 aws_vpc_security_group_ingress_rule; "
        "update in place: 1 aws_db_instance")


@pytest.mark.parametrize("address, actions, problem", [
    ("aws_security_group.rds_sg", ["delete", "create"], "aws_security_group.rds_sg: ['delete', 'create']"),
    ("aws_db_parameter_group.pg", ["no-op"], "aws_db_parameter_group.pg: ['no-op']"),
    # a rule deleted before its replacement exists: functions and database without a path for that moment
    ("aws_vpc_security_group_ingress_rule.r", ["delete", "create"],
     "aws_vpc_security_group_ingress_rule.r: ['delete', 'create']"),
    ("aws_db_instance.db", ["delete", "create"], "aws_db_instance.db: ['delete', 'create'], expected ['update']"),
])
def test_the_replacement_plan_check_refuses_anything_else(address, actions, problem):
    plan = json.loads(json.dumps(REPLACEMENT_PLAN))
    next(rc for rc in plan["resource_changes"] if rc["address"] == address)["change"]["actions"] = actions
    (found,) = rehearsal.check_replacement_plan(plan)
    assert found.startswith(problem)


def test_the_replacement_plan_check_wants_each_type():
    plan = {"resource_changes": [rc for rc in REPLACEMENT_PLAN["resource_changes"]
                                 if rc["type"] != "aws_db_parameter_group"]}
    assert rehearsal.check_replacement_plan(plan) == ["no aws_db_parameter_group in the plan"]


def test_a_plan_that_is_not_empty_says_what_changes():
    plan = {"resource_changes": [change("aws_db_instance.db", "aws_db_instance", "no-op")],
            "output_changes": {"DatabaseEngineVersion": {"actions": ["update"], "before": "17", "after": "17.6"},
                               "Other": {"actions": ["no-op"], "before": "a", "after": "a"}}}
    assert rehearsal.plan_change_lines(plan) == ["output DatabaseEngineVersion: '17' -> '17.6'"]
    plan["resource_changes"][0]["change"].update(actions=["update"], before={"engine_version": "17.6", "port": 5432},
                                                 after={"engine_version": "17.5", "port": 5432})
    del plan["output_changes"]
    assert rehearsal.plan_change_lines(plan) == ["aws_db_instance.db: update (engine_version '17.6' -> '17.5')"]


def test_a_new_synthesis_replaces_the_configuration_but_keeps_state_and_overrides(tmp_path):
    work = tmp_path / "work"
    for name in (".terraform/providers/x", ".terraform.lock.hcl", "terraform.tfstate", rehearsal.PROVIDER_OVERRIDE,
                 rehearsal.BACKEND_OVERRIDE, "cdk.tf.json", "assets/old/a.zip", "tfplan"):
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text("old")
    new = tmp_path / "new"
    (new / "assets" / "new").mkdir(parents=True)
    (new / "cdk.tf.json").write_text("new")
    (new / "assets" / "new" / "a.zip").write_text("new")
    rehearsal.update_stack(new, work)
    kept = {".terraform/providers/x", ".terraform.lock.hcl", "terraform.tfstate", rehearsal.PROVIDER_OVERRIDE,
            rehearsal.BACKEND_OVERRIDE}
    assert {str(f.relative_to(work)) for f in work.rglob("*") if f.is_file()} == kept | {"cdk.tf.json",
                                                                                          "assets/new/a.zip"}
    assert all((work / name).read_text() == "old" for name in kept)  # init's lock file: the synthesis has none
    assert (work / "cdk.tf.json").read_text() == "new"
    (new / ".terraform.lock.hcl").write_text("committed")
    rehearsal.update_stack(new, work)
    assert (work / ".terraform.lock.hcl").read_text() == "committed"  # a synthesis that brings one wins


def test_the_final_snapshots_must_be_two_named_apart():
    snapshot = lambda name, db="env-postgres", kind="manual": {  # noqa: E731
        "DBSnapshotIdentifier": name, "DBInstanceIdentifier": db, "SnapshotType": kind}
    a, b = "env-postgres-final-0a1b2c3d", "env-postgres-final-4e5f6a7b"
    held = [snapshot(a), snapshot(b), snapshot("rds:env-postgres-auto", kind="automated"), snapshot("x", db="other")]
    assert rehearsal.check_final_snapshots(held, "env-postgres", [a, b]) == []
    assert rehearsal.check_final_snapshots([snapshot(a)], "env-postgres", [a, a]) == [
        "the two builds named final snapshots ['env-postgres-final-0a1b2c3d', 'env-postgres-final-0a1b2c3d'], "
        "expected two different names",
        "the emulator holds final snapshots ['env-postgres-final-0a1b2c3d'], expected "
        "['env-postgres-final-0a1b2c3d', 'env-postgres-final-0a1b2c3d']"]
    assert rehearsal.check_final_snapshots([snapshot("env-postgres-final"), snapshot(b)], "env-postgres",
                                           ["env-postgres-final", b]) == [
        "env-postgres-final does not start with env-postgres-final-"]


def test_stopping_the_background_commands_kills_them_and_refuses_more(tmp_path):
    groups = rehearsal.ProcessGroups()
    outcome = {}

    def run():
        try:
            groups.run("sleep", tmp_path, dict(os.environ), "60", log=tmp_path / "log", timeout=120)
        except rehearsal.RehearsalError as exc:
            outcome["error"] = str(exc)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 10
    while not groups._running and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    groups.stop()
    worker.join(10)
    assert not worker.is_alive() and time.monotonic() - started < 5
    assert outcome["error"] == "stopped: the rehearsal ended early"
    assert "[exit -9]" in (tmp_path / "log").read_text()
    with pytest.raises(rehearsal.RehearsalError, match="stopped"):
        groups.run("true", tmp_path, dict(os.environ), log=tmp_path / "log", timeout=10)


def test_a_background_command_that_fails_says_how(tmp_path):
    groups = rehearsal.ProcessGroups()
    with pytest.raises(rehearsal.TerraformError, match="exited 3"):
        groups.run("sh", tmp_path, dict(os.environ), "-c", "echo nope >&2; exit 3", log=tmp_path / "log",
                   timeout=10)
    assert groups.run("sh", tmp_path, dict(os.environ), "-c", "echo fine", log=tmp_path / "log",
                      timeout=10).stdout == "fine\n"


def test_the_summary_lists_phases_in_their_order_whenever_they_ended():
    lines = []
    r = rehearsal.Rehearsal(out=lines.append)
    r._run = lambda: r.outcome.phases.extend([rehearsal.PhaseResult(rehearsal.PRODLIKE, 2.0, True),
                                              rehearsal.PhaseResult("emulator", 1.0, True)])
    r.run()
    assert re.fullmatch(rf"rehearsal: FAILED in [\d.]+ s \(emulator 1.0s, {rehearsal.PRODLIKE} 2.0s\)", lines[-1])
