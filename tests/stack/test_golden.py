"""Golden files: the synthesized configuration of each environment and its ASL definition, byte for byte.

Regenerate after an intended change with `pipenv run pytest tests/stack/test_golden.py --update-golden`
and review the diff like any other code change.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.synth import ALL_STACKS, PIPELINE_STACKS

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
FILES = [(stack, "cdk.tf.json") for stack in ALL_STACKS] + [(stack, "state-machine.asl.json") for stack in PIPELINE_STACKS]


@pytest.mark.parametrize(("stack", "name"), FILES, ids=[f"{stack}/{name}" for stack, name in FILES])
def test_synthesized_output_matches_golden(synth_dir: Path, golden_file, stack: str, name: str) -> None:
    golden_file(GOLDEN / stack / name, (synth_dir / "stacks" / stack / name).read_bytes(), skip_after_rewrite=True)


def test_synthesis_is_deterministic(synth_dir: Path, tmp_path: Path) -> None:
    """A second synth from another working directory gives the same bytes everywhere, assets included."""
    from tests.support.synth import ROOT, run_main

    outdir = tmp_path / "again"
    completed = run_main("--outdir", str(outdir), cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    first = {path.relative_to(synth_dir): path.read_bytes() for path in synth_dir.rglob("*") if path.is_file()
             and ".terraform" not in path.parts}
    second = {path.relative_to(outdir): path.read_bytes() for path in outdir.rglob("*") if path.is_file()}
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []
    for text in (data for name, data in second.items() if name.suffix == ".json"):
        assert str(ROOT).encode() not in text and str(tmp_path).encode() not in text
