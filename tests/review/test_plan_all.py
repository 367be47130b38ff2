"""review.plan_all end to end: a stand-in CDKTF app whose main.py writes cdktf.out/stacks/*."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from review import plan_summary as ps
from tests.review import plans

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

S3_BACKEND = {"bucket": "stepfuncproject-tfstate", "key": "dev/terraform.tfstate", "region": "us-east-1",
              "dynamodb_table": "stepfuncproject-tflock", "use_lockfile": True, "encrypt": True}


def stack(env_name: str, functions: int, backend: dict | None = None) -> dict:
    doc = {
        "//": {"metadata": {"stackName": f"stepfuncproject-{env_name}", "version": "0.21.0"}},
        "resource": {"terraform_data": {
            "settings": {"input": {"environment": env_name, "memory_mb": 128}},
            "function": {"count": functions, "input": f"{env_name}-handler-${{count.index}}"},
        }},
        "output": {"environment": {"value": "${terraform_data.settings.output.environment}"}},
    }
    if backend is not None:
        doc["terraform"] = {"backend": backend}
    return doc


def make_app(root: Path, stacks: dict[str, dict], fail: bool = False) -> Path:
    """A folder with a main.py that 'synthesizes' the given stacks like cdktf does."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "main.py").write_text(
        "import json, pathlib, sys\n"
        f"STACKS = json.loads({json.dumps(json.dumps(stacks))})\n"
        f"if {fail!r}:\n    sys.exit('synth exploded')\n"
        "for name, doc in STACKS.items():\n"
        "    d = pathlib.Path('cdktf.out/stacks') / name\n"
        "    d.mkdir(parents=True, exist_ok=True)\n"
        "    (d / 'cdk.tf.json').write_text(json.dumps(doc, indent=2))\n")
    return root


def plan_all(app: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    env = dict(env, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "review.plan_all", *args], cwd=app, env=env,
                          capture_output=True, text=True, timeout=600)


def normalize(text: str) -> str:
    """The Terraform version is the only machine-dependent part of a summary."""
    return re.sub(r"Terraform \d+\.\d+\.\d+", "Terraform X.Y.Z", text)


def two_stacks() -> dict[str, dict]:
    return {"stepfuncproject-dev": stack("dev", 2, {"s3": S3_BACKEND}),
            "stepfuncproject-prod": stack("prod", 3, {"s3": dict(S3_BACKEND, key="prod/terraform.tfstate")})}


def test_no_backend_plans_every_stack(tmp_path, tf_env, golden):
    app = make_app(tmp_path / "app", two_stacks())
    proc = plan_all(app, tf_env, "--no-backend")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = app / "review-plans"
    for name, creates in (("stepfuncproject-dev", 3), ("stepfuncproject-prod", 4)):
        d = out / name
        assert (d / "tfplan").stat().st_size > 0
        plan = json.loads((d / "plan.json").read_text())
        assert ps.count_actions(plan)["create"] == creates
        assert f"Plan: {creates} to add, 0 to change, 0 to destroy." in (d / "plan.txt").read_text()
        md = (d / "plan.md").read_text()
        assert md.startswith(f"## Terraform plan: `{name}`")
        assert f"full plan: `review-plans/{name}/plan.txt`" in md
        # cdktf.out is left as synthesized: the override lives in a temporary copy.
        assert sorted(p.name for p in (app / "cdktf.out/stacks" / name).iterdir()) == ["cdk.tf.json"]
    summary = (out / "summary.md").read_text()
    assert summary.startswith("<!-- review-plans:summary -->\n")
    assert len(summary) <= ps.GITHUB_COMMENT_LIMIT
    golden("summary_no_backend.md", normalize(summary))


def test_env_switch_stack_selection_and_no_synth(tmp_path, tf_env):
    app = make_app(tmp_path / "app", two_stacks())
    subprocess.run([sys.executable, "main.py"], cwd=app, check=True)
    (app / "main.py").write_text("raise SystemExit('must not run with --no-synth')\n")
    proc = plan_all(app, dict(tf_env, TF_NO_BACKEND="1"), "--no-synth", "--stacks", "stepfuncproject-prod",
                    "--out", "plans")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in (app / "plans").iterdir()) == ["stepfuncproject-prod", "summary.md"]
    assert "(no backend)" in proc.stdout


