"""The lazy provider import changes nothing in the output: byte-identical to the stock import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.synth import ROOT, synthesize
from tests.support.tools import require

pytestmark = pytest.mark.slow


def tree(folder: Path) -> dict[Path, bytes]:
    return {path.relative_to(folder): path.read_bytes() for path in sorted(folder.rglob("*"))
            if path.is_file() and ".terraform" not in path.parts}


def test_fast_and_stock_import_synthesize_identical_bytes(synth_dir: Path, tmp_path: Path) -> None:
    stock = synthesize(tmp_path / "stock", stock_import=True)
    fast, slow = tree(synth_dir), tree(stock)
    assert fast.keys() == slow.keys()
    assert [name for name in fast if fast[name] != slow[name]] == []


def flavour_python(flavour: str) -> str:
    """The interpreter whose environment has the flavour's packages: this one for CDKTF, .tools/cdktn for CDK Terrain."""
    if flavour == "cdktf":
        return sys.executable
    require("the CDK Terrain environment", ROOT / ".tools" / "cdktn" / ".installed", "run `make cdk-terrain-env`")
    return str(ROOT / ".tools" / "cdktn" / "bin" / "python")


@pytest.mark.parametrize(("flavour", "package", "node_package", "exports"), [
    ("cdktf", "cdktf_cdktf_provider_aws", "@cdktf/provider-aws", 2200),
    ("cdktn", "cdktn_provider_aws", "@cdktn/provider-aws", 2400),
])
def test_fast_path_defers_provider_submodules(tmp_path: Path, flavour: str, package: str, node_package: str,
                                              exports: int) -> None:
    """Importing one resource loads a handful of provider modules, not ~2,200, in Python and in node."""
    probe = (
        "import importlib, sys; from modules import fast_import; assert fast_import.enable();"
        "package = fast_import.PROVIDER_PACKAGE; print(package);"
        "vpc = importlib.import_module(package + '.vpc');"
        "aws = importlib.import_module(package); aws.s3_bucket;"
        "print(sum(1 for m in sys.modules if m.startswith(package + '.')));"
        "core = importlib.import_module(fast_import.FLAVOUR.core_package);"  # a resource: node loads the provider
        "vpc.Vpc(core.TerraformStack(core.App(outdir=sys.argv[1]), 'probe'), 'vpc', cidr_block='10.0.0.0/16')"
    )
    trace = tmp_path / "lazy-index.trace"
    env = {**os.environ, "STEPFUNC_CDK": flavour, "STEPFUNC_LAZY_INDEX_TRACE": str(trace)}
    env.pop("STEPFUNC_STOCK_IMPORT", None)
    completed = subprocess.run([flavour_python(flavour), "-c", probe, str(tmp_path / "out")], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr
    imported, loaded = completed.stdout.split()[-2:]
    assert imported == package
    assert 2 < int(loaded) < 10  # _jsii, vpc and s3_bucket (the last through the package's lazy __getattr__)
    # node: lazy_provider_index.js recognised the provider's index and turned its eager exports into getters
    (line,) = trace.read_text().splitlines()
    name_version, deferred = line.rsplit(" ", 1)
    assert name_version.rsplit("@", 1)[0] == node_package and int(deferred) > exports, line
