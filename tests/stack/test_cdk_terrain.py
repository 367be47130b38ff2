"""The way off the archived CDKTF: the app synthesized with CDK Terrain gives the default's Terraform JSON.

Also: how modules/cdk_flavour.py picks the CDK, that tools/cdk_terrain_check.py's ignore list hides nothing
but the documented metadata, and that modules/cdk.py stays the only way into the CDK packages.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from modules import cdk_flavour
from tests.support.synth import ALL_STACKS, ROOT
from tests.support.tools import require
from tools import cdk_terrain_check as check

CDKTN_ENV_STAMP = ROOT / ".tools" / "cdktn" / ".installed"  # written by `make cdk-terrain-env` once installed
CDK_PACKAGES = {"cdktf", "cdktn", "cdktf_cdktf_provider_aws", "cdktn_provider_aws", "constructs"}
# The seam and the two modules that must name the packages before the CDK loads (docs/cdk-terrain.md).
MAY_IMPORT_CDK = {"modules/cdk.py", "modules/cdk_flavour.py", "modules/fast_import.py"}


def cdktn_python() -> Path:
    require("the CDK Terrain environment", CDKTN_ENV_STAMP,
            "run `make cdk-terrain-env` (builds .tools/cdktn from tools/cdktn-requirements.txt)")
    return check.CDKTN_PYTHON


@pytest.mark.slow
def test_cdk_terrain_synthesizes_the_same_terraform_json(tmp_path: Path) -> None:
    python = cdktn_python()
    report_file = tmp_path / "report.json"
    completed = subprocess.run(
        [sys.executable, "-m", "tools.cdk_terrain_check", "--cdktn-python", str(python), "--report", str(report_file)],
        cwd=ROOT, capture_output=True, text=True, timeout=1200, check=False)
    output = f"{completed.stdout}\n{completed.stderr}"
    assert completed.returncode == 0, output
    report = json.loads(report_file.read_text())
    assert report["identical"], output
    # both flavours really ran, each with its own packages
    runs = report["runs"]
    assert {label: run["probe"]["flavour"] for label, run in runs.items()} == {"cdktf": "cdktf", "cdktn": "cdktn"}
    assert runs["cdktf"]["probe"]["core"][0] == "cdktf" and runs["cdktn"]["probe"]["core"][0] == "cdktn"
    assert runs["cdktn"]["probe"]["provider"][0] == "cdktn-provider-aws"
    assert "cdktf" not in runs["cdktn"]["probe"]["importable"]  # the CDK Terrain run cannot fall back on CDKTF
    assert report["stacks"] == {stack: [] for stack in ALL_STACKS}, output
    assert report["other"] == []


# --- the comparison itself, on small documents shaped like cdk.tf.json ---

def stack_config(**changes: object) -> dict:
    config = {
        "//": {"metadata": {"backend": "s3", "stackName": "demo", "version": "0.21.0"},
               "outputs": {"demo": {"Arn": "Arn"}}},
        "terraform": {"required_providers": {"aws": {"source": "hashicorp/aws", "version": ">= 5.100.0, < 7.0.0"}}},
        "resource": {"aws_lambda_function": {"fn": {
            "//": {"metadata": {"path": "demo/fn", "uniqueId": "fn"}},
            "memory_size": 256, "source_code_hash": "abc=", "tags": {"Name": "fn"}, "layers": ["arn:1"]}}},
    }
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = config
        for key in parents:
            node = node[key]
        if value is None:
            del node[last]
        else:
            node[last] = value
    return config


def compare(left: dict, right: dict) -> list[str]:
    return check.compare_stacks({"demo": left}, {"demo": right})["demo"]


def test_only_the_documented_metadata_is_ignored() -> None:
    assert compare(stack_config(), stack_config(**{"//__metadata__version": "0.24.0"})) == []
    for path, reason in check.IGNORED_PATHS.items():
        assert path[0] == "//", f"{path}: only `//` metadata (which Terraform ignores) may be ignored"
        assert len(reason) > 40, f"{path}: say why the difference is expected"
    assert list(check.IGNORED_MANIFEST_PATHS) == [("version",)]


@pytest.mark.parametrize(("change", "reported"), [
    ({"resource__aws_lambda_function__fn__memory_size": 512}, "resource.aws_lambda_function.fn.memory_size: 256"),
    ({"resource__aws_lambda_function__fn__memory_size": "256"}, "resource.aws_lambda_function.fn.memory_size"),
    ({"resource__aws_lambda_function__fn__source_code_hash": "xyz="}, "fn.source_code_hash: \"abc=\""),
    ({"resource__aws_lambda_function__fn__tags": None}, "resource.aws_lambda_function.fn.tags: only in cdktf"),
    ({"resource__aws_lambda_function__fn__layers": ["arn:1", "arn:2"]}, "fn.layers: 1 items in cdktf, 2 in cdktn"),
    # a `version` anywhere but the top-level metadata is compared: the provider constraint above all
    ({"terraform__required_providers__aws__version": "~> 6.0"}, "terraform.required_providers.aws.version"),
    # the rest of the metadata, a resource's own metadata: compared
    ({"//__metadata__backend": "local"}, "//.metadata.backend"),
    ({"resource__aws_lambda_function__fn__//": {"metadata": {"path": "demo/fn", "uniqueId": "fn",
                                                               "version": "0.24.0"}}},
     "resource.aws_lambda_function.fn.//.metadata.version: only in cdktn"),
])
def test_the_ignore_list_cannot_hide_a_real_difference(change: dict, reported: str) -> None:
    left = stack_config()
    right = stack_config(**{"//__metadata__version": "0.24.0", **change})
    found = compare(left, right)
    assert len(found) == 1 and reported in found[0], found


def test_a_stack_only_one_flavour_synthesized_is_reported() -> None:
    result = check.compare_stacks({"a": stack_config(), "b": stack_config()}, {"a": stack_config()})
    assert result["a"] == [] and result["b"] == ["the stack was synthesized only by cdktf"]


def test_true_and_1_are_different_json() -> None:
    assert check.differences({"x": 1}, {"x": True}) == ["x: 1 in cdktf, true in cdktn"]
    assert check.differences({"x": 1}, {"x": 1.0}) != []


# --- modules/cdk_flavour.py ---

@pytest.mark.parametrize(("value", "flavour", "core", "provider"), [
    ("cdktf", "cdktf", "cdktf", "cdktf_cdktf_provider_aws"),
    ("cdktn", "cdktn", "cdktn", "cdktn_provider_aws"),
    (" cdktn\n", "cdktn", "cdktn", "cdktn_provider_aws"),
])
def test_the_environment_variable_chooses_the_flavour(monkeypatch: pytest.MonkeyPatch, value: str, flavour: str,
                                                      core: str, provider: str) -> None:
    monkeypatch.setenv(cdk_flavour.CDK_ENV, value)
    selected = cdk_flavour.selected()
    assert (selected.name, selected.core_package, selected.provider_package) == (flavour, core, provider)


@pytest.mark.parametrize("value", ["cdk8s", "CDKTF", "terraform", "cdktf,cdktn"])
def test_an_unknown_flavour_is_refused_by_name(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(cdk_flavour.CDK_ENV, value)
    with pytest.raises(RuntimeError) as raised:
        cdk_flavour.selected()
    assert str(raised.value) == f"STEPFUNC_CDK={value!r}: choose one of cdktf, cdktn"


@pytest.mark.parametrize(("installed", "expected"), [
    ({"cdktf", "cdktn"}, "cdktf"),  # CDKTF first: the default while the Pipfile has it
    ({"cdktf"}, "cdktf"),
    ({"cdktn"}, "cdktn"),
])
def test_without_the_variable_the_installed_cdk_is_used(monkeypatch: pytest.MonkeyPatch, installed: set[str],
                                                        expected: str) -> None:
    monkeypatch.setenv(cdk_flavour.CDK_ENV, "")  # empty counts as unset
    monkeypatch.setattr(cdk_flavour.importlib.util, "find_spec",
                        lambda name: object() if name in installed else None)
    assert cdk_flavour.selected().name == expected


def test_without_any_cdk_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cdk_flavour.CDK_ENV, raising=False)
    monkeypatch.setattr(cdk_flavour.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match="neither cdktf nor cdktn is installed"):
        cdk_flavour.selected()


def test_this_environment_uses_cdktf_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cdk_flavour.CDK_ENV, raising=False)
    assert cdk_flavour.selected() == cdk_flavour.FLAVOURS["cdktf"]


# --- the seam ---

def cdk_imports(path: Path) -> list[str]:
    """`line: module` for each import of a CDK package: import statements and import_module/__import__ calls."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            function = node.func
            called = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        found += [f"{node.lineno}: {name}" for name in names if name.split(".")[0] in CDK_PACKAGES]
    return found


def test_only_the_seam_imports_the_cdk_packages() -> None:
    files = sorted([*ROOT.glob("modules/*.py"), ROOT / "main.py", *ROOT.glob("tools/*.py")])
    assert len(files) > 10
    offenders = {path.relative_to(ROOT).as_posix(): found for path in files
                 if path.relative_to(ROOT).as_posix() not in MAY_IMPORT_CDK and (found := cdk_imports(path))}
    assert offenders == {}, "import CDK classes from modules.cdk (add provider classes to its PROVIDER_CLASSES)"
    assert any(line.endswith(": constructs") for line in cdk_imports(ROOT / "modules" / "cdk.py"))  # the scan works


def test_the_scan_sees_every_kind_of_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import cdktf\nfrom cdktn_provider_aws.vpc import Vpc\nimport importlib\n"
                      "importlib.import_module('cdktf_cdktf_provider_aws.s3_bucket')\n__import__('constructs')\n"
                      "from modules.cdk import App\nimport json\n")
    assert cdk_imports(sample) == ["1: cdktf", "2: cdktn_provider_aws.vpc", "4: cdktf_cdktf_provider_aws.s3_bucket",
                                   "5: constructs"]