def test_failed_stack_is_reported_and_exit_nonzero(tmp_path, tf_env):
    broken = stack("dev", 1)
    broken["output"]["oops"] = {"value": "${terraform_data.missing.output}"}
    app = make_app(tmp_path / "app", {"stepfuncproject-dev": broken,
                                      "stepfuncproject-prod": stack("prod", 1)})
    proc = plan_all(app, tf_env, "--no-backend")
    assert proc.returncode == 1
    assert "1 stack(s) failed: stepfuncproject-dev" in proc.stderr
    assert "Reference to undeclared resource" in proc.stderr
    dev = app / "review-plans/stepfuncproject-dev"
    assert "`terraform plan` failed" in (dev / "error.txt").read_text()
    assert not (dev / "plan.md").exists()
    summary = (app / "review-plans/summary.md").read_text()
    assert "| `stepfuncproject-dev` | – | – | – | – | – | – | **failed** |" in summary
    assert "**Planning failed.** Log: `review-plans/stepfuncproject-dev/terraform.log`" in summary
    assert "### Terraform plan: `stepfuncproject-dev`" in summary
    assert "### `stepfuncproject-prod`" in summary  # the healthy stack is still summarized


def test_synth_failure_and_bad_arguments(tmp_path, tf_env):
    app = make_app(tmp_path / "app", two_stacks(), fail=True)
    proc = plan_all(app, tf_env)
    assert proc.returncode == 2 and "synth failed" in proc.stderr
    app = make_app(tmp_path / "app2", two_stacks())
    proc = plan_all(app, tf_env, "--stacks", "nope")
    assert proc.returncode == 2 and "unknown stack(s): nope" in proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = plan_all(empty, tf_env, "--no-synth")
    assert proc.returncode == 2 and "no stacks in" in proc.stderr


def test_summary_budget_splits_large_stacks(tmp_path, tf_env):
    stacks = {f"stepfuncproject-{e}": stack(e, 1100) for e in ("dev", "prod")}
    stacks["stepfuncproject-state"] = stack("state", 1, {"local": {"path": "terraform.tfstate"}})
    app = make_app(tmp_path / "app", stacks)
    proc = plan_all(app, tf_env)  # local state only: no backend credentials needed
    assert proc.returncode == 0, proc.stderr
    summary = (app / "review-plans/summary.md").read_text()
    assert len(summary) <= ps.GITHUB_COMMENT_LIMIT
    assert summary.count("Summary truncated to fit a GitHub comment") == 2
    assert "- `terraform_data.settings`" in summary  # the small stack is complete
    assert "| `stepfuncproject-state` | 2 | 0 | 0 | 0 | 0 | 0 | changes (local state) |" in summary


@pytest.fixture(scope="module")
def moto_s3():
    with plans.MotoServer() as server:
        import boto3

        url = f"http://127.0.0.1:{server.port}"
        kw = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id="test",
                  aws_secret_access_key="test")
        boto3.client("s3", **kw).create_bucket(Bucket=S3_BACKEND["bucket"])
        boto3.client("dynamodb", **kw).create_table(
            TableName=S3_BACKEND["dynamodb_table"], BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}])
        yield url


def test_s3_backend_plan_apply_saved_plan_replan(tmp_path, tf_env, moto_s3):
    """The deploy flow: plan against the S3 backend, apply the saved tfplan, plan again: no changes."""
    backend = dict(S3_BACKEND, access_key="test", secret_key="test", skip_credentials_validation=True,
                   skip_requesting_account_id=True, skip_metadata_api_check=True, use_path_style=True,
                   endpoints={"s3": moto_s3, "dynamodb": moto_s3, "sts": moto_s3})
    app = make_app(tmp_path / "app", {"stepfuncproject-dev": stack("dev", 2, {"s3": backend})})
    proc = plan_all(app, tf_env, "--lock")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stack_dir = app / "cdktf.out/stacks/stepfuncproject-dev"
    apply = subprocess.run(["terraform", f"-chdir={stack_dir}", "apply", "-input=false", "-no-color",
                            str(app / "review-plans/stepfuncproject-dev/tfplan")],
                           env=tf_env, capture_output=True, text=True, timeout=300)
    assert apply.returncode == 0, apply.stdout + apply.stderr
    proc = plan_all(app, tf_env, "--no-synth")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    md = (app / "review-plans/stepfuncproject-dev/plan.md").read_text()
    assert "**No changes.**" in md
    assert "| `stepfuncproject-dev` | 0 | 0 | 0 | 0 | 0 | 3 | no changes |" in (
        app / "review-plans/summary.md").read_text()
    assert not os.path.exists(stack_dir / "terraform.tfstate")  # the state went to S3
