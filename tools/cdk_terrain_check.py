"""Synthesize the app with CDKTF (the default) and with CDK Terrain, and compare the Terraform JSON.

    python -m tools.cdk_terrain_check                 # `make cdk-terrain-check` (docs/cdk-terrain.md)
    python -m tools.cdk_terrain_check --keep /tmp/x   # keep both outputs (/tmp/x/cdktf, /tmp/x/cdktn)

Runs `main.py --outdir ...` twice, in parallel, each into its own folder: with this interpreter and
STEPFUNC_CDK=cdktf, and with the CDK Terrain virtualenv (.tools/cdktn, `make cdk-terrain-env`) and
STEPFUNC_CDK=cdktn. Before trusting the outputs it confirms which CDK each run really used: the flavour
modules/cdk_flavour.py selects in that environment, and the CDK version each stack's metadata records.
Then every stack's cdk.tf.json is compared, after removing only IGNORED_PATHS; the other files of each
stack folder (state machine definition, asset zips) must be byte-identical, and manifest.json equal as JSON
apart from IGNORED_MANIFEST_PATHS.
Prints "same" or the differing JSON paths per stack, and the timings. Exit status 0: identical; 1: anything else.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CDKTN_PYTHON = ROOT / ".tools" / "cdktn" / "bin" / "python"
CDK_ENV = "STEPFUNC_CDK"  # modules/cdk_flavour.py's variable (not imported: this tool never loads the CDK)
SYNTH_TIMEOUT = 900
SHOWN_DIFFERENCES = 40  # per stack; the rest are counted

JsonPath = tuple[str | int, ...]
# The only parts of a stack's cdk.tf.json allowed to differ, each with the reason. Only `//` keys may be
# listed: Terraform ignores them (comments in its JSON syntax); everything else is configuration.
IGNORED_PATHS: dict[JsonPath, str] = {
    ("//", "metadata", "version"): (
        "the version of the CDK that synthesized the stack (cdktf 0.21.0, cdktn 0.24.0). Terraform ignores "
        "`//` keys; the check instead asserts it equals the CDK version installed in each run's environment"),
}
# The same for manifest.json, the output's index for the cdktf/cdktn CLI (Terraform never reads it).
IGNORED_MANIFEST_PATHS: dict[JsonPath, str] = {
    ("version",): "the version of the CDK that wrote the output, as in each stack's //.metadata.version",
}

# Run with each interpreter (cwd = the project): which flavour cdk_flavour selects and what is installed.
PROBE = """
import importlib.metadata, importlib.util, json, sys
from modules.cdk_flavour import selected
flavour = selected()
distributions = importlib.metadata.packages_distributions()
def installed(package):
    if importlib.util.find_spec(package) is None:
        return None
    name = (distributions.get(package) or [package])[0]
    return [name, importlib.metadata.version(name)]
print(json.dumps({"flavour": flavour.name, "core": installed(flavour.core_package),
                  "provider": installed(flavour.provider_package), "python": sys.version.split()[0],
                  "importable": sorted(p for p in ("cdktf", "cdktn", "cdktf_cdktf_provider_aws", "cdktn_provider_aws")
                                       if importlib.util.find_spec(p) is not None)}))
