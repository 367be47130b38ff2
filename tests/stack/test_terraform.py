"""Real Terraform against the real AWS provider: init (backend off) and validate every synthesized stack."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.support.synth import ALL_STACKS, PIPELINE_STACKS
from tests.support.tools import terraform_binary, terraform_env
from tools.terraform import run

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_terraform_validate(synth_dir: Path, tmp_path: Path, stack: str) -> None:
    binary = terraform_binary()
    folder = tmp_path / stack
    shutil.copytree(synth_dir / "stacks" / stack, folder)
    env = terraform_env(tmp_path)
    init = run(binary, folder, env, "init", "-backend=false", "-input=false", "-no-color")
    assert init.returncode == 0, init.stdout + init.stderr
    validate = run(binary, folder, env, "validate", "-json", "-no-color")
    result = json.loads(validate.stdout)
    assert result["valid"] is True, json.dumps(result["diagnostics"], indent=2)
    assert result["error_count"] == 0
    lock = (folder / ".terraform.lock.hcl").read_text()
    assert 'provider "registry.terraform.io/hashicorp/aws"' in lock


def test_validate_catches_a_broken_configuration(synth_dir: Path, tmp_path: Path) -> None:
    """The check above can fail: an attribute the provider does not know is reported."""
    binary = terraform_binary()
    folder = tmp_path / "broken"
    shutil.copytree(synth_dir / "stacks" / PIPELINE_STACKS[0], folder)
    config = json.loads((folder / "cdk.tf.json").read_text())
    next(iter(config["resource"]["aws_db_instance"].values()))["storage_encryption"] = True
    (folder / "cdk.tf.json").write_text(json.dumps(config))
    env = terraform_env(tmp_path)
    assert run(binary, folder, env, "init", "-backend=false", "-input=false").returncode == 0
    validate = run(binary, folder, env, "validate", "-json", "-no-color")
    result = json.loads(validate.stdout)
    assert result["valid"] is False
    assert any("storage_encryption" in json.dumps(d) for d in result["diagnostics"])
