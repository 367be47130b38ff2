"""Real Terraform against the real AWS provider: init (backend off) and validate every synthesized stack."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.support.synth import ALL_STACKS, PIPELINE_STACKS
from tests.support.tools import terraform_binary, terraform_env
from tools.terraform import run
from modules.app import LOCK_FILE

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_terraform_validate(synth_dir: Path, tmp_path: Path, stack: str) -> None:
    binary = terraform_binary()
    folder = tmp_path / stack
    shutil.copytree(synth_dir / "stacks" / stack, folder)
    env = terraform_env(tmp_path)
    # -lockfile=readonly: init fails if the committed lock does not admit the provider it installs.
    init = run(binary, folder, env, "init", "-backend=false", "-input=false", "-no-color", "-lockfile=readonly")
    assert init.returncode == 0, init.stdout + init.stderr
    validate = run(binary, folder, env, "validate", "-json", "-no-color")
    result = json.loads(validate.stdout)
    assert result["valid"] is True, json.dumps(result["diagnostics"], indent=2)
    assert result["error_count"] == 0
    assert (folder / ".terraform.lock.hcl").read_text() == LOCK_FILE.read_text()  # used as committed


def test_every_stack_gets_the_committed_lock_file(synth_dir: Path) -> None:
    """One provider line: the version the tests and the rehearsal run, with hashes, for every stack."""
    from modules.stack import AWS_PROVIDER_VERSION

    lock = LOCK_FILE.read_text()
    block = re.search(r'provider "registry.terraform.io/hashicorp/aws" \{(.*?)\n\}', lock, re.S).group(1)
    assert re.search(r'^\s*version\s*=\s*"5\.100\.0"$', block, re.M)  # the mirror's, the rehearsal's
    assert re.search(rf'^\s*constraints\s*=\s*"{re.escape(AWS_PROVIDER_VERSION)}"$', block, re.M)
    assert re.search(r'"h1:[A-Za-z0-9+/=]{44}"', block)
    assert lock.count("provider \"") == 1
    for stack in ALL_STACKS:
        assert (synth_dir / "stacks" / stack / ".terraform.lock.hcl").read_text() == lock


def test_a_lock_file_for_another_provider_version_stops_init(synth_dir: Path, tmp_path: Path) -> None:
    """The check above can fail: a lock naming another release than the one installable is refused."""
    binary = terraform_binary()
    folder = tmp_path / "stale-lock"
    shutil.copytree(synth_dir / "stacks" / PIPELINE_STACKS[0], folder)
    lock = folder / ".terraform.lock.hcl"
    lock.write_text(lock.read_text().replace('version     = "5.100.0"', 'version     = "5.101.0"'))
    init = run(binary, folder, terraform_env(tmp_path), "init", "-backend=false", "-input=false", "-no-color",
               "-lockfile=readonly")
    assert init.returncode != 0


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
