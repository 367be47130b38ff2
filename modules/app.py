"""Build and synthesize the app: one stack per environment, plus each stack's ASL definition for review."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cdktf import App

from modules.settings import Settings
from modules.stack import PipelineStack
from modules.state_backend import StateBackendStack

DEFINITION_FILE = "state-machine.asl.json"


def synthesize(settings: list[Settings], outdir: Path, backend: dict[str, Any],
               allow_state_destroy: bool = False) -> list[Path]:
    """Synthesize the state bootstrap stack and one pipeline stack per environment into outdir.

    Returns each stack's folder; pipeline stacks also get state-machine.asl.json for review.
    """
    app = App(outdir=str(outdir))
    bootstrap = StateBackendStack(app, backend, project=settings[0].project, allow_destroy=allow_state_destroy)
    stacks = [PipelineStack(app, environment, backend) for environment in settings]
    app.synth()
    folders = [outdir / "stacks" / stack.settings.stack_name for stack in stacks]
    for folder in folders:
        write_review_definition(folder)
    return [outdir / "stacks" / bootstrap.node.id, *folders]


def write_review_definition(stack_folder: Path) -> Path:
    """The state machine definition exactly as synthesized (function ARNs as Terraform references)."""
    document = json.loads((stack_folder / "cdk.tf.json").read_text(encoding="utf-8"))
    machines = document["resource"]["aws_sfn_state_machine"]
    (definition,) = (machine["definition"] for machine in machines.values())
    target = stack_folder / DEFINITION_FILE
    target.write_text(json.dumps(json.loads(definition), indent=2) + "\n", encoding="utf-8")
    return target
