"""The lazy provider import changes nothing in the output: byte-identical to the stock import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.synth import ROOT, synthesize

pytestmark = pytest.mark.slow


def tree(folder: Path) -> dict[Path, bytes]:
    return {path.relative_to(folder): path.read_bytes() for path in sorted(folder.rglob("*"))
            if path.is_file() and ".terraform" not in path.parts}


def test_fast_and_stock_import_synthesize_identical_bytes(synth_dir: Path, tmp_path: Path) -> None:
    stock = synthesize(tmp_path / "stock", stock_import=True)
    fast, slow = tree(synth_dir), tree(stock)
    assert fast.keys() == slow.keys()
    assert [name for name in fast if fast[name] != slow[name]] == []


def test_fast_path_defers_provider_submodules() -> None:
    """Importing one resource loads a handful of provider modules, not ~2,200."""
    probe = (
        "import sys; from modules import fast_import; assert fast_import.enable();"
        "from cdktf_cdktf_provider_aws.vpc import Vpc;"
        "import cdktf_cdktf_provider_aws as aws; aws.s3_bucket;"
        "print(sum(1 for m in sys.modules if m.startswith('cdktf_cdktf_provider_aws.')))"
    )
    completed = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300,
                               check=False)
    assert completed.returncode == 0, completed.stderr
    loaded = int(completed.stdout.strip().splitlines()[-1])
    assert 2 < loaded < 10  # _jsii, vpc and s3_bucket (the last through the package's lazy __getattr__)
