"""Fixtures for the plan review tests.

Real plans come from ``tests/review/plans.py`` (terraform + moto), generated
once per test session. ``--update-golden`` (defined in ``tests/conftest.py``)
rewrites the golden Markdown files instead of comparing.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pytest

from tests.review import plans
from tests.support.tools import terraform_binary

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="session")
def plan_files(tmp_path_factory) -> dict[str, Path]:
    """Scenario name -> plan JSON made by a real ``terraform plan`` (scrubbed of volatile ids).

    Under pytest-xdist the workers share one generation (a file lock in the
    run's common temporary folder) instead of each planning everything.
    """
    terraform_binary()  # skips (fails under CI=true) without terraform
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return plans.generate(tmp_path_factory.mktemp("plans"))
    shared = tmp_path_factory.getbasetemp().parent / "review-plans-shared"
    shared.mkdir(exist_ok=True)
    done = shared / "done.json"
    with open(shared / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not done.exists():
                files = plans.generate(shared / "plans")
                done.write_text(json.dumps({k: str(v) for k, v in files.items()}))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return {k: Path(v) for k, v in json.loads(done.read_text()).items()}


@pytest.fixture(scope="session")
def tf_env(tmp_path_factory) -> dict[str, str]:
    """Environment for running terraform (provider mirror, no GitHub variables)."""
    terraform_binary()
    env = plans.terraform_env(tmp_path_factory.mktemp("tfcli"))
    for var in list(env):
        if var.startswith("GITHUB_") or var in ("TF_NO_BACKEND", "CI"):
            env.pop(var)
    return env


@pytest.fixture
def golden(golden_file):
    """``golden(name, text)``: compare ``text`` with ``golden/<name>`` (or rewrite it)."""
    return lambda name, text: golden_file(GOLDEN / name, text)
