"""The pull-request plan comment: its markers, the commit it was planned at, and marking it stale.

Usage (what the pull-request workflow runs on a new push, before anything else can fail)::

    python -m review.pr_comment mark-stale --body-file OLD_BODY.md --sha NEW_HEAD_SHA --reason TEXT
    python -m review.pr_comment commit --body-file OLD_BODY.md

``mark-stale`` prints the comment body with a warning banner on top: the plan shown was made for an
older commit, so nobody approves a pull request on it while the new push is tested, or after its run
failed before planning. The banner is replaced (never stacked) when marked again, and the body is left
as it is when it already shows the new commit. ``commit`` prints the commit the comment was planned at.

Standard library only: the workflow runs this before any dependency is installed.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

# Finds the comment again on the next push (the workflow searches comments for it).
COMMENT_MARKER = "<!-- review-plans:summary -->"
# Names the commit the summary was planned at, for machines (the workflow's stale check).
_COMMIT_MARKER = "<!-- review-plans:commit={sha} -->"
_COMMIT_RE = re.compile(r"<!--\s*review-plans:commit=([0-9a-fA-F]{7,64})\s*-->")
# The stale banner sits between these two lines, so marking again replaces it.
STALE_BEGIN = "<!-- review-plans:stale -->"
STALE_END = "<!-- review-plans:stale-end -->"
_STALE_RE = re.compile(re.escape(STALE_BEGIN) + r".*?" + re.escape(STALE_END) + r"\n*", re.S)
_SHA_RE = re.compile(r"[0-9a-fA-F]{7,64}")
MAX_REASON_CHARS = 300


def commit_marker(sha: str) -> str:
    """The hidden line naming the commit a summary was planned at."""
    return _COMMIT_MARKER.format(sha=_checked_sha(sha))


def comment_commit(body: str) -> str | None:
    """The commit (lower-case hex, as recorded) a plan comment was made for; None without a marker."""
    match = _COMMIT_RE.search(_STALE_RE.sub("", body or ""))
    return match.group(1).lower() if match else None


def same_commit(a: str | None, b: str | None) -> bool:
    """True when both name the same commit (one may be an abbreviation of the other)."""
    if not a or not b:
        return False
    a, b = a.lower(), b.lower()
    return a.startswith(b) or b.startswith(a)


def is_stale(body: str) -> bool:
    return STALE_BEGIN in (body or "")


def short(sha: str) -> str:
    return sha[:12]


def stale_banner(old_sha: str | None, new_sha: str, reason: str = "") -> str:
    made_for = f"commit `{short(old_sha)}`" if old_sha else "an older commit (the comment names none)"
    reason = " ".join((reason or "").split())[:MAX_REASON_CHARS].replace("-->", "->")
    why = f" ({reason})" if reason else ""
    return (f"{STALE_BEGIN}\n"
            f"> [!WARNING]\n"
            f"> **This plan is stale.** It was made for {made_for}; commit `{short(new_sha)}` was pushed since "
            f"and has not been planned{why}. **Do not approve on this plan.**\n"
            f">\n"
            f"> This comment is replaced once the new commit is planned. If it still shows this warning when the "
            f"checks of `{short(new_sha)}` have finished, its run failed before planning: see its logs.\n"
            f"{STALE_END}\n\n")


def mark_stale(body: str, new_sha: str, reason: str = "") -> str:
    """``body`` with a stale-plan banner on top (any earlier banner replaced), or ``body`` unchanged when its
    commit marker already names ``new_sha``."""
    new_sha = _checked_sha(new_sha)
    old_sha = comment_commit(body)
    if same_commit(old_sha, new_sha):
        return body
    return stale_banner(old_sha, new_sha, reason) + _STALE_RE.sub("", body or "", count=1)


def _checked_sha(sha: str) -> str:
    sha = (sha or "").strip()
    if not _SHA_RE.fullmatch(sha):
        raise ValueError(f"not a commit sha: {sha!r}")
    return sha.lower()


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    return Path(path).read_text(encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m review.pr_comment", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    stale = sub.add_parser("mark-stale", help="print the comment body marked stale for a newer commit")
    stale.add_argument("--body-file", required=True, help="the comment's current body ('-': standard input)")
    stale.add_argument("--sha", required=True, help="the newer commit that has not been planned")
    stale.add_argument("--reason", default="", help="why, shown in the banner (e.g. 'its run failed before planning')")
    commit = sub.add_parser("commit", help="print the commit the comment was planned at (exit 1: none)")
    commit.add_argument("--body-file", required=True, help="the comment's body ('-': standard input)")
    args = ap.parse_args(argv)
    try:
        body = _read(args.body_file)
        if args.command == "commit":
            sha = comment_commit(body)
            if sha is None:
                return 1
            print(sha)
            return 0
        sys.stdout.write(mark_stale(body, args.sha, args.reason))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        print(f"pr_comment: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