"""


@dataclass
class Run:
    """One synthesis: which interpreter, which flavour it must use, and what happened."""

    label: str  # the flavour it is meant to use: "cdktf" or "cdktn"
    python: Path
    outdir: Path
    probe: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def environment(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
        env[CDK_ENV] = self.label
        return env

    def describe(self) -> str:
        if not self.probe:
            return f"{self.label}: {self.python}"
        packages = " + ".join(f"{name} {version}" for name, version in filter(None, (self.probe["core"],
                                                                                    self.probe["provider"])))
        packages = packages or f"no {self.label} packages"
        return f"{self.label}: {packages} (Python {self.probe['python']}, {_shown(self.python)})"


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def execute(run: Run) -> Run:
    """Probe the environment, then `main.py --outdir`; problems go to run.errors."""
    try:
        return _execute(run, time.monotonic())
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:  # a hung synth, a garbled probe, ...
        run.errors.append(f"{type(exc).__name__}: {exc}")
        return run


def _execute(run: Run, started: float) -> Run:
    if not run.python.exists():
        run.errors.append(f"{run.python} is missing: run `make cdk-terrain-env` (builds .tools/cdktn)")
        return run
    env = run.environment()
    probe = subprocess.run([str(run.python), "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=120, check=False)
    if probe.returncode != 0:
        run.errors.append(f"probing {run.python} failed:\n{probe.stderr.strip()[-3000:]}")
        return run
    run.probe = json.loads(probe.stdout.strip().splitlines()[-1])
    if run.probe["flavour"] != run.label:
        run.errors.append(f"{CDK_ENV}={run.label} but {run.python} selects {run.probe['flavour']!r}")
    if run.probe["core"] is None or run.probe["provider"] is None:
        run.errors.append(f"{run.python} lacks the {run.label} packages (importable: {run.probe['importable']})")
    if run.errors:
        return run
    synth = subprocess.run([str(run.python), str(ROOT / "main.py"), "--outdir", str(run.outdir)], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=SYNTH_TIMEOUT, check=False)
    run.seconds = time.monotonic() - started
    if synth.returncode != 0:
        run.errors.append(f"main.py failed ({synth.returncode}):\n{(synth.stdout + synth.stderr).strip()[-3000:]}")
        return run
    core_version = run.probe["core"][1]
    recorded = {f"{stack}'s //.metadata.version": lookup(config, ("//", "metadata", "version"))
                for stack, config in load_stacks(run.outdir).items()}
    recorded["manifest.json's version"] = lookup(load_manifest(run.outdir), ("version",))
    for where, version in recorded.items():
        if version != core_version:
            run.errors.append(f"{where} is {version!r}, but this environment has {run.label} {core_version}")
    return run


def load_stacks(outdir: Path) -> dict[str, dict[str, Any]]:
    return {path.parent.name: json.loads(path.read_text(encoding="utf-8"))
            for path in sorted((outdir / "stacks").glob("*/cdk.tf.json"))}


def load_manifest(outdir: Path) -> dict[str, Any]:
    path = outdir / "manifest.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def lookup(node: Any, path: JsonPath) -> Any:
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def without_ignored(config: dict[str, Any], ignored: dict[JsonPath, str] = IGNORED_PATHS) -> dict[str, Any]:
    """A copy of one stack's configuration without the ignored paths (each removed only where it exists)."""
    config = copy.deepcopy(config)
    for path in ignored:
        parent = lookup(config, path[:-1])
        if isinstance(parent, dict):
            parent.pop(path[-1], None)
    return config


def json_path(path: JsonPath) -> str:
    text = ""
    for key in path:
        if isinstance(key, int):
            text += f"[{key}]"
        elif re.fullmatch(r"[A-Za-z0-9_/-]+", key):
            text += f".{key}" if text else key
        else:
            text += f"[{json.dumps(key)}]"
    return text or "(document)"


