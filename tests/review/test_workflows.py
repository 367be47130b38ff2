"""The GitHub workflows are valid (check-jsonschema's vendored schema, offline) and keep their promises:
credentials only in environment-bound jobs, dev applied and checked before prod is planned, exactly the saved
plan applied with the committed lock file after the deploy guard, every tool pinned, and a PR plan comment
marked stale before anything of a newer push can fail. The deploy's shell steps are also run, as written, with
a real Terraform (docs/deploy.md)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from review.plan_all import COMMENT_MARKER
from tools import deploy_guard

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
FILES = ["pull-request.yml", "deploy.yml"]
CREDENTIALS_ACTION = "aws-actions/configure-aws-credentials"
DEPLOY_CHAIN = ["plan-dev", "apply-dev", "check-dev", "plan-prod", "apply-prod"]
APPLY_JOBS = {"apply-dev": ("dev", "deploy-dev", "plan-dev"), "apply-prod": ("production", "deploy-prod", "plan-prod")}
PLAN_JOBS = {"plan-dev": ("dev-plan", "deploy-dev", "stepfuncproject-dev"),
             "plan-prod": ("production-plan", "deploy-prod", "stepfuncproject-prod")}


def load(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def action(step: dict) -> str:
    return step.get("uses", "").split("@")[0]


def step_index(job: dict, predicate) -> int:
    matches = [i for i, s in enumerate(job["steps"]) if predicate(s)]
    assert len(matches) == 1, f"expected one matching step, found {len(matches)}"
    return matches[0]


def run_of(job: dict, needle: str) -> str:
    (script,) = [s["run"] for s in job["steps"] if needle in s.get("run", "")]
    return script


def needs(job: dict) -> list[str]:
    value = job.get("needs", [])
    return [value] if isinstance(value, str) else list(value)


def all_needs(jobs: dict, name: str) -> set[str]:
    out: set[str] = set()
    for parent in needs(jobs[name]):
        out |= {parent} | all_needs(jobs, parent)
    return out


def resolve(value, env: dict) -> str:
    """``${{ env.X }}`` -> the workflow's env X (what setup steps receive)."""
    match = re.fullmatch(r"\$\{\{\s*env\.(\w+)\s*\}\}", str(value))
    return str(env[match.group(1)]) if match else str(value)


