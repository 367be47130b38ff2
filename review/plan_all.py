"""Synthesize the CDKTF app and plan every stack for review.

Usage::

    python -m review.plan_all [--stacks NAME ...] [--exclude NAME ...] [--out review-plans]
                              [--no-backend] [--no-synth] [--lock] [--commit SHA]

Steps: ``python main.py`` (skip with ``--no-synth``), then for each
``cdktf.out/stacks/<stack>/``: ``terraform init``, ``terraform plan -out``,
``terraform show -json`` and ``terraform show``. Kept per stack under
``<out>/<stack>/``: ``tfplan`` (binary plan), ``plan.json``, ``plan.txt``,
``plan.md`` and ``terraform.log`` (``error.txt`` when it failed). ``<out>/summary.md``
combines the stacks in one text that fits a GitHub comment. It names the commit
planned and when (``--commit``, else env ``PLAN_COMMIT`` or ``GITHUB_SHA``, else
``git rev-parse HEAD``), for readers and in a hidden marker line for the
workflow, which marks an older comment stale (``review.pr_comment``).

``--no-backend`` (or ``TF_NO_BACKEND=1``) plans without the remote state: for
forks and CI without AWS credentials. ``terraform init -backend=false`` alone
leaves ``terraform plan`` refusing to run ("Backend initialization required"),
so each stack is planned in a temporary copy with an override file that swaps
the backend for an empty local state; ``cdktf.out`` is not modified. Every
resource then shows as a create.

Exit status: 0 when every stack planned, 1 when a stack failed (the others are
still planned and summarized), 2 for usage errors and a failed synth.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from review.plan_summary import ACTIONS, GITHUB_COMMENT_LIMIT, count_actions, render_markdown
from review.pr_comment import COMMENT_MARKER, commit_marker
from tools.terraform import TerraformError, copy_with_local_backend, run_logged

SUMMARY_BUDGET = GITHUB_COMMENT_LIMIT - 536  # head room for the workflow's own additions
PLAN_FILES = ("tfplan", "plan.json", "plan.txt", "plan.md", "terraform.log", "error.txt")
OVERRIDE_NAME = "zz_review_no_backend_override.tf.json"


class PlanError(Exception):
    """A terraform step failed for one stack."""


@dataclass
class StackResult:
    name: str
    ok: bool = False
    error: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    plan: dict | None = None
    hint: str = ""
    log: str = ""
    local_state: bool = False


@dataclass
class PlanCommit:
    """What was planned: the commit (None when unknown), the UTC time planning started, and the commit
    checked out when it is another one (a pull request's merge with its base branch)."""
    sha: str | None
    planned_at: datetime
    checked_out: str | None = None
    merge: bool = False  # ``checked_out`` is a merge commit with ``sha`` as a parent

    def line(self) -> str:
        """The sentence at the top of the summary."""
        when = self.planned_at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        if not self.sha:
            return f"Planned at an unknown commit ({when})."
        text = f"Planned at commit {_commit_link(self.sha)} ({when})"
        if self.checked_out and self.checked_out != self.sha:
            text += (f", merged with the base branch as {_commit_link(self.checked_out)}" if self.merge
                     else f"; the checked-out tree is commit {_commit_link(self.checked_out)}")
        return text + "."


def _commit_link(sha: str) -> str:
    server, repo = os.environ.get("GITHUB_SERVER_URL"), os.environ.get("GITHUB_REPOSITORY")
    if server and repo:
        return f"[`{sha[:12]}`]({server}/{repo}/commit/{sha})"
    return f"`{sha[:12]}`"


def _git(app_dir: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=app_dir, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def resolve_commit(explicit: str | None, app_dir: Path, env: dict[str, str] | None = None,
                   now: datetime | None = None) -> PlanCommit:
    """The commit a run plans: ``--commit`` (a sha or anything ``git rev-parse`` knows), else ``PLAN_COMMIT``
    (a pull request's head), else ``GITHUB_SHA``, else ``git rev-parse HEAD`` of ``app_dir``. Raises
    ValueError when ``explicit`` names no commit."""
    env = os.environ if env is None else env
    head = _git(app_dir, "rev-parse", "--verify", "HEAD^{commit}")
    sha = None
    for source, value in (("--commit", explicit), ("PLAN_COMMIT", env.get("PLAN_COMMIT")),
                          ("GITHUB_SHA", env.get("GITHUB_SHA"))):
        value = (value or "").strip()
        if not value:
            continue
        if re.fullmatch(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}", value):
            sha = value.lower()
        else:  # an abbreviation or a name: let git say which commit
            sha = _git(app_dir, "rev-parse", "--verify", "--quiet", f"{value}^{{commit}}")
            if sha is None and re.fullmatch(r"[0-9a-fA-F]{7,63}", value):
                sha = value.lower()  # no repository here: keep the abbreviation
        if sha is None:
            if source == "--commit":
                raise ValueError(f"--commit {value}: not a commit")
            print(f"plan_all: warning: {source}={value} names no commit; ignored", file=sys.stderr)
            continue
        break
    sha = sha or head
    merge = False
    if sha and head and head != sha:
        parents = (_git(app_dir, "rev-list", "--parents", "-n", "1", head) or "").split()[1:]
        # A shallow checkout has no parents to look at; a pull_request run checks out the merge.
        merge = (len(parents) > 1 and sha in parents) or (
            not parents and env.get("GITHUB_EVENT_NAME") == "pull_request")
    return PlanCommit(sha, now or datetime.now(timezone.utc), head if head != sha else None, merge)


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def find_stacks(stacks_dir: Path) -> list[str]:
    if not stacks_dir.is_dir():
        return []
    return sorted(p.name for p in stacks_dir.iterdir() if (p / "cdk.tf.json").is_file())


def backend_type(stack_dir: Path) -> str | None:
    try:
        cfg = json.loads((stack_dir / "cdk.tf.json").read_text())
    except (OSError, ValueError):
        return None
    backend = ((cfg.get("terraform") or {}).get("backend")) or {}
    return next(iter(backend), None) if isinstance(backend, dict) else None


class Runner:
    """Runs terraform for one stack, logging to ``log`` (tools.terraform.run_logged); failures raise PlanError."""

    def __init__(self, terraform: str, log: Path) -> None:
        self.terraform = terraform
        self.log = log
        self.env = dict(os.environ, TF_IN_AUTOMATION="1", TF_INPUT="0")

    def __call__(self, cwd: Path, *args: str, capture: Path | None = None) -> str:
        """Terraform's stdout (also written to ``capture`` when given, instead of the log)."""
        try:
            return run_logged(self.terraform, cwd, self.env, *args, log=self.log, stdout_to=capture).stdout
        except TerraformError as exc:
            raise PlanError(f"`terraform {exc.command}` failed (exit {exc.returncode}):\n{exc.tail}") from exc
        except OSError as exc:
            raise PlanError(f"cannot run {self.terraform}: {exc}") from exc


def full_plan_hint(rel_txt: str) -> str:
    hint = f"`{rel_txt}`"
    server, repo, run = (os.environ.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"))
    if server and repo and run:
        hint += f" in the `review-plans` artifact of [this workflow run]({server}/{repo}/actions/runs/{run})"
    return hint


def plan_stack(name: str, stack_dir: Path, out_dir: Path, rel_out: str, *, terraform: str,
               no_backend: bool, lock: bool) -> StackResult:
    result = StackResult(name, local_state=backend_type(stack_dir) in (None, "local"))
    dest = out_dir / name
    dest.mkdir(parents=True, exist_ok=True)
    for fname in PLAN_FILES:
        (dest / fname).unlink(missing_ok=True)
    tf = Runner(terraform, dest / "terraform.log")
    tfplan = (dest / "tfplan").resolve()
    result.hint = full_plan_hint(f"{rel_out}/{name}/plan.txt")
    result.log = f"{rel_out}/{name}/terraform.log"
    tmp = None
    try:
        workdir = stack_dir
        if no_backend:
            tmp = tempfile.mkdtemp(prefix=f"review-{name}-")
            workdir = Path(tmp) / name
            copy_with_local_backend(stack_dir, workdir, OVERRIDE_NAME, Path(tmp) / "terraform.tfstate")
        tf(workdir, "init", "-input=false", "-no-color", "-reconfigure")
        tf(workdir, "plan", "-input=false", "-no-color", f"-lock={'true' if lock else 'false'}", f"-out={tfplan}")
        plan_json = tf(workdir, "show", "-json", str(tfplan), capture=dest / "plan.json")
        tf(workdir, "show", "-no-color", str(tfplan), capture=dest / "plan.txt")
        plan = json.loads(plan_json)
        (dest / "plan.md").write_text(
            render_markdown(plan, f"Terraform plan: `{name}`", full_plan_hint=result.hint), encoding="utf-8")
        result.plan, result.counts, result.ok = plan, count_actions(plan), True
    except (PlanError, ValueError, OSError) as exc:
        result.error = str(exc)
        (dest / "error.txt").write_text(result.error + "\n", encoding="utf-8")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return result


def has_changes(counts: dict[str, int], plan: dict) -> bool:
    """True when applying the plan would change a resource (``counts``: count_actions(plan)) or an output."""
    if any(n for a, n in counts.items() if a not in ("no-op", "read")):
        return True
    return any((ch or {}).get("actions") not in (["no-op"], None)
               for ch in (plan.get("output_changes") or {}).values())


def _error_block(result: StackResult, level: int) -> str:
    text = result.error.replace("```", "'''")
    return (f"{'#' * level} Terraform plan: `{result.name}`\n\n> [!CAUTION]\n> **Planning failed.** "
            f"Log: `{result.log}`\n\n```\n{text}\n```\n")


def build_summary(results: list[StackResult], *, no_backend: bool, budget: int = SUMMARY_BUDGET,
                  commit: PlanCommit | None = None) -> str:
    """One Markdown text for the PR comment: the commit planned, an overview table, then each stack's summary.
    The first lines are hidden markers: the comment's, then the commit's (when known)."""
    markers = COMMENT_MARKER + (f"\n{commit_marker(commit.sha)}" if commit and commit.sha else "")
    head = [markers, "## Terraform plan review"]
    if commit:
        head.append(commit.line())
    if no_backend:
        head.append("> [!NOTE]\n> Planned **without the remote state** (`--no-backend`): every resource "
                    "shows as a create. Run with AWS credentials for a real diff.")
    rows = ["| Stack | " + " | ".join(ACTIONS) + " | Result |", "|---|" + "---:|" * len(ACTIONS) + "---|"]
    for r in results:
        if r.ok:
            status = "changes" if has_changes(r.counts, r.plan or {}) else "no changes"
            if r.counts.get("delete") or r.counts.get("replace"):
                status = "**destroys/replaces**"
            if r.local_state and not no_backend:
                status += " (local state)"
            rows.append(f"| `{r.name}` | " + " | ".join(str(r.counts.get(a, 0)) for a in ACTIONS)
                        + f" | {status} |")
        else:
            rows.append(f"| `{r.name}` | " + " | ".join("–" for _ in ACTIONS) + " | **failed** |")
    head.append("\n".join(rows))
    head_text = "\n\n".join(head) + "\n"

    fixed = [_error_block(r, 3) for r in results if not r.ok]
    ok = [r for r in results if r.ok]
    remaining = budget - len(head_text) - sum(len(x) + 1 for x in fixed) - 2 * len(ok)
    bodies = {r.name: render_markdown(r.plan or {}, f"`{r.name}`", full_plan_hint=r.hint,
                                      heading_level=3, max_chars=10**9, counts_table=False) for r in ok}
    # Fair share: small stacks keep everything, the rest split what is left.
    limits: dict[str, int] = {}
    pending = sorted(ok, key=lambda r: len(bodies[r.name]))
    while pending:
        share = max(remaining // len(pending), 0)
        r = pending.pop(0)
        limits[r.name] = min(len(bodies[r.name]), share)
        remaining -= limits[r.name]
    parts = [head_text]
    for r in results:
        if not r.ok:
            parts.append(_error_block(r, 3))
        elif len(bodies[r.name]) <= limits[r.name]:
            parts.append(bodies[r.name])
        else:
            parts.append(render_markdown(r.plan or {}, f"`{r.name}`", full_plan_hint=r.hint,
                                         heading_level=3, max_chars=max(limits[r.name], 200), counts_table=False))
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m review.plan_all",
                                 description="Synthesize the CDKTF app and plan every stack for review.")
    ap.add_argument("--stacks", nargs="+", metavar="NAME", help="plan only these stacks (default: all)")
    ap.add_argument("--exclude", nargs="+", metavar="NAME", default=[], help="skip these stacks")
    ap.add_argument("--out", default="review-plans", help="output folder (default: review-plans)")
    ap.add_argument("--no-backend", action="store_true",
                    help="plan against an empty local state instead of the configured backend "
                         "(also: env TF_NO_BACKEND=1)")
    ap.add_argument("--no-synth", action="store_true", help="use the existing cdktf.out (skip `python main.py`)")
    ap.add_argument("--lock", action="store_true",
                    help="take the state lock while planning (default: -lock=false, so a read-only "
                         "plan role works and PR plans do not block deploys)")
    ap.add_argument("--app-dir", default=".", help="folder with main.py and cdktf.out (default: .)")
    ap.add_argument("--terraform", default=os.environ.get("TERRAFORM", "terraform"), help="terraform binary")
    ap.add_argument("--commit", metavar="SHA",
                    help="the commit planned, named in the summary (default: env PLAN_COMMIT, else GITHUB_SHA, "
                         "else `git rev-parse HEAD`)")
    args = ap.parse_args(argv)
    no_backend = args.no_backend or truthy(os.environ.get("TF_NO_BACKEND"))
    app_dir = Path(args.app_dir).resolve()
    try:
        commit = resolve_commit(args.commit, app_dir)
    except ValueError as exc:
        print(f"plan_all: error: {exc}", file=sys.stderr)
        return 2

    if not args.no_synth:
        print("plan_all: synthesizing: python main.py", flush=True)
        proc = subprocess.run([sys.executable, "main.py"], cwd=app_dir)
        if proc.returncode != 0:
            print(f"plan_all: error: synth failed (`python main.py` exited {proc.returncode})", file=sys.stderr)
            return 2

    stacks_dir = app_dir / "cdktf.out" / "stacks"
    available = find_stacks(stacks_dir)
    if not available:
        print(f"plan_all: error: no stacks in {stacks_dir} (did the synth run?)", file=sys.stderr)
        return 2
    unknown = sorted(set(args.stacks or []) - set(available))
    if unknown:
        print(f"plan_all: error: unknown stack(s): {', '.join(unknown)}; available: {', '.join(available)}",
              file=sys.stderr)
        return 2
    selected = [s for s in (args.stacks or available) if s not in set(args.exclude)]
    selected = sorted(dict.fromkeys(selected))
    if not selected:
        print("plan_all: error: no stack left to plan", file=sys.stderr)
        return 2

    out_dir = Path(args.out)
    if not out_dir.is_absolute():
        out_dir = Path.cwd() / out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        rel_out = os.path.relpath(out_dir, app_dir)
    except ValueError:
        rel_out = str(out_dir)
    rel_out = Path(rel_out).as_posix()

    commit.planned_at = datetime.now(timezone.utc)
    print(f"plan_all: planning commit {commit.sha or '(unknown)'}", flush=True)
    results = []
    for name in selected:
        print(f"plan_all: planning {name}{' (no backend)' if no_backend else ''} ...", flush=True)
        res = plan_stack(name, stacks_dir / name, out_dir, rel_out, terraform=args.terraform,
                         no_backend=no_backend, lock=args.lock)
        if res.ok:
            counts = ", ".join(f"{res.counts.get(a, 0)} {a}" for a in ACTIONS)
            print(f"plan_all: {name}: {counts}", flush=True)
        else:
            print(f"plan_all: {name}: FAILED\n{res.error}", file=sys.stderr, flush=True)
        results.append(res)

    summary = build_summary(results, no_backend=no_backend, commit=commit)
    (out_dir / "summary.md").write_text(summary, encoding="utf-8")
    print(f"plan_all: wrote {rel_out}/summary.md ({len(summary)} characters)")
    failed = [r.name for r in results if not r.ok]
    if failed:
        print(f"plan_all: error: {len(failed)} stack(s) failed: {', '.join(failed)} "
              f"(see {rel_out}/<stack>/error.txt and terraform.log)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
