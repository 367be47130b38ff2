"""Validate a synthesized app: `terraform init -backend=false` + `validate` per stack, and the state
machine definition through asl-validator and statelint.

    pipenv run python -m tools.validate [cdktf.out]
Exits non-zero and says which stack and check failed. Needs no AWS credentials.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tools.terraform import run, terraform_env, terraform_path

ROOT = Path(__file__).resolve().parents[1]


def validate_stack(folder: Path, terraform: str, scratch: Path) -> list[str]:
    """The stack's problems (none: valid). The `.terraform` folder that `init` creates is removed again."""
    try:
        return _problems(folder, terraform, scratch)
    finally:
        shutil.rmtree(folder / ".terraform", ignore_errors=True)


def _problems(folder: Path, terraform: str, scratch: Path) -> list[str]:
    problems: list[str] = []
    env = terraform_env(scratch)
    init = run(terraform, folder, env, "init", "-backend=false", "-input=false", "-no-color")
    if init.returncode != 0:
        return [f"terraform init failed:\n{init.stdout}{init.stderr}"]
    result = json.loads(run(terraform, folder, env, "validate", "-json", "-no-color").stdout or "{}")
    if not result.get("valid"):
        problems.append("terraform validate: " + json.dumps(result.get("diagnostics", result), indent=2))
    definition = folder / "state-machine.asl.json"
    if not definition.is_file():  # the bootstrap (state backend) stack has no state machine
        return problems
    validators = {
        "asl-validator": [str(ROOT / "node_modules" / ".bin" / "asl-validator"), "--json-path", str(definition)],
        "statelint": [str(Path(sys.executable).with_name("statelint")), str(definition)],
    }
    for name, command in validators.items():
        completed = run(command[0], folder, env, *command[1:])
        if completed.returncode != 0:
            problems.append(f"{name}: {completed.stdout}{completed.stderr}".strip())
    return problems


def main(argv: list[str]) -> int:
    outdir = Path(argv[0] if argv else "cdktf.out")
    terraform = terraform_path()
    if terraform is None:
        print("error: terraform not found on PATH (Terraform >= 1.10 is required)", file=sys.stderr)
        return 2
    stacks = sorted(path for path in (outdir / "stacks").iterdir() if (path / "cdk.tf.json").is_file())
    failed = 0
    with tempfile.TemporaryDirectory() as scratch:
        for folder in stacks:
            started = time.perf_counter()
            problems = validate_stack(folder, terraform, Path(scratch))
            verdict = "ok" if not problems else "FAILED"
            print(f"{folder.name:<28} terraform validate + asl-validator + statelint  {verdict:<6} "
                  f"{time.perf_counter() - started:5.1f} s")
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
            failed += bool(problems)
    print(f"{len(stacks) - failed} of {len(stacks)} stacks valid")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