def makefile_var(name: str) -> str:
    match = re.search(rf"^{name}\s*:?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert match, name
    return match.group(1)


# --------------------------------------------------------------------------------------------- both files

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


def test_each_action_is_pinned_to_one_sha_everywhere():
    pins: dict[str, set[str]] = {}
    for name in FILES:
        for line in (WORKFLOWS / name).read_text().splitlines():
            if match := re.search(r"uses: ([\w.-]+/[\w./-]+)@([0-9a-f]{40}) # (v[\d.]+)$", line):
                pins.setdefault(match.group(1), set()).add(f"{match.group(2)} {match.group(3)}")
    assert {a: len(v) for a, v in pins.items() if len(v) > 1} == {}


@pytest.mark.parametrize("name", FILES)
def test_credentials_only_in_jobs_bound_to_an_environment(name):
    """The OIDC subject of such a job is repo:OWNER/REPO:environment:NAME, which the roles' trust requires."""
    doc = load(name)
    assert "id-token" not in (doc.get("permissions") or {})
    for job_name, job in doc["jobs"].items():
        oidc = (job.get("permissions") or {}).get("id-token") == "write"
        assumes = [s for s in job["steps"] if action(s) == CREDENTIALS_ACTION]
        if oidc or assumes:
            assert job.get("environment"), f"{name}: job {job_name} gets AWS credentials outside an environment"
        for step in assumes:
            assert "aws-access-key-id" not in step["with"] and "role-to-assume" in step["with"]  # OIDC only


@pytest.mark.parametrize("name", FILES)
def test_tools_pinned_to_exact_versions(name):
    doc = load(name)
    env = doc["env"]
    assert re.fullmatch(r"3\.13\.\d+", env["PYTHON_VERSION"])
    assert re.fullmatch(r"22\.\d+\.\d+", env["NODE_VERSION"])  # jsii: 22 or 24; 20 is end of life
    assert env["TERRAFORM_VERSION"] == "1.11.4"
    assert env["PIPENV_VERSION"] == makefile_var("PIPENV_VERSION") == "2026.10.3"
    for job_name, job in doc["jobs"].items():
        for step in job["steps"]:
            given = step.get("with", {})
            if action(step) == "actions/setup-python":
                assert resolve(given["python-version"], env) == env["PYTHON_VERSION"], job_name
            if action(step) == "actions/setup-node":
                assert resolve(given["node-version"], env) == env["NODE_VERSION"], job_name
            if action(step) == "hashicorp/setup-terraform":
                assert resolve(given["terraform_version"], env) == env["TERRAFORM_VERSION"], job_name
                assert given["terraform_wrapper"] is False
            run = step.get("run", "")
            for line in run.splitlines():
                if re.search(r"pip install\b.*\bpipenv\b", line):
                    assert '"pipenv==${PIPENV_VERSION}"' in line, line
                if re.search(r"\bpipenv install\b", line):
                    assert "--deploy" in line, line  # never resolve anew in CI
        if any("pipenv run" in s.get("run", "") for s in job["steps"]):
            installs = [s["run"] for s in job["steps"] if "pipenv sync" in s.get("run", "")]
            assert installs and "pipenv==" in installs[0], job_name


def test_same_tool_versions_in_both_workflows():
    pr, deploy = load("pull-request.yml")["env"], load("deploy.yml")["env"]
    for key in ("PYTHON_VERSION", "NODE_VERSION", "TERRAFORM_VERSION", "PIPENV_VERSION"):
        assert pr[key] == deploy[key], key


@pytest.mark.parametrize("name", FILES)
def test_terraform_init_never_changes_the_lock_file(name):
    doc = load(name)
    for job_name, job in doc["jobs"].items():
        for step in job["steps"]:
            run = step.get("run", "")
            for line in run.splitlines():
                if re.search(r"\bterraform\b.*\binit\b", line):
                    assert "-lockfile=readonly" in line, f"{job_name}: {line.strip()}"
            if "review.plan_all" in run:  # plan_all runs `terraform init` itself
                assert step.get("env", {}).get("TF_CLI_ARGS_init") == "-lockfile=readonly", job_name


# ----------------------------------------------------------------------------------------------- deploy.yml

def test_deploy_triggers_and_never_cancels_an_apply():
    doc = load("deploy.yml")
    assert doc[True]["push"]["branches"] == ["main"]  # YAML 1.1 reads the key `on` as True
    assert "workflow_dispatch" in doc[True]
    assert doc["concurrency"]["cancel-in-progress"] is False
    assert doc["permissions"] == {"contents": "read"}
    assert float(doc["env"]["DEPLOY_PLAN_MAX_AGE_HOURS"]) == 24


def test_deploy_dev_is_applied_and_checked_before_prod_is_planned():
    jobs = load("deploy.yml")["jobs"]
    assert list(jobs) == DEPLOY_CHAIN
    for parent, child in zip(DEPLOY_CHAIN, DEPLOY_CHAIN[1:]):
        assert needs(jobs[child]) == [parent]
    assert {"apply-dev", "check-dev"} <= all_needs(jobs, "plan-prod")
    assert all_needs(jobs, "apply-prod") == set(DEPLOY_CHAIN[:-1])


def test_deploy_environments_and_roles():
    """Plan jobs: read-only role in <env>-plan; apply and check jobs: deploy role in dev / production."""
    jobs = load("deploy.yml")["jobs"]
    expected = {"plan-dev": ("dev-plan", "AWS_PLAN_ROLE_ARN"), "apply-dev": ("dev", "AWS_DEPLOY_ROLE_ARN"),
                "check-dev": ("dev", "AWS_DEPLOY_ROLE_ARN"),
                "plan-prod": ("production-plan", "AWS_PLAN_ROLE_ARN"),
                "apply-prod": ("production", "AWS_DEPLOY_ROLE_ARN")}
    for name, (environment, role) in expected.items():
        job = jobs[name]
        assert job["environment"] == environment, name
        assert job["permissions"] == {"contents": "read", "id-token": "write"}, name
        (creds,) = [s for s in job["steps"] if action(s) == CREDENTIALS_ACTION]
        assert creds["with"]["role-to-assume"] == f"${{{{ vars.{role} }}}}", name


def test_deploy_plan_jobs_record_and_keep_the_bundle():
    jobs = load("deploy.yml")["jobs"]
    for name, (_, bundle, stack) in PLAN_JOBS.items():
        job = jobs[name]
        assert job["env"]["BUNDLE"] == bundle and job["env"]["STACK"] == stack
        planning = step_index(job, lambda s: "review.plan_all" in s.get("run", ""))
        plan_run = job["steps"][planning]["run"]
        assert '--stacks "$STACK"' in plan_run and '--commit "$GITHUB_SHA"' in plan_run
        assert '--out "$BUNDLE/plans"' in plan_run and "--lock" not in plan_run  # read-only role: no state lock
        assert "stepfuncproject-state" not in json.dumps(job)  # the bootstrap stack is applied by hand
        recording = step_index(job, lambda s: "deploy_guard record" in s.get("run", ""))
        record = job["steps"][recording]["run"]
        for flag in ('--bundle "$BUNDLE"', '--commit "$GITHUB_SHA"', "--lock-file .terraform.lock.hcl",
                     "--stacks-dir cdktf.out/stacks"):
            assert flag in record
        uploading = step_index(job, lambda s: action(s) == "actions/upload-artifact")
        upload = job["steps"][uploading]["with"]
        assert planning < recording < uploading
        assert upload["name"] == bundle and upload["path"].split()[0] == f"{bundle}/"
        assert upload["include-hidden-files"] is True  # .terraform.lock.hcl in the stack folders
        assert upload["retention-days"] >= 7 and upload["overwrite"] is True
        assert upload["if-no-files-found"] == "error"
        assert any("GITHUB_STEP_SUMMARY" in s.get("run", "") for s in job["steps"])


def test_deploy_apply_jobs_guard_then_apply_exactly_the_saved_plan():
    jobs = load("deploy.yml")["jobs"]
    for name, (environment, bundle, plan_job) in APPLY_JOBS.items():
        job = jobs[name]
        assert job["environment"] == environment and job["env"]["BUNDLE"] == bundle
        uploaded = next(s for s in jobs[plan_job]["steps"] if action(s) == "actions/upload-artifact")
        download = step_index(job, lambda s: action(s) == "actions/download-artifact")
        assert job["steps"][download]["with"] == {"name": uploaded["with"]["name"], "path": bundle}
        assert job["steps"][download].get("continue-on-error") is True  # the guard explains a missing artifact
        guard = step_index(job, lambda s: "deploy_guard verify" in s.get("run", ""))
        verify = job["steps"][guard]
        for flag in ('--bundle "$BUNDLE"', '--commit "$GITHUB_SHA"', "--branch main", "--head-from github",
                     "--lock-file .terraform.lock.hcl"):
            assert flag in verify["run"], flag
        assert verify["env"]["GITHUB_TOKEN"] == "${{ github.token }}"
        creds = step_index(job, lambda s: action(s) == CREDENTIALS_ACTION)
        applying = step_index(job, lambda s: re.search(r"terraform .*\bapply\b", s.get("run", "")))
        assert download < guard < creds < applying  # no credentials for a refused plan
        script = job["steps"][applying]["run"]
        assert '"$BUNDLE"/stacks/*/' in script  # the uploaded synthesized folder, not a new synth
        assert 'apply -input=false -no-color "$GITHUB_WORKSPACE/$BUNDLE/plans/$stack/tfplan"' in script
        assert "-auto-approve" not in script  # a saved plan needs no approval flag
        everything = json.dumps(job)
        for forbidden in ("plan_all", "main.py", "terraform plan", "-detailed-exitcode", "pipenv"):
            assert forbidden not in everything, f"{name} must not {forbidden}"
        assert not any(action(s) == "actions/setup-node" for s in job["steps"])  # nothing synthesized here
    assert "if" not in jobs["apply-dev"]
    assert jobs["apply-prod"]["if"] == "needs.plan-prod.outputs.changes == 'true'"
    assert jobs["plan-prod"]["outputs"]["changes"] == "${{ steps.record.outputs.changes }}"
    assert any(s.get("id") == "record" and "deploy_guard record" in s["run"] for s in jobs["plan-prod"]["steps"])


def test_deploy_checks_dev_with_an_empty_replan_and_a_smoke_execution():
    job = load("deploy.yml")["jobs"]["check-dev"]
    replan = run_of(job, "-detailed-exitcode")
    assert "terraform -chdir=" in replan and '"$BUNDLE"/stacks/*/' in replan
    smoke = run_of(job, "deploy_guard smoke")
    assert "output -raw StateMachineArn-stepfuncproject" in smoke and "--window-minutes" in smoke
    steps = [s.get("run", "") for s in job["steps"]]
    assert steps.index(replan) < steps.index(smoke)


# ----------------------------------------------------------------------------------------- pull-request.yml

def test_pull_request_workflow():
    doc = load("pull-request.yml")
    assert list(doc[True]) == ["pull_request"]
    job = doc["jobs"]["review"]
    assert job["permissions"] == {"contents": "read", "id-token": "write", "pull-requests": "write"}
    assert job["environment"] == "pr-plan"
    assert job["env"]["HEAD_SHA"] == "${{ github.event.pull_request.head.sha }}"
    uses = [action(s) for s in job["steps"]]
    for name in ("actions/checkout", "actions/setup-python", "actions/setup-node", "hashicorp/setup-terraform",
                 CREDENTIALS_ACTION, "actions/upload-artifact", "actions/github-script"):
        assert name in uses
    (creds,) = [s for s in job["steps"] if action(s) == CREDENTIALS_ACTION]
    assert creds["with"]["role-to-assume"] == "${{ vars.AWS_PLAN_ROLE_ARN }}"
    runs = "\n".join(s.get("run", "") for s in job["steps"])
    assert "make test" in runs and "python -m review.plan_all" in runs
    assert runs.index("make test") < runs.index("review.plan_all")
    assert 'review.plan_all --commit "$HEAD_SHA"' in runs
    final = job["steps"][-1]
    assert action(final) == "actions/github-script"
    script = final["with"]["script"]
    assert COMMENT_MARKER in script and "updateComment" in script and "createComment" in script
    assert "review-plans/summary.md" in script
    (upload,) = [s for s in job["steps"] if action(s) == "actions/upload-artifact"]
    assert upload["with"]["name"] == "review-plans"


def test_pull_request_marks_the_old_comment_stale_before_anything_can_fail():
    job = load("pull-request.yml")["jobs"]["review"]
    checkout = step_index(job, lambda s: action(s) == "actions/checkout")
    stale = step_index(job, lambda s: "mark-stale" in s.get("with", {}).get("script", ""))
    test = step_index(job, lambda s: "make test" in s.get("run", ""))
    install = step_index(job, lambda s: "pipenv sync" in s.get("run", ""))
    plan = step_index(job, lambda s: "review.plan_all" in s.get("run", ""))
    assert stale == checkout + 1 and stale < install < test < plan
    step = job["steps"][stale]
    assert action(step) == "actions/github-script" and step["if"] == "env.SAME_REPO == 'true'"
    setup_python = step_index(job, lambda s: action(s) == "actions/setup-python")
    assert setup_python < stale  # the python that runs review.pr_comment
    script = step["with"]["script"]
    assert COMMENT_MARKER in script and "review-plans:commit=" in script
    assert "'-m', 'review.pr_comment', 'mark-stale', '--body-file'" in script
    assert "'--sha', head" in script and "'--reason', 'a newer push is being tested'" in script
    assert "process.env.HEAD_SHA" in script and "updateComment" in script and "createComment" not in script


# ---------------------------------------------------------------- the deploy's shell steps, as written, for real

def bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A `run:` step the way GitHub runs it (bash -e -o pipefail)."""
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture
def tf_workspace(tmp_path, tf_env) -> tuple[Path, dict[str, str]]:
    """A runner workspace with a synthesized stack (local backend, an asset read by relative path) and the
    committed lock file in it, as `python main.py` leaves it."""
    stack = tmp_path / "cdktf.out" / "stacks" / "stepfuncproject-dev"
    (stack / "assets").mkdir(parents=True)
    (stack / "assets" / "code.txt").write_text("version 1\n")
    (stack / "cdk.tf.json").write_text(json.dumps({
        "terraform": {"backend": {"local": {"path": str(tmp_path / "state" / "terraform.tfstate")}}},
        "resource": {"terraform_data": {"code": {"input": '${filesha256("assets/code.txt")}'}}},
        "output": {"StateMachineArn-stepfuncproject": {"value": "${terraform_data.code.output}"}},
    }))
    lock = "# This file is maintained automatically by \"terraform init\".\n# Manual edits may be lost.\n"
    (tmp_path / ".terraform.lock.hcl").write_text(lock)
    (stack / ".terraform.lock.hcl").write_text(lock)
    env = dict(tf_env, BUNDLE="deploy-dev", GITHUB_WORKSPACE=str(tmp_path), PATH=os.environ["PATH"])
    return tmp_path, env


def plan_into(workspace: Path, env: dict[str, str], out: Path) -> None:
    """What review.plan_all does for one stack (init with TF_CLI_ARGS_init, plan -out)."""
    stack = workspace / "cdktf.out" / "stacks" / "stepfuncproject-dev"
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = bash(f'terraform -chdir="{stack}" init -input=false -no-color && '
                f'terraform -chdir="{stack}" plan -input=false -no-color -lock=false -out="{out}"',
                workspace, dict(env, TF_CLI_ARGS_init="-lockfile=readonly"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_apply_and_replan_steps_with_real_terraform(tf_workspace):
    """plan -> record -> verify -> the apply step applies the bundle's tfplan in the bundle's own stack folder
    (not cdktf.out) -> the check step's replan is empty. A second saved plan made before that apply is then
    refused by Terraform itself ("Saved plan is stale"), and the step says what to do."""
    from tests.support.tools import terraform_binary

    terraform_binary()
    workspace, env = tf_workspace
    jobs = load("deploy.yml")["jobs"]
    apply_script = run_of(jobs["apply-dev"], "tfplan")
    replan_script = run_of(jobs["check-dev"], "-detailed-exitcode")
    bundle = workspace / "deploy-dev"
    tfplan = bundle / "plans" / "stepfuncproject-dev" / "tfplan"
    plan_into(workspace, env, tfplan)
    plan_into(workspace, env, workspace / "second.tfplan")
    version = deploy_guard.terraform_version()
    deploy_guard.record(bundle, environment="dev", commit="a" * 40, stacks_dir=workspace / "cdktf.out" / "stacks",
                        lock_file=workspace / ".terraform.lock.hcl", terraform_version=version)
    # cdktf.out is gone on the apply runner: only the bundle is there
    os.rename(workspace / "cdktf.out", workspace / "cdktf.out.planned")
    assert deploy_guard.verify(bundle, environment="dev", head=lambda b: "a" * 40,
                               lock_file=workspace / ".terraform.lock.hcl", terraform_version=version) == []

    applied = bash(apply_script, workspace, env)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "Apply complete! Resources: 1 added" in applied.stdout
    state = json.loads((workspace / "state" / "terraform.tfstate").read_text())
    expected = deploy_guard.sha256_file(bundle / "stacks" / "stepfuncproject-dev" / "assets" / "code.txt")
    assert state["outputs"]["StateMachineArn-stepfuncproject"]["value"] == expected

    replanned = bash(replan_script, workspace, env)
    assert replanned.returncode == 0, replanned.stdout + replanned.stderr
    assert "stepfuncproject-dev: no changes after the apply" in replanned.stdout

    os.replace(workspace / "second.tfplan", tfplan)
    stale = bash(apply_script, workspace, env)
    assert stale.returncode == 1
    assert "Saved plan is stale" in stale.stdout + stale.stderr
    assert "::error title=Apply of stepfuncproject-dev failed::" in stale.stdout


@pytest.mark.slow
def test_replan_step_fails_when_dev_did_not_converge(tf_workspace):
    from tests.support.tools import terraform_binary

    terraform_binary()
    workspace, env = tf_workspace
    replan_script = run_of(load("deploy.yml")["jobs"]["check-dev"], "-detailed-exitcode")
    bundle_stack = workspace / "deploy-dev" / "stacks"
    bundle_stack.mkdir(parents=True)
    os.rename(workspace / "cdktf.out" / "stacks" / "stepfuncproject-dev", bundle_stack / "stepfuncproject-dev")
    proc = bash(replan_script, workspace, env)  # nothing applied: the plan creates the resource
    assert proc.returncode == 1
    assert "::error title=Dev did not converge::" in proc.stdout


def test_deploy_guard_is_standard_library_only():
    """The apply jobs run it with setup-python's bare interpreter (no pipenv), before any credentials."""
    code = ("import sys, tools.deploy_guard; bad = sorted(m for m in ('boto3', 'botocore', 'yaml', 'cdktf') "
            "if m in sys.modules); print(','.join(bad))")
    proc = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); {code}"],
                          capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == ""
