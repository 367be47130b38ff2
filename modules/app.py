"""Build and synthesize the app: one stack per environment, plus each stack's ASL definition for review."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from modules.ca_bundle import CaBundle
from modules.cdk import App
from modules.settings import Settings
from modules.stack import PipelineStack
from modules.state_backend import STACK_NAME as STATE_STACK_NAME
from modules.state_backend import StateBackendStack

DEFINITION_FILE = "state-machine.asl.json"
# The provider versions and hashes every stack installs (`terraform init` verifies them). All stacks pin the same
# provider, so one lock file serves them all; README, "Provider versions", says how to add platforms or upgrade.
LOCK_FILE = Path(__file__).resolve().parent.parent / ".terraform.lock.hcl"


def synthesize(settings: list[Settings], outdir: Path, backend: dict[str, Any],
               allow_state_destroy: bool = False, bootstrap_state: bool = False,
               bundle: CaBundle | None = None) -> list[Path]:
    """Synthesize the state bootstrap stack and one pipeline stack per environment into outdir.

    Returns each stack's folder. Every folder gets the committed provider lock file; pipeline stacks also
    get state-machine.asl.json for review. ``bootstrap_state``: the bootstrap stack's first apply, with
    local state (README, "Remote state"). ``bundle``: the checked RDS CA bundle, which environments with
    database.tls = verify-full need.
    """
    outdir.mkdir(parents=True, exist_ok=True)  # the CDK creates only the last folder of the path
    app = App(outdir=str(outdir))
    local_state_dir = outdir / "stacks" / STATE_STACK_NAME if bootstrap_state else None
    bootstrap = StateBackendStack(app, backend, project=settings[0].project, allow_destroy=allow_state_destroy,
                                  local_state_dir=local_state_dir)
    stacks = [PipelineStack(app, environment, backend, bundle) for environment in settings]
    app.synth()
    folders = [outdir / "stacks" / bootstrap.node.id,
               *(outdir / "stacks" / stack.settings.stack_name for stack in stacks)]
    for folder in folders:
        shutil.copyfile(LOCK_FILE, folder / LOCK_FILE.name)
    for folder in folders[1:]:
        write_review_definition(folder)
    return folders


def write_review_definition(stack_folder: Path) -> Path:
    """The state machine definition exactly as synthesized (function ARNs as Terraform references)."""
    document = json.loads((stack_folder / "cdk.tf.json").read_text(encoding="utf-8"))
    machines = document["resource"]["aws_sfn_state_machine"]
    (definition,) = (machine["definition"] for machine in machines.values())
    target = stack_folder / DEFINITION_FILE
    target.write_text(json.dumps(json.loads(definition), indent=2) + "\n", encoding="utf-8")
    return target
