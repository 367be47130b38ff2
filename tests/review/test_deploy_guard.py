"""tools/deploy_guard.py: the manifest written at plan time, every refusal before an apply, the smoke check.

No network: main's head comes from `git ls-remote` against a local repository with two commits, or from a
fake GitHub API answer.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import urllib.error
from pathlib import Path

import pytest

from tools import deploy_guard as guard

NOW = dt.datetime(2026, 11, 2, 12, 0, tzinfo=dt.timezone.utc)
STACK = "stepfuncproject-dev"
LOCK_TEXT = '# This file is maintained automatically by "terraform init".\nprovider "registry.terraform.io/hashicorp/aws" {\n  version = "5.100.0"\n}\n'
TF = "1.11.4"


def git(cwd: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.com", GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture(scope="module")
def repos(tmp_path_factory) -> dict:
    """An "origin" with two commits on main, and a clone of it (the runner's checkout)."""
    base = tmp_path_factory.mktemp("git")
    origin = base / "origin"
    origin.mkdir()
    git(origin, "init", "-q", "-b", "main")
    (origin / "a.txt").write_text("first\n")
    git(origin, "add", "a.txt")
    git(origin, "commit", "-q", "-m", "first")
    first = git(origin, "rev-parse", "HEAD")
    (origin / "a.txt").write_text("second\n")
    git(origin, "commit", "-q", "-am", "second")
    second = git(origin, "rev-parse", "HEAD")
    git(base, "clone", "-q", str(origin), "checkout")
    return {"checkout": base / "checkout", "first": first, "second": second}


def make_bundle(tmp_path: Path, *, commit: str, environment: str = "dev", now: dt.datetime = NOW,
                plan: dict | None = None, version: str = TF) -> tuple[Path, Path]:
    """A synthesized stack folder (with .terraform to be left out), a saved plan, then `record`."""
    stacks = tmp_path / "cdktf.out" / "stacks"
    folder = stacks / STACK
    (folder / "assets" / "fn").mkdir(parents=True)
    (folder / "cdk.tf.json").write_text('{"resource": {}}\n')
    (folder / "assets" / "fn" / "fn.zip").write_bytes(b"PK\x03\x04zip")
    (folder / guard.LOCK_FILE).write_text(LOCK_TEXT)
    (folder / ".terraform" / "providers").mkdir(parents=True)
    (folder / ".terraform" / "providers" / "big").write_bytes(b"x" * 100)
    root_lock = tmp_path / guard.LOCK_FILE
    root_lock.write_text(LOCK_TEXT)
    bundle = tmp_path / f"deploy-{environment}"
    plans = bundle / "plans" / STACK
    plans.mkdir(parents=True)
    (plans / "tfplan").write_bytes(b"saved plan bytes")
    if plan is not None:
        (plans / "plan.json").write_text(json.dumps(plan))
    guard.record(bundle, environment=environment, commit=commit, stacks_dir=stacks, lock_file=root_lock,
                 terraform_version=version, now=now, run={"id": "42"})
    return bundle, root_lock


def fixed_head(sha: str):
    return lambda branch: sha


def check(bundle: Path, root_lock: Path, head, **kw) -> list[guard.Refusal]:
    kw.setdefault("environment", "dev")
    kw.setdefault("terraform_version", TF)
    kw.setdefault("now", NOW + dt.timedelta(hours=1))
    return guard.verify(bundle, head=head, lock_file=root_lock, **kw)


def reasons(refusals: list[guard.Refusal]) -> list[str]:
    return [r.reason for r in refusals]


# ------------------------------------------------------------------------------------------------- record

def test_record_writes_the_manifest_and_copies_the_stack_without_dot_terraform(tmp_path, repos):
    bundle, root_lock = make_bundle(tmp_path, commit=repos["second"])
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["commit"] == repos["second"] and manifest["environment"] == "dev"
    assert manifest["planned_at"] == "2026-11-02T12:00:00Z" and manifest["terraform_version"] == TF
    assert manifest["lock_sha256"] == guard.sha256_file(root_lock)
    entry = manifest["stacks"][STACK]
    assert entry["tfplan_sha256"] == guard.sha256_file(bundle / "plans" / STACK / "tfplan")
    assert sorted(entry["files"]) == [".terraform.lock.hcl", "assets/fn/fn.zip", "cdk.tf.json"]
    assert entry["changes"] is True  # no plan.json: unknown counts as a change
    copied = bundle / "stacks" / STACK
    assert (copied / ".terraform.lock.hcl").read_text() == LOCK_TEXT and not (copied / ".terraform").exists()
    assert manifest["run"] == {"id": "42"}


@pytest.mark.parametrize("plan, changes", [
    ({"resource_changes": [{"change": {"actions": ["no-op"]}}, {"change": {"actions": ["read"]}}]}, False),
    ({"resource_changes": [{"change": {"actions": ["update"]}}]}, True),
    ({"resource_changes": [], "output_changes": {"x": {"actions": ["create"]}}}, True),
    ({"resource_changes": [], "output_changes": {"x": {"actions": ["no-op"]}}}, False),
])
def test_record_notes_whether_the_plan_changes_anything(tmp_path, repos, plan, changes):
    bundle, _ = make_bundle(tmp_path, commit=repos["second"], plan=plan)
    assert json.loads((bundle / "manifest.json").read_text())["stacks"][STACK]["changes"] is changes


def test_record_refuses_a_stack_folder_without_lock_file(tmp_path, repos):
    bundle, _ = make_bundle(tmp_path, commit=repos["second"])
    (tmp_path / "cdktf.out" / "stacks" / STACK / guard.LOCK_FILE).unlink()
    with pytest.raises(guard.GuardError, match="lock.hcl is missing"):
        guard.record(bundle, environment="dev", commit=repos["second"], stacks_dir=tmp_path / "cdktf.out" / "stacks",
                     lock_file=None, terraform_version=TF)


def test_record_refuses_a_stack_lock_file_other_than_the_repositorys(tmp_path, repos):
    bundle, root_lock = make_bundle(tmp_path, commit=repos["second"])
    root_lock.write_text(LOCK_TEXT + "# edited\n")
    with pytest.raises(guard.GuardError, match="differs"):
        guard.record(bundle, environment="dev", commit=repos["second"], stacks_dir=tmp_path / "cdktf.out" / "stacks",
                     lock_file=root_lock, terraform_version=TF)


def test_record_needs_a_saved_plan_and_a_full_sha(tmp_path, repos):
    with pytest.raises(guard.GuardError, match="no saved plan"):
        guard.record(tmp_path / "empty", environment="dev", commit=repos["second"], stacks_dir=tmp_path,
                     lock_file=None, terraform_version=TF)
    with pytest.raises(guard.GuardError, match="full 40-character"):
        guard.record(tmp_path, environment="dev", commit="abc123", stacks_dir=tmp_path, lock_file=None,
                     terraform_version=TF)


# ------------------------------------------------------------------------------------------ verify: accept

def test_accepts_a_fresh_plan_of_mains_head_via_git_ls_remote(tmp_path, repos):
    bundle, root_lock = make_bundle(tmp_path, commit=repos["second"])
    head = guard.git_head("origin", repos["checkout"])
    assert head("main") == repos["second"]
    assert check(bundle, root_lock, head, expected_commit=repos["second"]) == []


def test_cli_accepts_and_refuses_with_error_annotations(tmp_path, repos, capsys, monkeypatch):
    bundle, root_lock = make_bundle(tmp_path, commit=repos["second"], now=guard.utc_now())
    monkeypatch.delenv(guard.MAX_AGE_ENV, raising=False)
    common = ["verify", "--bundle", str(bundle), "--environment", "dev", "--head-from", "git",
              "--repo-dir", str(repos["checkout"]), "--lock-file", str(root_lock), "--terraform-version", TF]
    assert guard.main(common + ["--commit", repos["second"]]) == 0
    assert "accepted" in capsys.readouterr().out

    root_lock.write_text(LOCK_TEXT + "# another provider\n")
    assert guard.main(common) == 1
    out = capsys.readouterr().out
    assert "::error title=Deploy refused (lock)::" in out and "nothing was applied" in out


# ----------------------------------------------------------------------------------- verify: each refusal

def test_refuses_when_main_moved_past_the_planned_commit(tmp_path, repos):
    bundle, root_lock = make_bundle(tmp_path, commit=repos["first"])
    refusals = check(bundle, root_lock, guard.git_head("origin", repos["checkout"]))
    assert reasons(refusals) == ["moved"]
    message = refusals[0].message
    assert repos["first"][:12] in message and repos["second"][:12] in message
    assert "main has moved past the planned commit" in message and "Nothing was applied" in message
    assert "queued" in message  # what to do: the newer run deploys it


def test_refuses_when_mains_head_cannot_be_read(tmp_path, repos):
    bundle, root_lock = make_bundle(tmp_path, commit=repos["second"])
    refusals = check(bundle, root_lock, guard.git_head("no-such-remote", repos["checkout"]))
    assert reasons(refusals) == ["head"] and "Cannot tell whether main moved" in refusals[0].message


def test_refuses_a_plan_older_than_the_maximum_age(tmp_path, repos, monkeypatch):
    bundle, root_lock = make_bundle(tmp_path, commit=repos["second"])
    head = fixed_head(repos["second"])
    assert check(bundle, root_lock, head, now=NOW + dt.timedelta(hours=23, minutes=59)) == []
    refusals = check(bundle, root_lock, head, now=NOW + dt.timedelta(hours=30))
    assert reasons(refusals) == ["age"]
    assert "30.0 h old" in refusals[0].message and "older than 24 h" in refusals[0].message
    assert "re-run the job" in refusals[0].message
    # configurable: flag, else environment variable
    assert reasons(check(bundle, root_lock, head, now=NOW + dt.timedelta(hours=3), max_age_hours=2)) == ["age"]
    monkeypatch.setenv(guard.MAX_AGE_ENV, "2")
    assert guard._max_age(None) == 2 and guard._max_age("48") == 48
    monkeypatch.setenv(guard.MAX_AGE_ENV, "soon")
    with pytest.raises(guard.GuardError):
        guard._max_age(None)


def test_refuses_when_the_lock_file_differs_from_the_one_planned_with(tmp_path, repos):
    bundle, root_lock = make_bundle(tmp_path, commit=repos["second"])
    head = fixed_head(repos["second"])
    root_lock.write_text(LOCK_TEXT.replace("5.100.0", "6.0.0"))
    refusals = check(bundle, root_lock, head)
    assert reasons(refusals) == ["lock"] and "differs from the one the plan was made with" in refusals[0].message
    root_lock.write_text(LOCK_TEXT)
    (bundle / "stacks" / STACK / guard.LOCK_FILE).write_text(LOCK_TEXT.replace("5.100.0", "6.0.0"))
    # the stack folder's lock file is what `terraform init -lockfile=readonly` reads: refused twice over
    assert set(reasons(check(bundle, root_lock, head))) == {"lock", "tampered"}


def test_refuses_a_missing_or_expired_artifact(tmp_path, repos):
    head = fixed_head(repos["second"])
    refusals = check(tmp_path / "deploy-dev", tmp_path / guard.LOCK_FILE, head)
    assert reasons(refusals) == ["missing"]
    message = refusals[0].message
    assert "No saved plan for dev" in message and "expired" in message and "Plan again" in message

    bundle, root_lock = make_bundle(tmp_path / "x", commit=repos["second"])
    (bundle / "plans" / STACK / "tfplan").unlink()
    refusals = check(bundle, root_lock, head)
    assert reasons(refusals) == ["incomplete"] and "tfplan is missing" in refusals[0].message

    (bundle / "manifest.json").write_text("{not json")
    assert reasons(check(bundle, root_lock, head)) == ["missing"]


def test_refuses_a_plan_or_stack_folder_changed_after_planning(tmp_path, repos):
    bundle, root_lock = make_bundle(tmp_path, commit=repos["second"])
    head = fixed_head(repos["second"])
    (bundle / "plans" / STACK / "tfplan").write_bytes(b"another plan")
    assert reasons(check(bundle, root_lock, head)) == ["tampered"]
    (bundle / "plans" / STACK / "tfplan").write_bytes(b"saved plan bytes")
    (bundle / "stacks" / STACK / "assets" / "fn" / "fn.zip").write_bytes(b"other code")
    refusals = check(bundle, root_lock, head)
    assert reasons(refusals) == ["tampered"] and "assets/fn/fn.zip" in refusals[0].message
    (bundle / "stacks" / STACK / "assets" / "fn" / "fn.zip").write_bytes(b"PK\x03\x04zip")
    (bundle / "stacks" / STACK / ".terraform").mkdir()  # init's own folder does not count
    (bundle / "stacks" / STACK / ".terraform" / "x").write_text("x")
    assert check(bundle, root_lock, head) == []


def test_refuses_another_terraform_version_environment_or_commit(tmp_path, repos):
    bundle, root_lock = make_bundle(tmp_path, commit=repos["second"])
    head = fixed_head(repos["second"])
    assert reasons(check(bundle, root_lock, head, terraform_version="1.12.0")) == ["terraform"]
    assert reasons(check(bundle, root_lock, head, terraform_version=None)) == ["terraform"]
    assert reasons(check(bundle, root_lock, head, environment="prod")) == ["environment"]
    assert reasons(check(bundle, root_lock, head, expected_commit=repos["first"])) == ["commit"]


def test_every_reason_is_reported_at_once(tmp_path, repos):
    bundle, root_lock = make_bundle(tmp_path, commit=repos["first"])
    root_lock.write_text("other")
    refusals = check(bundle, root_lock, guard.git_head("origin", repos["checkout"]),
                     now=NOW + dt.timedelta(days=3))
    assert reasons(refusals) == ["lock", "age", "moved"]
    for refusal in refusals:
        line = refusal.annotation()
        assert line.startswith("::error title=Deploy refused (") and "\n" not in line


# --------------------------------------------------------------------------------------- GitHub API head

class FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_github_api_head(repos):
    seen = {}

    def opener(request, timeout):
        seen["url"], seen["auth"] = request.full_url, request.get_header("Authorization")
        return FakeResponse(json.dumps({"ref": "refs/heads/main", "object": {"sha": repos["second"]}}).encode())

    head = guard.github_head("owner/repo", "tok", "https://api.example", opener=opener)
    assert head("main") == repos["second"]
    assert seen == {"url": "https://api.example/repos/owner/repo/git/ref/heads/main", "auth": "Bearer tok"}

    def denied(request, timeout):
        raise urllib.error.HTTPError(request.full_url, 404, "Not Found", {}, None)

    with pytest.raises(guard.GuardError, match="HTTP 404"):
        guard.github_head("owner/repo", "tok", opener=denied)("main")


def test_github_head_needs_token_and_repository(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    assert guard.main(["verify", "--bundle", str(tmp_path), "--environment", "dev", "--head-from", "github",
                       "--terraform-version", TF]) == 2
    assert "needs GITHUB_REPOSITORY and GITHUB_TOKEN" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------- smoke

class FakeStepFunctions:
    def __init__(self, statuses: list[dict]):
        self.statuses = statuses
        self.calls: list[tuple[str, dict]] = []

    def start_execution(self, **kw):
        self.calls.append(("start", kw))
        return {"executionArn": "arn:aws:states:eu-west-2:1:execution:sm:" + kw["name"]}

    def describe_execution(self, **kw):
        self.calls.append(("describe", kw))
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]

    def stop_execution(self, **kw):
        self.calls.append(("stop", kw))


def run_smoke(client, timeout=60.0):
    lines, clock = [], [0.0]

    def sleep(seconds):
        clock[0] += seconds

    code = guard.smoke(client, "arn:sm", payload=guard.smoke_input(NOW, 15), name="deploy-smoke-1",
                       timeout_seconds=timeout, poll_seconds=10, sleep=sleep, clock=lambda: clock[0],
                       out=lines.append)
    return code, "\n".join(lines)


def test_smoke_input_is_a_small_explicit_window():
    assert guard.smoke_input(NOW.replace(microsecond=123), 15) == {
        "since": "2026-11-02T11:45:00Z", "until": "2026-11-02T12:00:00Z"}
    name = guard.smoke_name({"GITHUB_RUN_ID": "123", "GITHUB_RUN_ATTEMPT": "2"}, NOW)
    assert name == "deploy-smoke-123-2-20261102T120000Z" and len(name) <= 80


def test_smoke_waits_for_success():
    client = FakeStepFunctions([{"status": "RUNNING"}, {"status": "RUNNING"}, {"status": "SUCCEEDED", "output": "{}"}])
    code, out = run_smoke(client)
    assert code == 0 and "succeeded" in out
    start = client.calls[0][1]
    assert start["stateMachineArn"] == "arn:sm" and json.loads(start["input"])["until"] == "2026-11-02T12:00:00Z"


def test_smoke_fails_on_a_failed_execution_and_stops_one_that_runs_too_long():
    code, out = run_smoke(FakeStepFunctions([{"status": "FAILED", "error": "database_error", "cause": "boom"}]))
    assert code == 1 and "::error title=Smoke execution FAILED::" in out and "database_error: boom" in out
    client = FakeStepFunctions([{"status": "RUNNING"}])
    code, out = run_smoke(client, timeout=30)
    assert code == 1 and "timed out" in out and client.calls[-1][0] == "stop"


def test_smoke_accepts_another_run_holding_the_claim_with_a_warning():
    code, out = run_smoke(FakeStepFunctions([{"status": "FAILED", "error": "run_in_progress", "cause": "held"}]))
    assert code == 0 and out.count("::warning") == 1
