"""review.plan_all end to end (a stand-in CDKTF app whose main.py writes cdktf.out/stacks/*), the commit the
summary names, and review.pr_comment (marking an older plan comment stale)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from review import plan_all as pa
from review import plan_summary as ps
from review import pr_comment as pc
from tests.review import plans

ROOT = Path(__file__).resolve().parents[2]
slow = pytest.mark.slow
SHA = "0123456789abcdef0123456789abcdef01234567"
NEWER = "fedcba9876543210fedcba9876543210fedcba98"

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


@pytest.fixture(autouse=True)
def no_ci_commit(monkeypatch):
    """The tests say which commit is planned: none of a CI run's own variables count."""
    for var in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_SHA", "GITHUB_EVENT_NAME", "PLAN_COMMIT"):
        monkeypatch.delenv(var, raising=False)


def plan_all(app: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in env.items() if k != "PLAN_COMMIT"} | {"PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "review.plan_all", *args], cwd=app, env=env,
                          capture_output=True, text=True, timeout=600)


def normalize(text: str) -> str:
    """The Terraform version and the time planned are the machine-dependent parts of a summary."""
    text = re.sub(r"Terraform \d+\.\d+\.\d+", "Terraform X.Y.Z", text)
    return re.sub(r"\(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\)", "(YYYY-MM-DDTHH:MM:SSZ)", text)


def two_stacks() -> dict[str, dict]:
    return {"stepfuncproject-dev": stack("dev", 2, {"s3": S3_BACKEND}),
            "stepfuncproject-prod": stack("prod", 3, {"s3": dict(S3_BACKEND, key="prod/terraform.tfstate")})}


@slow
def test_no_backend_plans_every_stack(tmp_path, tf_env, golden):
    app = make_app(tmp_path / "app", two_stacks())
    proc = plan_all(app, tf_env, "--no-backend", "--commit", SHA)
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
    assert summary.startswith(f"<!-- review-plans:summary -->\n<!-- review-plans:commit={SHA} -->\n\n")
    assert re.search(r"^Planned at commit `0123456789ab` \(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\)\.$", summary, re.M)
    assert summary.index("Planned at commit") < summary.index("| Stack |")  # near the top
    assert pc.comment_commit(summary) == SHA
    assert len(summary) <= ps.GITHUB_COMMENT_LIMIT
    golden("summary_no_backend.md", normalize(summary))


@slow
def test_env_switch_stack_selection_and_no_synth(tmp_path, tf_env):
    app = make_app(tmp_path / "app", two_stacks())
    subprocess.run([sys.executable, "main.py"], cwd=app, check=True)
    (app / "main.py").write_text("raise SystemExit('must not run with --no-synth')\n")
    head = git_commit(app)
    proc = plan_all(app, dict(tf_env, TF_NO_BACKEND="1"), "--no-synth", "--stacks", "stepfuncproject-prod",
                    "--out", "plans")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in (app / "plans").iterdir()) == ["stepfuncproject-prod", "summary.md"]
    assert "(no backend)" in proc.stdout
    summary = (app / "plans/summary.md").read_text()  # no --commit, no env: the checkout's HEAD
    assert f"<!-- review-plans:commit={head} -->" in summary and f"Planned at commit `{head[:12]}` (" in summary


@slow
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


@slow
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


@slow
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


@slow
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


# --------------------------------------------------------------------------- the commit planned

def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid",
                           "-c", "commit.gpgsign=false", *args], cwd=cwd, check=True, capture_output=True,
                          text=True, env=dict(os.environ, GIT_CONFIG_GLOBAL=os.devnull,
                                              GIT_CONFIG_NOSYSTEM="1")).stdout.strip()


