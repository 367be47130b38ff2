"""Produce real Terraform plan JSON for the summarizer tests.

Each scenario copies a config from ``tests/review/configs/``, optionally applies a
first version (into local state; AWS resources into moto's server), switches to
the second version and runs ``terraform plan -out`` + ``terraform show -json``.
A version is ``configs/<scenario>/<version>/*.tf`` plus the ``*.tf`` files directly
in ``configs/<scenario>/`` (shared by the versions).

Volatile values (UUIDs of ``terraform_data``, moto's random ids, timestamps,
the Terraform version) are replaced by stable placeholders so the golden
Markdown files are the same on every machine.

Run by hand to look at the plans::

    .venv/bin/python -m tests.review.plans OUTDIR [SCENARIO ...]
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from tests.support.postgres import free_port
from tools import terraform

CONFIGS = Path(__file__).parent / "configs"
TERRAFORM = terraform.terraform_path() or "/usr/local/bin/terraform"

FAKE_PROVIDER = {
    "region": "us-east-1",
    "access_key": "test",
    "secret_key": "test",
    "skip_credentials_validation": True,
    "skip_requesting_account_id": True,
    "skip_metadata_api_check": True,
}
MOTO_SERVICES = ("apigatewayv2", "dynamodb", "ec2", "iam", "kms", "lambda", "logs", "rds", "s3",
                 "secretsmanager", "sfn", "sts")


def terraform_env(workroot: Path) -> dict[str, str]:
    """tools.terraform's environment (provider mirror, no prompts or checkpoint calls) with fake AWS
    credentials and none of the user's terraform/AWS session settings."""
    env = terraform.terraform_env(workroot)
    env.update({
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    })
    for var in ("TF_LOG", "TF_DATA_DIR", "TF_WORKSPACE", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        env.pop(var, None)
    return env


def run_tf(cwd: Path, env: dict, *args: str) -> str:
    proc = subprocess.run([TERRAFORM, *args, *(["-no-color"] if args[0] != "show" else [])],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"terraform {' '.join(args)} failed in {cwd}:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


# --------------------------------------------------------------------------- scrubbing

_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
_TIMESTAMP = re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?")
_ID_KEYS = ("id", "unique_id", "api_id", "authorizer_id", "key_id", "security_group_id",
            "security_group_rule_id", "vpc_id", "default_network_acl_id", "default_route_table_id",
            "default_security_group_id", "main_route_table_id", "dhcp_options_id", "owner_id",
            "api_endpoint", "policy_id", "arn", "execution_arn")


def _walk_strings(obj: Any, fn: Callable[[str], str]) -> Any:
    """``obj`` with ``fn`` applied to every string. A list of strings that ``fn`` changed is sorted again: Terraform
    lists a set (subnet or security group ids) in the order of its values, which were random."""
    if isinstance(obj, dict):
        return {k: _walk_strings(v, fn) for k, v in obj.items()}
    if isinstance(obj, list):
        out = [_walk_strings(v, fn) for v in obj]
        if out != obj and all(isinstance(v, str) for v in out):
            out.sort()
        return out
    if isinstance(obj, str):
        return fn(obj)
    return obj


# Attributes the configuration chooses: an id equal to one of them is not random and stays readable.
_NAME_KEYS = ("name", "function_name", "bucket", "identifier")


def _state_ids(plan: dict) -> dict[str, str]:
    """Values of id-like attributes in the prior state -> stable placeholder text naming the resource
    (instance key included, so the instances of a ``for_each`` stay apart). UUIDs of AWS resources (KMS
    keys) are named too; other UUIDs (``terraform_data``) are numbered by ``scrub``."""
    found: dict[str, str] = {}

    def visit(module: dict) -> None:
        for res in module.get("resources") or []:
            values = res.get("values") or {}
            for key in _ID_KEYS:
                val = values.get(key)
                if not isinstance(val, str) or len(val) < 6 or val.startswith("arn:") or val in found \
                        or re.fullmatch(r"\d{12}", val) or val in (values.get(k) for k in _NAME_KEYS) \
                        or (_UUID.fullmatch(val) and not res["type"].startswith("aws_")):
                    continue
                parts = (res["type"], res["name"], res.get("index"), key)
                found[val] = "-".join(str(p) for p in parts if p is not None).replace("_", "-")
        for child in module.get("child_modules") or []:
            visit(child)

    visit(((plan.get("prior_state") or {}).get("values") or {}).get("root_module") or {})
    return found


def scrub(plan: dict) -> dict:
    ids = _state_ids(plan)
    uuids: dict[str, str] = {}

    def fix(text: str) -> str:
        for real in sorted(ids, key=len, reverse=True):
            if real in text:
                text = text.replace(real, ids[real])

        def uuid_sub(m: re.Match) -> str:
            return uuids.setdefault(m.group(0), f"00000000-0000-4000-8000-{len(uuids) + 1:012d}")

        text = _UUID.sub(uuid_sub, text)
        return _TIMESTAMP.sub("2000-01-01T00:00:00Z", text)

    # Fixed traversal order (sorted keys) makes the uuid numbering deterministic.
    plan = json.loads(json.dumps(plan, sort_keys=True))
    plan = _walk_strings(plan, fix)
    plan["terraform_version"] = "1.x"
    return plan


# --------------------------------------------------------------------------- scenarios


class Workspace:
    def __init__(self, root: Path, scenario: str, env: dict, provider: dict | None = None) -> None:
        self.dir = root / scenario
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.src = CONFIGS / scenario
        self.env = env
        self.provider = provider
        self.initialized = False

    def use(self, version: str | None = None) -> None:
        """Replace the workspace's .tf files with those of ``configs/<scenario>`` (shared by the versions)
        and ``configs/<scenario>/<version>``."""
        for old in self.dir.glob("*.tf"):
            old.unlink()
        for src in [self.src] + ([self.src / version] if version else []):
            for tf in src.glob("*.tf"):
                shutil.copy(tf, self.dir / tf.name)
        if self.provider is not None:
            (self.dir / "zz_test_provider_override.tf.json").write_text(
                json.dumps({"provider": {"aws": self.provider}}, indent=2))
        if not self.initialized:
            run_tf(self.dir, self.env, "init", "-input=false")
            self.initialized = True

    def apply(self, *args: str) -> None:
        run_tf(self.dir, self.env, "apply", "-input=false", "-auto-approve", *args)

    def plan(self, *args: str) -> dict:
        run_tf(self.dir, self.env, "plan", "-input=false", "-out=tfplan", *args)
        return scrub(json.loads(run_tf(self.dir, self.env, "show", "-json", "tfplan")))


def no_changes(ws: Workspace) -> dict:
    ws.use()
    ws.apply()
    return ws.plan()


def create_only(ws: Workspace) -> dict:
    ws.use()
    return ws.plan()


def v1_then_v2(ws: Workspace, *plan_args: str) -> dict:
    """Apply configs/<scenario>/v1, then plan v2 (with ``plan_args``)."""
    ws.use("v1")
    ws.apply()
    ws.use("v2")
    return ws.plan(*plan_args)


def sensitive(ws: Workspace) -> dict:
    ws.use()
    ws.apply("-var=db_password=hunter2-old", "-var=api_token=tok-OLD-123")
    return ws.plan("-var=db_password=hunter2-NEW", "-var=api_token=tok-NEW-4567")


def too_large(ws: Workspace) -> dict:
    ws.use()
    ws.apply("-var=release=2024.01.15-build.1", "-parallelism=50")
    return ws.plan("-var=release=2024.02.01-build.7", "-parallelism=50")


def security_create(ws: Workspace) -> dict:
    ws.use()
    return ws.plan("-var=db_password=s3cr3t-do-not-print")


def function_zip(path: Path) -> None:
    """A tiny Lambda package, byte for byte the same on every run (fixed dates, no compression)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        info = zipfile.ZipInfo("index.py", date_time=(2000, 1, 1, 0, 0, 0))
        info.external_attr = 0o644 << 16
        zf.writestr(info, "def handler(event, context):\n    return event\n")


def risky_updates(ws: Workspace) -> dict:
    function_zip(ws.dir / "function.zip")
    return v1_then_v2(ws)


def iam_security_group(ws: Workspace) -> dict:
    ws.use("v1")
    ws.apply()
    # Drift: someone edits the role in the console.
    import boto3

    iam = boto3.client("iam", endpoint_url=ws.provider["endpoints"]["iam"], region_name="us-east-1",
                       aws_access_key_id="test", aws_secret_access_key="test")
    iam.update_role(RoleName="stepfunc-worker", Description="Lambda worker (edited in console)")
    ws.use("v2")
    return ws.plan()


TERRAFORM_DATA_SCENARIOS: dict[str, Callable[[Workspace], dict]] = {
    "no_changes": no_changes,
    "create_only": create_only,
    "update_in_place": v1_then_v2,
    "delete": v1_then_v2,
    "replace": lambda ws: v1_then_v2(ws, "-replace=terraform_data.forced"),
    "sensitive": sensitive,
    "too_large": too_large,
}
FAKE_AWS_SCENARIOS = {"security_create": security_create}
MOTO_SCENARIOS = {
    "iam_security_group": iam_security_group,
    "risky_updates": risky_updates,
}
ALL_SCENARIOS = {**TERRAFORM_DATA_SCENARIOS, **FAKE_AWS_SCENARIOS, **MOTO_SCENARIOS}


class MotoServer:
    """moto's server on a free loopback port, for the scenarios that apply AWS resources.

    It runs in this process, so the rehearsal's moto gap patches (tests/support/moto_gaps.py: Step
    Functions validation and versions, Lambda logging config, RDS parameter sources) apply while it runs.
    """

    _lock = threading.Lock()

    def __init__(self) -> None:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no request log lines

        self.port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    def __enter__(self) -> "MotoServer":
        from tests.support import moto_gaps

        self._gaps = moto_gaps.filled()
        self._gaps.__enter__()
        self.server.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.server.stop()
        finally:
            self._gaps.__exit__(None, None, None)

    @property
    def provider(self) -> dict:
        """FAKE_PROVIDER pointed at this server (which answers sts GetCallerIdentity)."""
        url = f"http://127.0.0.1:{self.port}"
        return dict(FAKE_PROVIDER, skip_requesting_account_id=False, s3_use_path_style=True,
                    endpoints={svc: url for svc in MOTO_SERVICES})


def generate(outdir: Path, names: list[str] | None = None, workers: int = 3) -> dict[str, Path]:
    """Run the scenarios (in parallel) and write ``<outdir>/<name>.json``; returns name -> path."""
    outdir.mkdir(parents=True, exist_ok=True)
    work = outdir / "work"
    work.mkdir(exist_ok=True)
    env = terraform_env(work)
    names = list(names or ALL_SCENARIOS)
    results: dict[str, Path] = {}
    needs_moto = any(n in MOTO_SCENARIOS for n in names)
    moto = MotoServer() if needs_moto else None
    if moto:
        moto.__enter__()
    try:
        def run_one(name: str) -> tuple[str, Path]:
            provider = None
            if name in FAKE_AWS_SCENARIOS:
                provider = FAKE_PROVIDER
            elif name in MOTO_SCENARIOS:
                provider = moto.provider
            plan = ALL_SCENARIOS[name](Workspace(work, name, env, provider))
            path = outdir / f"{name}.json"
            path.write_text(json.dumps(plan, indent=1, sort_keys=True))
            return name, path

        # Slow ones first so the pool stays busy.
        order = sorted(names, key=lambda n: (n not in MOTO_SCENARIOS, n not in FAKE_AWS_SCENARIOS, n))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for name, path in pool.map(run_one, order):
                results[name] = path
    finally:
        if moto:
            moto.__exit__(None, None, None)
    return results


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "review-test-plans")
    for n, p in generate(out, sys.argv[2:] or None).items():
        print(n, p)
