"""The GitHub workflows are valid (check-jsonschema's vendored schema, offline) and keep their promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from review.plan_all import COMMENT_MARKER

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
FILES = ["pull-request.yml", "deploy.yml"]


def load(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def steps(doc: dict) -> list[dict]:
    return [s for job in doc["jobs"].values() for s in job["steps"]]


@pytest.mark.parametrize("name", FILES)
def test_valid_github_actions_schema(name):
    cli = Path(sys.executable).with_name("check-jsonschema")
    proc = subprocess.run([str(cli), "--builtin-schema", "vendor.github-workflows", str(WORKFLOWS / name)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", FILES)
def test_actions_pinned_to_full_sha_with_version_comment(name):
    lines = [ln for ln in (WORKFLOWS / name).read_text().splitlines() if re.match(r"\s*-?\s*uses:", ln)]
    assert lines
    for line in lines:
        assert re.search(r"uses: [\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+(\.\d+)*$", line), line


def test_pull_request_workflow():
    doc = load("pull-request.yml")
    assert list(doc[True]) == ["pull_request"]  # YAML 1.1 reads the key `on` as True
    job = doc["jobs"]["review"]
    assert job["permissions"] == {"contents": "read", "id-token": "write", "pull-requests": "write"}
    uses = [s.get("uses", "").split("@")[0] for s in job["steps"]]
    for action in ("actions/checkout", "actions/setup-python", "actions/setup-node", "hashicorp/setup-terraform",
                   "aws-actions/configure-aws-credentials", "actions/upload-artifact", "actions/github-script"):
        assert action in uses
    by_action = {s.get("uses", "").split("@")[0]: s for s in job["steps"]}
    assert by_action["actions/setup-python"]["with"]["python-version"] == "3.13"
    assert by_action["actions/setup-node"]["with"]["node-version"] == 20
    assert by_action["aws-actions/configure-aws-credentials"]["with"]["role-to-assume"] == \
        "${{ vars.AWS_PLAN_ROLE_ARN }}"
    runs = "\n".join(s.get("run", "") for s in job["steps"])
    assert "make test" in runs and "python -m review.plan_all" in runs
    assert runs.index("make test") < runs.index("review.plan_all")
    script = by_action["actions/github-script"]["with"]["script"]
    assert COMMENT_MARKER in script and "updateComment" in script and "createComment" in script
    assert by_action["actions/upload-artifact"]["with"]["name"] == "review-plans"


def test_deploy_workflow():
    """Plan in one job, approve, then apply exactly that job's saved plans in another."""
    doc = load("deploy.yml")
    assert doc[True]["push"]["branches"] == ["main"]
    assert doc["concurrency"]["cancel-in-progress"] is False
    plan, apply = doc["jobs"]["plan"], doc["jobs"]["apply"]
    assert "environment" not in plan and apply["environment"] == "production" and apply["needs"] == "plan"
    assert plan["permissions"]["id-token"] == apply["permissions"]["id-token"] == "write"
    plan_runs = [s.get("run", "") for s in plan["steps"]]
    assert any("review.plan_all" in r and "--lock" in r for r in plan_runs)
    assert any("GITHUB_STEP_SUMMARY" in r for r in plan_runs)
    uploaded = next(s for s in plan["steps"] if s.get("uses", "").startswith("actions/upload-artifact@"))
    downloaded = next(s for s in apply["steps"] if s.get("uses", "").startswith("actions/download-artifact@"))
    assert uploaded["with"]["name"] == downloaded["with"]["name"] == "deploy-plans"
    apply_runs = [s.get("run", "") for s in apply["steps"]]
    (applying,) = [r for r in apply_runs if " apply " in r]
    assert "tfplan" in applying and "-auto-approve" not in applying  # a saved plan needs no approval flag
    assert not any("plan_all" in r for r in apply_runs)  # nothing is re-planned after the approval
