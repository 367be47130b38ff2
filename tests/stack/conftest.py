from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.synth import ALL_STACKS, load_stack, synthesized_app, without_metadata


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both environments synthesized once per session through `python main.py` (fast import path)."""
    return synthesized_app(tmp_path_factory)


@pytest.fixture(scope="session")
def stacks(synth_dir: Path) -> dict[str, dict[str, Any]]:
    """Environment name (or "state" for the bootstrap stack) -> configuration without cdktf metadata."""
    return {name.rsplit("-", 1)[1]: without_metadata(load_stack(synth_dir, name)) for name in ALL_STACKS}
