"""Two independent ASL validators accept the synthesized definition and reject broken copies."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.support.synth import PIPELINE_STACKS
from tests.support.tools import asl_validator_binary, statelint_binary


def validate(definition_file: Path) -> dict[str, subprocess.CompletedProcess[str]]:
    commands = {
        "asl-validator": [asl_validator_binary(), "--json-path", str(definition_file)],
        "statelint": [statelint_binary(), str(definition_file)],
    }
    return {name: subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
            for name, command in commands.items()}


@pytest.mark.parametrize("stack", PIPELINE_STACKS)
def test_validators_accept_the_synthesized_definition(synth_dir: Path, stack: str) -> None:
    results = validate(synth_dir / "stacks" / stack / "state-machine.asl.json")
    for name, result in results.items():
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"


def _dangling_next(asl: dict[str, Any]) -> None:
    asl["States"]["CheckFetchInitialData"]["Default"] = "FetchIncidentz"


def _next_and_end(asl: dict[str, Any]) -> None:
    asl["States"]["ValidateData"]["End"] = True


def _choice_rule_without_next(asl: dict[str, Any]) -> None:
    del asl["States"]["CheckValidateData"]["Choices"][0]["Next"]


def _unreachable_state(asl: dict[str, Any]) -> None:
    asl["States"]["Orphan"] = {"Type": "Succeed"}


def _start_at_missing_state(asl: dict[str, Any]) -> None:
    asl["StartAt"] = "Begin"


BREAKAGES: dict[str, Callable[[dict[str, Any]], None]] = {
    "dangling-next": _dangling_next,
    "next-and-end": _next_and_end,
    "choice-rule-without-next": _choice_rule_without_next,
    "unreachable-state": _unreachable_state,
    "start-at-missing-state": _start_at_missing_state,
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_validators_reject_a_broken_copy(synth_dir: Path, tmp_path: Path, breakage: str) -> None:
    asl = copy.deepcopy(json.loads((synth_dir / "stacks" / "stepfuncproject-dev" / "state-machine.asl.json").read_text()))
    BREAKAGES[breakage](asl)
    broken = tmp_path / "broken.asl.json"
    broken.write_text(json.dumps(asl))
    results = validate(broken)
    assert {name: result.returncode != 0 for name, result in results.items()} == {
        "asl-validator": True, "statelint": True}, {n: r.stdout + r.stderr for n, r in results.items()}
