"""Options and fixtures shared by every suite."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
# Every synth in the tests packs the stand-in CA (tests/fixtures/tls/README.md), also main.py runs of tools the
# tests start: the same output whether or not certs/ holds AWS's bundle.
os.environ["STEPFUNC_RDS_CA_BUNDLE"] = str(TESTS / "fixtures" / "tls" / "standin-rds-ca.pem")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite golden files from the current output instead of comparing")


@pytest.fixture(scope="session")
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture
def golden_file(update_golden: bool) -> Callable[..., None]:
    """``golden_file(path, produced, skip_after_rewrite=False)``: assert that ``produced`` (text, or bytes
    compared byte for byte) is what the golden file at ``path`` holds. With --update-golden the file is
    rewritten instead, and the test goes on (or is skipped, with ``skip_after_rewrite``)."""

    def check(path: Path, produced: str | bytes, *, skip_after_rewrite: bool = False) -> None:
        shown = path.relative_to(TESTS) if path.is_relative_to(TESTS) else path
        binary = isinstance(produced, bytes)
        if update_golden:
            path.parent.mkdir(parents=True, exist_ok=True)
            if binary:
                path.write_bytes(produced)
            else:
                path.write_text(produced, encoding="utf-8")
            if skip_after_rewrite:
                pytest.skip(f"rewrote {shown}")
            return
        assert path.is_file(), f"{path} is missing: run pytest --update-golden and commit it"
        expected = path.read_bytes() if binary else path.read_text(encoding="utf-8")
        assert produced == expected, (
            f"{shown} differs from the golden file: review with `diff` and, if intended, run pytest --update-golden")

    return check
