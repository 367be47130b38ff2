"""Run the app the way a user does (`python main.py`), in a subprocess, into a folder of the test's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PIPELINE_STACKS = ("stepfuncproject-dev", "stepfuncproject-prod")
BOOTSTRAP_STACK = "stepfuncproject-state"
ALL_STACKS = (BOOTSTRAP_STACK, *PIPELINE_STACKS)


STAND_IN_CA_BUNDLE = ROOT / "tests" / "fixtures" / "tls" / "standin-rds-ca.pem"


def run_main(*args: str, stock_import: bool | None = False, cwd: Path = ROOT,
             timeout: float | None = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python main.py *args`; stock_import chooses the import path, None keeps whatever the environment says.

    The functions' CA bundle is the tests' stand-in (tests/fixtures/tls/), whether or not certs/ holds AWS's:
    the same synth everywhere (golden files), and one the local PostgreSQL's certificates verify against.
    """
    env = {**os.environ, "STEPFUNC_RDS_CA_BUNDLE": str(STAND_IN_CA_BUNDLE), **(env or {})}
    if stock_import is not None:
        env.pop("STEPFUNC_STOCK_IMPORT", None)
        if stock_import:
            env["STEPFUNC_STOCK_IMPORT"] = "1"
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def synthesize(outdir: Path, *args: str, stock_import: bool = False) -> Path:
    completed = run_main("--outdir", str(outdir), *args, stock_import=stock_import)
    if completed.returncode != 0:
        raise AssertionError(f"synth failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}")
    return outdir


_SYNTHESIZED: dict[Path, Path] = {}


def synthesized_app(tmp_path_factory: Any) -> Path:
    """Every environment synthesized (`python main.py`, fast import path) once per pytest session and process,
    whichever suite asks first (tests/stack's `synth_dir`, tests/workflow's `synthesized`). Read it, don't write."""
    key = tmp_path_factory.getbasetemp()
    if key not in _SYNTHESIZED:
        _SYNTHESIZED[key] = synthesize(tmp_path_factory.mktemp("synth") / "cdktf.out")
    return _SYNTHESIZED[key]


def load_stack(outdir: Path, stack: str) -> dict[str, Any]:
    return json.loads((outdir / "stacks" / stack / "cdk.tf.json").read_text())


def without_metadata(node: Any) -> Any:
    """The configuration without cdktf's `//` metadata blocks."""
    if isinstance(node, dict):
        return {key: without_metadata(value) for key, value in node.items() if key != "//"}
    if isinstance(node, list):
        return [without_metadata(value) for value in node]
    return node


def only(resources: dict[str, Any], kind: str) -> dict[str, Any]:
    (value,) = resources[kind].values()
    return value


def resources(stack: dict[str, Any], kind: str) -> dict[str, Any]:
    """The stack's resources of one type, by key (none: empty)."""
    return stack["resource"].get(kind, {})


def statements_by_sid(policy: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A policy document's statements by Sid (every statement we write has one)."""
    return {statement["Sid"]: statement for statement in policy["Statement"]}
