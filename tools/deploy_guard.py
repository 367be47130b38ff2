"""The deploy workflow's guard: a saved plan is applied only while it is still the plan of main's head.

    python -m tools.deploy_guard record --bundle deploy-dev --environment dev --commit SHA
    python -m tools.deploy_guard verify --bundle deploy-dev --environment dev --commit SHA --head-from github
    python -m tools.deploy_guard smoke --state-machine-arn ARN [--window-minutes 15] [--timeout-minutes 15]

A *bundle* is what the plan job hands to the apply job (the workflow artifact ``deploy-<environment>``)::

    <bundle>/manifest.json          written by ``record``: what was planned, when, with what
    <bundle>/plans/<stack>/tfplan   review.plan_all's output (+ plan.json, plan.txt, plan.md, summary.md)
    <bundle>/stacks/<stack>/        the synthesized stack folder the plan was made from, without .terraform
                                    (cdk.tf.json, assets, .terraform.lock.hcl)

``record`` (plan job, right after planning) copies the stack folders into the bundle and writes the
manifest: commit, UTC time planned, Terraform version, sha256 of the provider lock file, and per stack the
sha256 of the saved plan and of every file of the stack folder, and whether the plan changes anything.

``verify`` (apply job, before any credentials and before ``terraform apply``) refuses, with one
``::error::`` line per reason saying why and what to do, and exit status 1, when:

- the bundle is missing or incomplete (the artifact expired, or its download failed),
- a saved plan or a stack file differs from what was recorded,
- the provider lock file differs from the one planned with,
- the Terraform version differs from the one that planned,
- the plan is older than ``--max-age-hours`` (default 24, env ``DEPLOY_PLAN_MAX_AGE_HOURS``),
- main has moved past the planned commit (``git ls-remote`` or the GitHub API): a newer run plans it.

Terraform adds its own check on top: ``terraform apply tfplan`` refuses a plan whose state changed after
planning ("Saved plan is stale").

``smoke`` starts one execution of the deployed state machine with a small explicit window (the last
``--window-minutes`` minutes) and waits for it to succeed (docs/deploy.md). It needs boto3; ``record`` and
``verify`` use the standard library only, so the apply jobs need no Python dependencies.

Exit status: 0 accepted, 1 refused (or the smoke execution failed), 2 usage errors.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from review.plan_summary import count_actions  # standard library only, like this module

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
LOCK_FILE = ".terraform.lock.hcl"
DEFAULT_MAX_AGE_HOURS = 24.0
MAX_AGE_ENV = "DEPLOY_PLAN_MAX_AGE_HOURS"
SKIPPED_DIRS = {".terraform"}
SHA_RE = re.compile(r"^[0-9a-f]{40}$")

HeadResolver = Callable[[str], str]  # branch -> commit sha at the remote's head of that branch


class GuardError(Exception):
    """A usage or environment problem (exit 2), not a refusal."""


@dataclass(frozen=True)
class Refusal:
    reason: str  # short code: missing, incomplete, tampered, lock, terraform, age, moved, head, commit, environment
    message: str

    def annotation(self) -> str:
        """A GitHub Actions error annotation (one line: the runner ends an annotation at the newline)."""
        text = self.message.replace("%", "%25").replace("\r", "").replace("\n", " ")
        return f"::error title=Deploy refused ({self.reason})::{text}"


# ---------------------------------------------------------------------------------------------------- helpers

def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (POSIX relative paths), leaving out ``.terraform/``."""
    hashes = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if rel.parts[0] in SKIPPED_DIRS or not path.is_file():
            continue
        hashes[rel.as_posix()] = sha256_file(path)
    return hashes


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"time without a time zone: {text!r}")
    return moment


def short(sha: str) -> str:
    return sha[:12]


