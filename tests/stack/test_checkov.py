"""checkov on each synthesized stack: zero failed checks, with only the skips in checkov-skips.yaml."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.synth import ALL_STACKS, ROOT
from tests.support.tools import checkov_binary

pytestmark = pytest.mark.slow
SKIPS_FILE = ROOT / "checkov-skips.yaml"


def skips_for(stack: str) -> dict[str, str]:
    skips = yaml.safe_load(SKIPS_FILE.read_text())
    return {**skips.get("all", {}), **skips.get(stack.rsplit("-", 1)[1], {})}


def scan(stack_folder: Path, tmp_path: Path, skipped: list[str]) -> dict:
    config = json.loads((stack_folder / "cdk.tf.json").read_text())
    # checkov's terraform_json parser fails on the terraform block's plain-string required_version; the
    # scanned copy drops that one attribute (it declares no resource).
    config["terraform"].pop("required_version", None)
    scanned = tmp_path / "cdk.tf.json"
    scanned.write_text(json.dumps(config))
    command = [checkov_binary(), "-f", str(scanned), "--framework", "terraform_json", "--skip-download",
               "--output", "json", "--quiet"]
    if skipped:
        command += ["--skip-check", ",".join(skipped)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    report = json.loads(completed.stdout) if completed.stdout.strip() else {}
    assert report, f"checkov gave no report (exit {completed.returncode}):\n{completed.stderr[-2000:]}"
    return report


def test_every_skip_has_a_one_line_reason() -> None:
    skips = yaml.safe_load(SKIPS_FILE.read_text())
    assert set(skips) <= {"all", *(stack.rsplit("-", 1)[1] for stack in ALL_STACKS)}
    for scope, checks in skips.items():
        for check, reason in checks.items():
            assert check.startswith(("CKV_", "CKV2_")), (scope, check)
            assert isinstance(reason, str) and len(reason) > 30 and "\n" not in reason.strip(), (scope, check)


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_checkov_finds_no_failed_checks(synth_dir: Path, tmp_path: Path, stack: str) -> None:
    report = scan(synth_dir / "stacks" / stack, tmp_path, sorted(skips_for(stack)))
    summary = report["summary"]
    failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in report["results"]["failed_checks"]]
    assert summary["parsing_errors"] == 0
    assert failed == [] and summary["failed"] == 0
    assert summary["passed"] > 20  # it really looked at the resources


@pytest.mark.parametrize("stack", ["stepfuncproject-dev", "stepfuncproject-state"])
def test_checkov_reports_what_the_skips_hide(synth_dir: Path, tmp_path: Path, stack: str) -> None:
    """Without the skips the same scan fails exactly on the skipped checks that apply to the stack, so the
    scan can fail and no skip is stale."""
    report = scan(synth_dir / "stacks" / stack, tmp_path, [])
    failed_ids = {check["check_id"] for check in report["results"]["failed_checks"]}
    applicable = set(skips_for(stack))
    if stack.endswith("-state"):  # the "all" skips are about functions and the token secret
        applicable -= set(yaml.safe_load(SKIPS_FILE.read_text())["all"])
    assert failed_ids == applicable
