"""Finding processes left behind by a run: those whose command line mentions a folder or that run inside it."""

from __future__ import annotations

import os
from pathlib import Path


def processes_using(folder: str | Path) -> list[str]:
    """`pid: command line` of each process whose command line or working directory is inside folder."""
    folder = str(folder)
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        try:
            cwd = os.readlink(proc / "cwd")
        except OSError:  # another user's process (when not root): its command line is still checked
            cwd = ""
        if folder in cmdline or cwd.startswith(folder):
            found.append(f"{proc.name}: {cmdline}")
    return found