def plan_has_changes(plan_json: Path) -> bool:
    """True when applying the plan would change a resource or an output. Unknown (no or unreadable
    plan.json) counts as a change: the apply then runs and asks for approval rather than being skipped."""
    try:
        plan = json.loads(plan_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True
    if any(count for kind, count in count_actions(plan).items() if kind not in ("no-op", "read")):
        return True
    return any((change or {}).get("actions") not in (["no-op"], None)
               for change in (plan.get("output_changes") or {}).values())


def terraform_version(terraform: str = "terraform") -> str:
    """``terraform version -json``'s version, e.g. ``1.11.4``."""
    try:
        proc = subprocess.run([terraform, "version", "-json"], capture_output=True, text=True, timeout=60,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GuardError(f"cannot run `{terraform} version`: {exc}") from exc
    if proc.returncode != 0:
        raise GuardError(f"`{terraform} version -json` exited {proc.returncode}: {proc.stderr.strip()}")
    try:
        return json.loads(proc.stdout)["terraform_version"]
    except (ValueError, KeyError) as exc:
        raise GuardError(f"unexpected `{terraform} version -json` output: {proc.stdout[:200]!r}") from exc


# ---------------------------------------------------------------------------------------------- remote head

def git_head(remote: str = "origin", repo_dir: Path | str = ".") -> HeadResolver:
    """Resolve a branch's head with ``git ls-remote`` (the remote as the checkout's git knows it)."""

    def resolve(branch: str) -> str:
        ref = f"refs/heads/{branch}"
        try:
            proc = subprocess.run(["git", "-C", str(repo_dir), "ls-remote", "--exit-code", remote, ref],
                                  capture_output=True, text=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise GuardError(f"git ls-remote {remote} {ref}: {exc}") from exc
        if proc.returncode != 0:
            raise GuardError(f"git ls-remote {remote} {ref} exited {proc.returncode}: "
                             f"{proc.stderr.strip() or 'no such branch'}")
        for line in proc.stdout.splitlines():
            sha, _, name = line.partition("\t")
            if name.strip() == ref:
                return sha.strip()
        raise GuardError(f"git ls-remote {remote} {ref}: no such ref in {proc.stdout!r}")

    return resolve


def github_head(repository: str, token: str, api_url: str = "https://api.github.com",
                opener: Callable[..., Any] = urllib.request.urlopen) -> HeadResolver:
    """Resolve a branch's head with the GitHub REST API (``GET /repos/{repo}/git/ref/heads/{branch}``)."""

    def resolve(branch: str) -> str:
        url = f"{api_url.rstrip('/')}/repos/{repository}/git/ref/heads/{branch}"
        request = urllib.request.Request(url, headers={
            "Accept": "application/vnd.github+json", "Authorization": f"Bearer {token}",
            "X-GitHub-Api-Version": "2022-11-28", "User-Agent": "stepfuncproject-deploy-guard"})
        try:
            with opener(request, timeout=30) as response:
                body = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            raise GuardError(f"GET {url}: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise GuardError(f"GET {url}: {exc}") from exc
        sha = ((body or {}).get("object") or {}).get("sha") if isinstance(body, dict) else None
        if not isinstance(sha, str) or not SHA_RE.match(sha):
            raise GuardError(f"GET {url}: no commit sha in the answer")
        return sha

    return resolve


# --------------------------------------------------------------------------------------------------- record

def record(bundle: Path, *, environment: str, commit: str, stacks_dir: Path, lock_file: Path | None,
           terraform_version: str, now: dt.datetime | None = None, run: dict[str, str] | None = None) -> dict:
    """Copy the planned stacks' folders into ``bundle/stacks`` and write ``bundle/manifest.json``.

    The planned stacks are the folders of ``bundle/plans`` holding a ``tfplan``. Raises GuardError when
    nothing was planned, a stack folder or its lock file is missing, or the lock files differ."""
    if not SHA_RE.match(commit):
        raise GuardError(f"--commit must be a full 40-character commit sha, not {commit!r}")
    plans = bundle / "plans"
    stacks = sorted(p.parent.name for p in plans.glob("*/tfplan")) if plans.is_dir() else []
    if not stacks:
        raise GuardError(f"no saved plan (<stack>/tfplan) under {plans}: did planning succeed?")
    root_lock = sha256_file(lock_file) if lock_file and lock_file.is_file() else None
    if lock_file and root_lock is None:
        raise GuardError(f"the provider lock file {lock_file} is missing")
    entries: dict[str, Any] = {}
    lock_hash = root_lock
    for name in stacks:
        source = stacks_dir / name
        if not (source / "cdk.tf.json").is_file():
            raise GuardError(f"no synthesized stack folder {source} for the planned stack {name}")
        if not (source / LOCK_FILE).is_file():
            raise GuardError(f"{source / LOCK_FILE} is missing: `python main.py` copies the repository's "
                             f"{LOCK_FILE} into every stack folder; is it committed?")
        stack_lock = sha256_file(source / LOCK_FILE)
        if lock_hash is None:
            lock_hash = stack_lock
        elif stack_lock != lock_hash:
            raise GuardError(f"{source / LOCK_FILE} differs from {lock_file or 'the other stacks'}: "
                             "synthesize again from a clean checkout")
        target = bundle / "stacks" / name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns(*SKIPPED_DIRS))
        entries[name] = {
            "tfplan_sha256": sha256_file(plans / name / "tfplan"),
            "files": tree_hashes(target),
            "changes": plan_has_changes(plans / name / "plan.json"),
        }
    manifest = {
        "format": MANIFEST_FORMAT,
        "environment": environment,
        "commit": commit,
        "planned_at": iso(now or utc_now()),
        "terraform_version": terraform_version,
        "lock_sha256": lock_hash,
        "stacks": entries,
        "run": run or {},
    }
    (bundle / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


def run_info(env: dict[str, str] | None = None) -> dict[str, str]:
    env = os.environ if env is None else env
    info = {k: env[v] for k, v in (("id", "GITHUB_RUN_ID"), ("attempt", "GITHUB_RUN_ATTEMPT"),
                                    ("workflow", "GITHUB_WORKFLOW"), ("job", "GITHUB_JOB")) if env.get(v)}
    if env.get("GITHUB_SERVER_URL") and env.get("GITHUB_REPOSITORY") and env.get("GITHUB_RUN_ID"):
        info["url"] = f"{env['GITHUB_SERVER_URL']}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
    return info


def describe(manifest: dict, max_age_hours: float) -> str:
    """Markdown for the run's summary page: what the approver is approving and until when."""
    planned = parse_iso(manifest["planned_at"])
    deadline = iso(planned + dt.timedelta(hours=max_age_hours))
    rows = "\n".join(f"| `{name}` | {'changes' if s['changes'] else 'no changes'} | `{s['tfplan_sha256'][:16]}…` |"
                     for name, s in sorted(manifest["stacks"].items()))
    return (f"### Saved plan for `{manifest['environment']}`\n\n"
            f"Commit `{manifest['commit']}`, planned {manifest['planned_at']} with Terraform "
            f"{manifest['terraform_version']}, provider lock sha256 `{manifest['lock_sha256'][:16]}…`.\n"
            f"The apply refuses this plan after **{deadline}** ({max_age_hours:g} h), or once main has moved "
            f"past this commit.\n\n| Stack | Plan | tfplan sha256 |\n|---|---|---|\n{rows}\n")


# --------------------------------------------------------------------------------------------------- verify

def _load_manifest(bundle: Path, environment: str, recover: str) -> tuple[dict | None, list[Refusal]]:
    path = bundle / MANIFEST
    if not path.is_file():
        what = ("the folder is missing" if not bundle.exists() else f"{MANIFEST} is missing")
        return None, [Refusal("missing", (
            f"No saved plan for {environment}: {bundle}/ has no {MANIFEST} ({what}). The workflow artifact "
            f"'{bundle.name}' expired (kept 7 days), was never uploaded (the plan job failed) or did not "
            f"download. Nothing was applied. {recover}"))]
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"unknown manifest format {manifest.get('format') if isinstance(manifest, dict) else '?'}")
        for key in ("environment", "commit", "planned_at", "terraform_version", "lock_sha256", "stacks"):
            if key not in manifest:
                raise ValueError(f"no {key!r}")
        parse_iso(manifest["planned_at"])
    except (OSError, ValueError, TypeError) as exc:
        return None, [Refusal("missing", f"{path} is unreadable ({exc}). Nothing was applied. {recover}")]
    return manifest, []


def verify(bundle: Path, *, environment: str, head: HeadResolver, branch: str = "main",
           expected_commit: str | None = None, lock_file: Path | None = None, terraform_version: str | None,
           max_age_hours: float = DEFAULT_MAX_AGE_HOURS, now: dt.datetime | None = None,
           plan_job: str = "plan") -> list[Refusal]:
    """Every reason to refuse applying ``bundle`` (empty: apply it). ``head(branch)`` is the remote head;
    ``terraform_version`` is the version that will apply (None: unknown, refused)."""
    again = (f"Plan again: re-run the job '{plan_job}' of this workflow run (it re-runs the apply after it), "
             f"or run the deploy workflow on {branch} by hand.")
    manifest, refusals = _load_manifest(bundle, environment, again)
    if manifest is None:
        return refusals
    commit = manifest["commit"]

    if manifest["environment"] != environment:
        refusals.append(Refusal("environment", (
            f"{bundle}/ holds the plan for '{manifest['environment']}', not for '{environment}': the wrong "
            "artifact was downloaded. Nothing was applied; fix the workflow.")))
    if expected_commit and expected_commit != commit:
        refusals.append(Refusal("commit", (
            f"{bundle}/ was planned from commit {short(commit)}, but this job runs for {short(expected_commit)}. "
            f"Nothing was applied. {again}")))

    stacks = manifest["stacks"] or {}
    if not stacks:
        refusals.append(Refusal("incomplete", f"{bundle}/{MANIFEST} lists no stack. {again}"))
    for name, entry in sorted(stacks.items()):
        tfplan = bundle / "plans" / name / "tfplan"
        folder = bundle / "stacks" / name
        if not tfplan.is_file() or not folder.is_dir():
            missing = tfplan if not tfplan.is_file() else folder
            refusals.append(Refusal("incomplete", (
                f"The saved plan of {name} is incomplete: {missing} is missing. Nothing was applied. {again}")))
            continue
        if sha256_file(tfplan) != entry.get("tfplan_sha256"):
            refusals.append(Refusal("tampered", (
                f"{tfplan} is not the plan that was recorded (sha256 differs): it changed after planning. "
                f"Nothing was applied. {again}")))
        recorded, actual = entry.get("files") or {}, tree_hashes(folder)
        changed = sorted(p for p in set(recorded) | set(actual) if recorded.get(p) != actual.get(p))
        if changed:
            listed = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
            refusals.append(Refusal("tampered", (
                f"The stack folder {folder}/ differs from the one planned ({listed}). Nothing was applied. "
                f"{again}")))

    planned_lock = manifest["lock_sha256"]
    locks = [(bundle / "stacks" / name / LOCK_FILE) for name in sorted(stacks)]
    if lock_file is not None:
        locks.append(lock_file)
    for lock in locks:
        if not lock.is_file():
            refusals.append(Refusal("lock", (
                f"The provider lock file {lock} is missing, so `terraform init -lockfile=readonly` cannot "
                f"install the providers the plan was made with. Nothing was applied. {again}")))
        elif (current := sha256_file(lock)) != planned_lock:
            refusals.append(Refusal("lock", (
                f"The provider lock file {lock} (sha256 {current[:16]}…) differs from the one the plan was made "
                f"with (sha256 {planned_lock[:16]}…): it would be applied with other provider versions. "
                f"Nothing was applied. {again}")))

    if terraform_version is None:
        refusals.append(Refusal("terraform", (
            f"Cannot tell which Terraform version would apply (the plan was made with "
            f"{manifest['terraform_version']}). Nothing was applied; install Terraform "
            f"{manifest['terraform_version']} in this job.")))
    elif terraform_version != manifest["terraform_version"]:
        refusals.append(Refusal("terraform", (
            f"This job has Terraform {terraform_version}, the plan was made with "
            f"{manifest['terraform_version']}; Terraform applies a saved plan only with the version that made "
            f"it. Nothing was applied; pin the same version in both jobs (TERRAFORM_VERSION), then {again}")))

    now = now or utc_now()
    planned_at = parse_iso(manifest["planned_at"])
    age_hours = (now - planned_at).total_seconds() / 3600
    if age_hours > max_age_hours:
        refusals.append(Refusal("age", (
            f"The saved plan for {environment} is {age_hours:.1f} h old (planned {manifest['planned_at']}); "
            f"plans older than {max_age_hours:g} h are refused ({MAX_AGE_ENV}): AWS and the state may have "
            f"changed since. Nothing was applied. {again}")))

    try:
        current_head = head(branch)
    except GuardError as exc:
        refusals.append(Refusal("head", (
            f"Cannot tell whether {branch} moved past the planned commit {short(commit)}: {exc}. Nothing was "
            "applied; re-run this job once the remote answers.")))
    else:
        if current_head != commit:
            refusals.append(Refusal("moved", (
                f"{branch} has moved past the planned commit: planned {short(commit)}, {branch} is now "
                f"{short(current_head)}. This plan no longer describes {branch}; the deploy run for "
                f"{short(current_head)} (queued behind this one) plans and applies it. Nothing was applied. "
                f"Reject or cancel this run; if no run is queued for {short(current_head)}, run the deploy "
                f"workflow on {branch} by hand.")))
    return refusals


# ---------------------------------------------------------------------------------------------------- smoke

def smoke_input(now: dt.datetime, window_minutes: int) -> dict[str, str]:
    """An explicit window ending now (seconds precision): loads little, and does not depend on the
    scope's watermark the way ``{}`` does (docs/pipeline.md)."""
    until = now.astimezone(dt.timezone.utc).replace(microsecond=0)
    return {"since": iso(until - dt.timedelta(minutes=window_minutes)), "until": iso(until)}


def smoke(client: Any, state_machine_arn: str, *, payload: dict, name: str, timeout_seconds: float,
          poll_seconds: float = 10.0, sleep: Callable[[float], None] = time.sleep,
          clock: Callable[[], float] = time.monotonic, out: Callable[[str], None] = print) -> int:
    """Start one execution and wait for its end. 0: it succeeded (or found another run holding the
    one-run claim, which proves the deployed first step answers); 1: anything else, with a reason."""
    started = client.start_execution(stateMachineArn=state_machine_arn, name=name, input=json.dumps(payload))
    arn = started["executionArn"]
    out(f"deploy_guard: smoke execution {arn} with input {json.dumps(payload)}")
    deadline = clock() + timeout_seconds
    while True:
        described = client.describe_execution(executionArn=arn)
        status = described["status"]
        if status != "RUNNING":
            break
        if clock() >= deadline:
            client.stop_execution(executionArn=arn, error="DeploySmokeTimeout",
                                  cause=f"the deploy smoke check waited {timeout_seconds:g} s")
            out(f"::error title=Smoke execution timed out::{arn} still ran after {timeout_seconds:g} s; it was "
                "stopped (its run is reconciled as aborted by the next execution). Look at the execution's "
                "history and the state machine's log group, fix, and re-run the job.")
            return 1
        sleep(poll_seconds)
    if status == "SUCCEEDED":
        out(f"deploy_guard: smoke execution succeeded: {described.get('output', '')[:2000]}")
        return 0
    error, cause = described.get("error", ""), described.get("cause", "")
    if status == "FAILED" and error == "run_in_progress":
        out(f"::warning title=Smoke execution found a run in progress::{cause or error} The deployed first "
            "step ran (Lambda, secrets, database, claim) and refused a second run, as designed; the full "
            "pipeline was not exercised this time.")
        return 0
    out(f"::error title=Smoke execution {status}::{arn} ended {status}"
        + (f" with {error}: {cause}" if error or cause else "")
        + ". Look at the execution's history and the state machine's log group; fix, and re-run this job "
          "(production is not planned until it passes).")
    return 1


def smoke_name(env: dict[str, str] | None = None, now: dt.datetime | None = None) -> str:
    env = os.environ if env is None else env
    stamp = (now or utc_now()).strftime("%Y%m%dT%H%M%SZ")
    parts = ["deploy-smoke", env.get("GITHUB_RUN_ID", "local"), env.get("GITHUB_RUN_ATTEMPT", "1"), stamp]
    return re.sub(r"[^A-Za-z0-9_-]", "-", "-".join(parts))[:80]


# ------------------------------------------------------------------------------------------------------ CLI

def _max_age(value: str | None) -> float:
    raw = value if value is not None else os.environ.get(MAX_AGE_ENV) or str(DEFAULT_MAX_AGE_HOURS)
    try:
        hours = float(raw)
    except ValueError as exc:
        raise GuardError(f"maximum plan age must be a number of hours, not {raw!r}") from exc
    if hours <= 0:
        raise GuardError(f"maximum plan age must be positive, not {raw!r}")
    return hours


def _append(env_var: str, text: str) -> None:
    target = os.environ.get(env_var)
    if target:
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(text)


def _head_resolver(args: argparse.Namespace) -> HeadResolver:
    if args.head_from == "github":
        repository, token = os.environ.get("GITHUB_REPOSITORY"), os.environ.get("GITHUB_TOKEN")
        if not repository or not token:
            raise GuardError("--head-from github needs GITHUB_REPOSITORY and GITHUB_TOKEN in the environment")
        return github_head(repository, token, os.environ.get("GITHUB_API_URL") or "https://api.github.com")
    return git_head(args.remote, args.repo_dir)


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m tools.deploy_guard", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)

    rec = sub.add_parser("record", help="plan job: copy the planned stack folders, write the manifest")
    rec.add_argument("--bundle", type=Path, required=True, help="the artifact folder; plans in <bundle>/plans")
    rec.add_argument("--environment", required=True)
    rec.add_argument("--commit", required=True, help="the commit planned (full sha)")
    rec.add_argument("--stacks-dir", type=Path, default=Path("cdktf.out/stacks"))
    rec.add_argument("--lock-file", type=Path, default=Path(LOCK_FILE), help="the repository's lock file")
    rec.add_argument("--terraform", default=os.environ.get("TERRAFORM", "terraform"))
    rec.add_argument("--terraform-version", help="instead of asking `terraform version`")
    rec.add_argument("--max-age-hours", help=f"only for the summary's deadline (default: ${MAX_AGE_ENV} or 24)")

    ver = sub.add_parser("verify", help="apply job: refuse a stale, incomplete or foreign plan")
    ver.add_argument("--bundle", type=Path, required=True)
    ver.add_argument("--environment", required=True)
    ver.add_argument("--commit", help="the commit this job runs for (refuse a bundle planned from another)")
    ver.add_argument("--branch", default="main")
    ver.add_argument("--head-from", choices=("git", "github"), default="git",
                     help="git: `git ls-remote REMOTE refs/heads/BRANCH`; github: the REST API with "
                          "GITHUB_TOKEN and GITHUB_REPOSITORY")
    ver.add_argument("--remote", default="origin")
    ver.add_argument("--repo-dir", type=Path, default=Path("."))
    ver.add_argument("--lock-file", type=Path, default=Path(LOCK_FILE),
                     help="the checkout's lock file, compared too")
    ver.add_argument("--max-age-hours", help=f"default: ${MAX_AGE_ENV} or {DEFAULT_MAX_AGE_HOURS:g}")
    ver.add_argument("--terraform", default=os.environ.get("TERRAFORM", "terraform"))
    ver.add_argument("--terraform-version", help="instead of asking `terraform version`")
    ver.add_argument("--plan-job", default="plan", help="the plan job's name, for the recovery hint")

    smk = sub.add_parser("smoke", help="check job: one execution of the deployed state machine")
    smk.add_argument("--state-machine-arn", required=True)
    smk.add_argument("--window-minutes", type=int, default=15)
    smk.add_argument("--timeout-minutes", type=float, default=15)
    smk.add_argument("--poll-seconds", type=float, default=10)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "record":
            version = args.terraform_version or terraform_version(args.terraform)
            max_age = _max_age(args.max_age_hours)
            lock = args.lock_file if args.lock_file.exists() else None
            if lock is None:
                print(f"deploy_guard: note: {args.lock_file} not found; using the stack folders' lock files",
                      file=sys.stderr)
            manifest = record(args.bundle, environment=args.environment, commit=args.commit,
                              stacks_dir=args.stacks_dir, lock_file=lock, terraform_version=version,
                              run=run_info())
            changes = any(s["changes"] for s in manifest["stacks"].values())
            print(f"deploy_guard: recorded {args.bundle / MANIFEST}: {args.environment} at "
                  f"{short(args.commit)}, stacks {', '.join(manifest['stacks'])}, "
                  f"{'changes' if changes else 'no changes'}")
            _append("GITHUB_OUTPUT", f"changes={'true' if changes else 'false'}\n")
            _append("GITHUB_STEP_SUMMARY", "\n" + describe(manifest, max_age))
            return 0
        if args.command == "verify":
            try:
                version = args.terraform_version or terraform_version(args.terraform)
            except GuardError as exc:
                print(f"deploy_guard: {exc}", file=sys.stderr)
                version = None
            refusals = verify(args.bundle, environment=args.environment, head=_head_resolver(args),
                              branch=args.branch, expected_commit=args.commit, lock_file=args.lock_file,
                              terraform_version=version, max_age_hours=_max_age(args.max_age_hours),
                              plan_job=args.plan_job)
            for refusal in refusals:
                print(refusal.annotation())
            if refusals:
                print(f"deploy_guard: refused the saved plan in {args.bundle}/ "
                      f"({', '.join(sorted({r.reason for r in refusals}))}); nothing was applied.")
                return 1
            manifest = json.loads((args.bundle / MANIFEST).read_text(encoding="utf-8"))
            print(f"deploy_guard: accepted {args.bundle}/: {args.environment} planned from "
                  f"{short(manifest['commit'])} (still the head of {args.branch}) at {manifest['planned_at']}, "
                  f"Terraform {manifest['terraform_version']}, lock sha256 {manifest['lock_sha256'][:16]}…")
            return 0
        import boto3  # only here: record and verify run without the project's dependencies
        from botocore.exceptions import BotoCoreError, ClientError

        payload = smoke_input(utc_now(), args.window_minutes)
        try:
            return smoke(boto3.client("stepfunctions"), args.state_machine_arn, payload=payload,
                         name=smoke_name(), timeout_seconds=args.timeout_minutes * 60,
                         poll_seconds=args.poll_seconds)
        except (BotoCoreError, ClientError) as exc:
            print(f"::error title=Smoke execution could not run::{args.state_machine_arn}: {exc}")
            return 1
    except GuardError as exc:
        print(f"::error title=Deploy guard::{exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
