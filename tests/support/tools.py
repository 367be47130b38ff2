"""Locating the external tools the tests drive: Terraform (+ AWS provider), checkov, Node validators.

A missing tool skips its tests with the reason printed, except under CI=true, where it fails: CI
installs everything (.ci/run), so a skip there would hide a broken install step.
"""

from __future__ import annotations

import os
import sys
import shutil
from pathlib import Path

import pytest

from tools.terraform import terraform_env, terraform_path  # noqa: F401  (re-exported for tests)

ROOT = Path(__file__).resolve().parents[2]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(tool: str, path: str | Path | None, why: str) -> str:
    """The tool's path, or skip (fail in CI) naming what is missing."""
    if path and Path(path).exists():
        return str(path)
    message = f"{tool} not available: {why}"
    if in_ci():
        pytest.fail(f"{message} (CI=true requires it; see .ci/run)")
    pytest.skip(message)


def terraform_binary() -> str:
    return require("terraform", terraform_path(), "install Terraform >= 1.10 (see README)")


def checkov_binary() -> str:
    candidates = [os.environ.get("CHECKOV_BIN"), ROOT / ".tools" / "checkov" / "bin" / "checkov", shutil.which("checkov")]
    found = next((c for c in candidates if c and Path(c).exists()), None)
    return require("checkov", found, "run `make tools` (installs it into .tools/checkov)")


def asl_validator_binary() -> str:
    return require("asl-validator", ROOT / "node_modules" / ".bin" / "asl-validator", "run `npm ci`")


def statelint_binary() -> str:
    return require("statelint", shutil.which("statelint") or Path(sys.executable).with_name("statelint"),
                   "run `pipenv sync --dev`")