def _brief(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else f"{text[:117]}..."


def differences(left: Any, right: Any, labels: tuple[str, str] = ("cdktf", "cdktn"),
                path: JsonPath = ()) -> list[str]:
    """Every place two JSON documents differ, as `json.path: what` lines (types count: 1 is not true)."""
    if isinstance(left, dict) and isinstance(right, dict):
        found: list[str] = []
        for key in sorted(left.keys() | right.keys()):
            if key not in right:
                found.append(f"{json_path(path + (key,))}: only in {labels[0]}: {_brief(left[key])}")
            elif key not in left:
                found.append(f"{json_path(path + (key,))}: only in {labels[1]}: {_brief(right[key])}")
            else:
                found += differences(left[key], right[key], labels, path + (key,))
        return found
    if isinstance(left, list) and isinstance(right, list):
        found = []
        for index, (one, other) in enumerate(zip(left, right)):
            found += differences(one, other, labels, path + (index,))
        if len(left) != len(right):
            found.append(f"{json_path(path)}: {len(left)} items in {labels[0]}, {len(right)} in {labels[1]}")
        return found
    if type(left) is type(right) and left == right:
        return []
    return [f"{json_path(path)}: {_brief(left)} in {labels[0]}, {_brief(right)} in {labels[1]}"]


def compare_stacks(left: dict[str, dict[str, Any]], right: dict[str, dict[str, Any]],
                   labels: tuple[str, str] = ("cdktf", "cdktn")) -> dict[str, list[str]]:
    """Stack name -> the differences of its cdk.tf.json once IGNORED_PATHS are removed ([] = same)."""
    result: dict[str, list[str]] = {}
    for stack in sorted(left.keys() | right.keys()):
        if stack not in right or stack not in left:
            result[stack] = [f"the stack was synthesized only by {labels[0] if stack in left else labels[1]}"]
        else:
            result[stack] = differences(without_ignored(left[stack]), without_ignored(right[stack]), labels)
    return result


def compare_other_files(left: Path, right: Path, labels: tuple[str, str]) -> list[str]:
    """The rest of the output: stack folders' other files byte for byte, manifest.json as JSON (without
    IGNORED_MANIFEST_PATHS)."""
    found: list[str] = []

    def files(root: Path) -> dict[str, Path]:
        return {path.relative_to(root).as_posix(): path for path in sorted((root / "stacks").rglob("*"))
                if path.is_file() and path.name != "cdk.tf.json"}

    ours, theirs = files(left), files(right)
    for name in sorted(ours.keys() | theirs.keys()):
        if name not in theirs or name not in ours:
            found.append(f"{name}: only in {labels[0] if name in ours else labels[1]}")
        elif ours[name].read_bytes() != theirs[name].read_bytes():
            found.append(f"{name}: contents differ")
    manifests = [without_ignored(load_manifest(root), IGNORED_MANIFEST_PATHS) for root in (left, right)]
    found += [f"manifest.json: {line}" for line in differences(*manifests, labels)]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cdktn-python", type=Path, default=CDKTN_PYTHON,
                        help="interpreter of the CDK Terrain environment (default: .tools/cdktn/bin/python)")
    parser.add_argument("--keep", type=Path, help="write both outputs under this folder and keep them")
    parser.add_argument("--report", type=Path, help="also write the result as JSON to this file")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    started = time.monotonic()
    base = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="cdk-terrain-check-"))
    base.mkdir(parents=True, exist_ok=True)
    runs = [Run("cdktf", Path(sys.executable), base / "cdktf"), Run("cdktn", args.cdktn_python, base / "cdktn")]
    for run in runs:
        shutil.rmtree(run.outdir, ignore_errors=True)
    try:
        with ThreadPoolExecutor(max_workers=len(runs)) as pool:
            list(pool.map(execute, runs))
        synthesized = time.monotonic()
        print("ignored differences (tools/cdk_terrain_check.py IGNORED_PATHS, IGNORED_MANIFEST_PATHS):")
        for path, reason in IGNORED_PATHS.items():
            print(f"  stacks/*/cdk.tf.json {json_path(path)}: {reason}")
        for path, reason in IGNORED_MANIFEST_PATHS.items():
            print(f"  manifest.json {json_path(path)}: {reason}")
        for run in runs:
            print(f"{run.describe()}: synthesized in {run.seconds:.1f} s" if not run.errors else run.describe())
            for error in run.errors:
                print(f"  error: {error}")
        stacks: dict[str, list[str]] = {}
        other: list[str] = []
        if not any(run.errors for run in runs):
            labels = (runs[0].label, runs[1].label)
            stacks = compare_stacks(load_stacks(runs[0].outdir), load_stacks(runs[1].outdir), labels)
            other = compare_other_files(runs[0].outdir, runs[1].outdir, labels)
            if not stacks:
                other.append("no stack was synthesized")
            for stack, found in stacks.items():
                print(f"{stack}: {'same' if not found else f'{len(found)} differences'}")
                for line in found[:SHOWN_DIFFERENCES]:
                    print(f"  {line}")
                if len(found) > SHOWN_DIFFERENCES:
                    print(f"  ... and {len(found) - SHOWN_DIFFERENCES} more")
            print(f"other files (assets, state machine definitions, manifest.json): "
                  f"{'same' if not other else f'{len(other)} differences'}")
            for line in other:
                print(f"  {line}")
        identical = not any(run.errors for run in runs) and not other and not any(stacks.values())
        finished = time.monotonic()
        print(f"timings: synth in parallel {synthesized - started:.1f} s "
              f"({', '.join(f'{run.label} {run.seconds:.1f} s' for run in runs)}), "
              f"comparison {finished - synthesized:.2f} s, total {finished - started:.1f} s")
        failed = any(run.errors for run in runs)
        print("identical Terraform JSON" if identical else
              "FAILED: a synthesis did not run as required (errors above)" if failed else
              "DIFFERENT: see above; docs/cdk-terrain.md explains what to do")
        if args.keep:
            print(f"outputs kept in {base}/cdktf and {base}/cdktn")
        if args.report:
            args.report.write_text(json.dumps({
                "identical": identical,
                "ignored": {**{f"cdk.tf.json {json_path(path)}": reason for path, reason in IGNORED_PATHS.items()},
                            **{f"manifest.json {json_path(path)}": reason
                               for path, reason in IGNORED_MANIFEST_PATHS.items()}},
                "runs": {run.label: {"python": str(run.python), "probe": run.probe, "seconds": round(run.seconds, 2),
                                     "errors": run.errors} for run in runs},
                "stacks": stacks, "other": other, "seconds": round(finished - started, 2),
            }, indent=2) + "\n", encoding="utf-8")
        return 0 if identical else 1
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