def git_commit(repo: Path, message: str = "c") -> str:
    if not (repo / ".git").exists():
        git(repo, "init", "-q", "-b", "main")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def test_commit_precedence(tmp_path):
    head = git_commit(tmp_path)
    env = {"PLAN_COMMIT": NEWER, "GITHUB_SHA": "1" * 40}
    assert pa.resolve_commit(SHA, tmp_path, env).sha == SHA  # --commit first
    assert pa.resolve_commit(None, tmp_path, env).sha == NEWER  # then the PR head
    assert pa.resolve_commit(None, tmp_path, {"GITHUB_SHA": "1" * 40}).sha == "1" * 40
    found = pa.resolve_commit(None, tmp_path, {})
    assert found.sha == head and found.checked_out is None  # then the checkout
    assert pa.resolve_commit(head[:8], tmp_path, {}).sha == head  # abbreviations and names through git
    assert pa.resolve_commit("HEAD", tmp_path, {}).sha == head
    with pytest.raises(ValueError, match="not a commit"):
        pa.resolve_commit("no-such-branch", tmp_path, {})
    assert pa.resolve_commit(None, tmp_path, {"PLAN_COMMIT": "garbage"}).sha == head  # ignored, with a warning


def test_outside_a_repository(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # git looks no further up
    assert pa.resolve_commit(None, tmp_path, {}).sha is None
    assert pa.resolve_commit(None, tmp_path, {"PLAN_COMMIT": SHA[:10]}).sha == SHA[:10]  # kept as given


def test_pull_request_merge_commit_is_named_too(tmp_path):
    """actions/checkout plans a pull request's merge with its base: the line names both commits."""
    base = git_commit(tmp_path, "base")
    git(tmp_path, "checkout", "-q", "-b", "topic")
    topic = git_commit(tmp_path, "topic")
    git(tmp_path, "checkout", "-q", "main")
    git_commit(tmp_path, "main moves on")
    git(tmp_path, "merge", "-q", "--no-ff", "-m", "merge", "topic")
    merge = git(tmp_path, "rev-parse", "HEAD")
    assert base != merge
    found = pa.resolve_commit(None, tmp_path, {"PLAN_COMMIT": topic})
    assert (found.sha, found.checked_out, found.merge) == (topic, merge, True)
    assert f"Planned at commit `{topic[:12]}` (" in found.line()
    assert found.line().endswith(f", merged with the base branch as `{merge[:12]}`.")


def test_commit_line_links_to_github(monkeypatch):
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.com")
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/stepfuncproject")
    from datetime import datetime, timezone
    line = pa.PlanCommit(SHA, datetime(2026, 5, 1, 12, 30, 5, tzinfo=timezone.utc)).line()
    assert line == (f"Planned at commit [`{SHA[:12]}`](https://github.com/acme/stepfuncproject/commit/{SHA}) "
                    "(2026-05-01T12:30:05Z).")
    assert pa.PlanCommit(None, datetime(2026, 5, 1, tzinfo=timezone.utc)).line() == \
        "Planned at an unknown commit (2026-05-01T00:00:00Z)."


def test_summary_markers_without_terraform():
    from datetime import datetime, timezone
    result = pa.StackResult("stepfuncproject-dev", ok=True, counts=ps._count([]), plan={"format_version": "1.2"})
    commit = pa.PlanCommit(SHA, datetime(2026, 5, 1, tzinfo=timezone.utc))
    text = pa.build_summary([result], no_backend=False, commit=commit)
    assert text.splitlines()[:5] == [pa.COMMENT_MARKER, f"<!-- review-plans:commit={SHA} -->", "",
                                      "## Terraform plan review", ""]
    assert text.splitlines()[5] == "Planned at commit `0123456789ab` (2026-05-01T00:00:00Z)."
    unknown = pa.build_summary([result], no_backend=False, commit=pa.PlanCommit(None, commit.planned_at))
    assert "review-plans:commit=" not in unknown and "Planned at an unknown commit" in unknown
    assert pc.comment_commit(unknown) is None


def test_cli_rejects_a_bad_commit(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "review.plan_all", "--no-synth", "--app-dir", str(tmp_path),
                           "--commit", "not-a-commit"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--commit not-a-commit: not a commit" in proc.stderr


# --------------------------------------------------------------------------- stale comments (review.pr_comment)

def comment(sha: str | None = SHA) -> str:
    return (pc.COMMENT_MARKER + (f"\n<!-- review-plans:commit={sha} -->" if sha else "")
            + "\n\n## Terraform plan review\n\nPlanned at commit `x`.\n\n| Stack | ... |\n")


def test_comment_commit():
    assert pc.comment_commit(comment()) == SHA
    assert pc.comment_commit(comment(SHA.upper())) == SHA
    assert pc.comment_commit(comment(None)) is None
    assert pc.comment_commit("") is None


def test_mark_stale_prepends_one_clear_banner():
    body = comment()
    marked = pc.mark_stale(body, NEWER, "its run failed before planning")
    assert marked.endswith(body)  # the old plan stays readable below the banner
    banner = marked[: -len(body)]
    assert banner.startswith(pc.STALE_BEGIN + "\n> [!WARNING]\n")
    assert (f"**This plan is stale.** It was made for commit `{SHA[:12]}`; commit `{NEWER[:12]}` was pushed since "
            "and has not been planned (its run failed before planning). **Do not approve on this plan.**") in banner
    assert pc.comment_commit(marked) == SHA  # still the commit it was planned at
    assert pc.COMMENT_MARKER in marked  # the workflow still finds the comment


def test_mark_stale_is_idempotent_and_replaces_the_banner():
    once = pc.mark_stale(comment(), NEWER, "yet")
    assert pc.mark_stale(once, NEWER, "yet") == once
    newest = "ab" * 20
    again = pc.mark_stale(once, newest, "its run failed before planning")
    assert again.count(pc.STALE_BEGIN) == 1 and again.count("[!WARNING]") == 1
    assert f"commit `{newest[:12]}` was pushed since" in again and NEWER[:12] not in again
    assert again.endswith(comment())


def test_mark_stale_leaves_the_current_plan_alone():
    body = comment()
    assert pc.mark_stale(body, SHA, "yet") is body
    assert pc.mark_stale(body, SHA.upper(), "yet") == body
    assert pc.mark_stale(body, SHA[:12], "yet") == body  # an abbreviation of the same commit


def test_mark_stale_without_a_commit_marker_and_bad_input():
    marked = pc.mark_stale(comment(None), NEWER, "")
    assert "It was made for an older commit (the comment names none)" in marked
    assert "has not been planned. **Do not approve" in marked
    assert "-->" not in pc.mark_stale(comment(), NEWER, "evil --> <!--").split(pc.STALE_END)[0].split("\n", 1)[1]
    with pytest.raises(ValueError):
        pc.mark_stale(comment(), "HEAD", "yet")


def test_pr_comment_cli(tmp_path):
    body_file = tmp_path / "body.md"
    body_file.write_text(comment())

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        # As the workflow runs it: a bare interpreter, no project dependencies needed.
        return subprocess.run([sys.executable, "-S", "-m", "review.pr_comment", *args], cwd=ROOT, input=stdin,
                              capture_output=True, text=True, timeout=60)

    proc = run("mark-stale", "--body-file", str(body_file), "--sha", NEWER, "--reason", "a newer push is being tested")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == pc.mark_stale(comment(), NEWER, "a newer push is being tested")
    assert "(a newer push is being tested)" in proc.stdout
    same = run("mark-stale", "--body-file", "-", "--sha", SHA, "--reason", "x", stdin=comment())
    assert same.returncode == 0 and same.stdout == comment()
    assert run("commit", "--body-file", str(body_file)).stdout == SHA + "\n"
    body_file.write_text("no markers")
    assert run("commit", "--body-file", str(body_file)).returncode == 1
    bad = run("mark-stale", "--body-file", str(body_file), "--sha", "nope", "--reason", "x")
    assert bad.returncode == 2 and "not a commit sha" in bad.stderr


def test_shallow_pull_request_checkout_is_the_merge(tmp_path):
    """actions/checkout fetches one commit: no parents to compare, the event says it is the merge."""
    merge = git_commit(tmp_path)
    found = pa.resolve_commit(SHA, tmp_path, {"GITHUB_EVENT_NAME": "pull_request"})
    assert (found.sha, found.checked_out, found.merge) == (SHA, merge, True)
    other = pa.resolve_commit(SHA, tmp_path, {"GITHUB_EVENT_NAME": "push"})
    assert other.line().endswith(f"; the checked-out tree is commit `{merge[:12]}`.")
