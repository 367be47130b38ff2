"""Deploy rehearsal: apply the synthesized stack with real Terraform into a local AWS emulator, run the whole
workflow through the deployed state machine, then live through what a real stack does later: a replacement, an
upgrade outside Terraform, a rebuild, and a prod-like environment torn down twice.

    python -m tools.rehearsal [--environment dev] [--keep-plan tests/review/real/plan.json]

Phases (each printed with its duration, then a verdict):

  emulator  moto's ThreadedMotoServer in this process on a free loopback port, configured before anything
            exists (state machines execute, Lambda without Docker, AWS managed IAM policies loaded), the
            gaps of tests/support/moto_gaps.py filled, and the "existing" VPC and private subnets created
            with exactly the IDs and availability zones the environment's settings name.
  synth     `python main.py --environment <env>` (config/environments.json, unchanged) into a temp folder.
  init      `terraform init` in a copy of the stack folder with two override files added: the provider's
  plan      endpoints pointed at the emulator, and a local backend instead of S3. The synthesized JSON is
  apply     not modified. `plan` keeps plan.json (--keep-plan copies it out).
  serve     Each deployed function is served in-process with its real handler (lambdas/<folder>) and the
            environment Terraform set on it; the database host/port go to a throwaway PostgreSQL whose
            login matches the RDS-managed secret in the emulator, PagerDuty to a local fake server. The
            token secret the stack creates empty is filled as an operator would.
  scheduled The schedule read back (target the state machine, input `{}`, state as the settings say, retry
            policy, encrypted dead-letter queue, a role that may only StartExecution on the machine); an
            execution started as its target would (tools/rehearsal_operations.py) SUCCEEDS as an incremental
            run of scope `all` and leaves a watermark.
  happy     An execution started as the HTTP API integration would (its request parameters, read back from
  failing   the emulator, applied to a request body) SUCCEEDS with the data loaded and validated; with
  badbody   PagerDuty refusing step 2 it FAILS through the error handler; a bad body fails in step 1.
  notify    For executions that ended TIMED_OUT and FAILED with their run left running (no Catch ran), the
            status-change rule's targets are driven as EventBridge would (moto delivers neither SNS nor
            Lambda targets): the runs are marked timed_out/failed by the error handler, and the message the
            topic delivers to a subscribed queue names the execution, status, error and failed step.
  replan    `terraform plan -detailed-exitcode` must report no changes.
  -- the second act --
  replace   Synthesized again with a settings file (`main.py --settings`) that gives both security groups and
            the parameter group new descriptions (which AWS cannot change in place): the plan must replace
            the three create-before-destroy (and update the database in place), the apply must succeed, the
            emulator must then hold one lambda and one RDS security group and one parameter group of the
            environment (the new ones, used by the database), and the next plan must be empty.
  upgrade   The database's minor version raised outside Terraform (ModifyDBInstance EngineVersion 17.6, as
            RDS's automatic minor upgrades do): `terraform plan -detailed-exitcode` must report no changes.
  destroy   `terraform destroy`; nothing managed left in the state.
  prodlike  Alongside all of the above from the moment the emulator exists (own stack, state, folder and
            log; its lines are prefixed `prodlike:`): a prod-like environment (prod's settings, final
            snapshot on, deletion protection off) applied, destroyed, applied and destroyed again with no
            name colliding; the emulator then holds two final snapshots of its database, named apart.
  rebuild   Within prodlike, its first `terraform destroy` and, at once, its second `terraform apply`: must
            succeed, the database back under its identifier, the token secret under a new name while the
            old one is still scheduled for deletion (and the final snapshot under a new name).

Everything started is stopped and every temp folder removed, also when a phase fails or on Ctrl-C.
Exit status 0 when every phase passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "layer" / "python") not in sys.path:  # the handlers import pagerduty_pipeline from the layer
    sys.path.insert(0, str(ROOT / "layer" / "python"))

from tools.terraform import (ERROR_TAIL_LINES, TerraformError, communicate_or_kill_group,  # noqa: E402
                             copy_with_local_backend, run_logged, terraform_env, terraform_path)

REGION = "eu-west-2"
ACCOUNT_ID = "123456789012"  # moto's account
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "rehearsal", "AWS_SECRET_ACCESS_KEY": "rehearsal"}
# Every service the stack's resources and data sources call, by the provider's endpoint names.
ENDPOINT_SERVICES = ("apigatewayv2", "cloudwatch", "cloudwatchlogs", "ec2", "events", "iam", "kms", "lambda", "rds",
                     "scheduler", "secretsmanager", "sfn", "sns", "sqs", "sts")
PROVIDER_OVERRIDE = "zz_rehearsal_provider_override.tf.json"
BACKEND_OVERRIDE = "zz_rehearsal_backend_override.tf.json"
PAGERDUTY_TOKEN = "rehearsal-pagerduty-token"
PD_START = datetime(2024, 3, 1, tzinfo=timezone.utc)
TERRAFORM_TIMEOUT = 900
EXECUTION_TIMEOUT = 180.0
PHASES = ("emulator", "synth", "init", "plan", "apply", "serve", "scheduled", "happy", "failing", "badbody", "notify",
          "replan",
          "replace", "upgrade", "rebuild", "destroy", "prodlike")
PRODLIKE = "prodlike"  # the prod-like environment the rehearsal adds to its settings file
UPGRADED_ENGINE_VERSION = "17.6"  # what RDS's automatic minor upgrade moves the database to
SETTINGS_FILE = "rehearsal-environments.json"
# Resources a changed description must replace, created before the old one is deleted.
# ... and the groups' rules, created on the new groups before the old ones go (no moment without a path)
REPLACED_TYPES = ("aws_security_group", "aws_db_parameter_group", "aws_vpc_security_group_ingress_rule",
                  "aws_vpc_security_group_egress_rule")
CREATE_BEFORE_DESTROY = ["create", "delete"]


class RehearsalError(Exception):
    """A phase did not do what it must; the message says what was expected and what happened."""


@dataclass
class PhaseResult:
    name: str
    seconds: float
    ok: bool
    detail: str = ""


@dataclass
class Outcome:
    phases: list[PhaseResult] = field(default_factory=list)
    total_seconds: float = 0.0
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and len(self.phases) == len(PHASES) and all(p.ok for p in self.phases)


# -- the emulator -------------------------------------------------------------------------------------
@contextlib.contextmanager
def emulator() -> Iterator[str]:
    """moto's server on a free 127.0.0.1 port, configured and gap-filled; yields its URL. Restores moto's
    process-wide configuration and the environment afterwards."""
    from moto.core.config import default_user_config
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    from tests.support import moto_gaps
    from tests.support.postgres import free_port

    saved_config = copy.deepcopy(default_user_config)
    werkzeug_log = logging.getLogger("werkzeug")
    saved_level = werkzeug_log.level
    werkzeug_log.setLevel(logging.WARNING)  # no line per request
    server = None
    try:
        default_user_config["lambda"] = {"use_docker": False}           # invocations go to LambdaSimpleBackend
        default_user_config["stepfunctions"] = {"execute_state_machine": True}
        default_user_config["iam"] = {"load_aws_managed_policies": True}  # AmazonRDSEnhancedMonitoringRole
        with moto_gaps.filled():
            for _attempt in range(5):
                port = free_port()
                server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
                try:
                    server.start()
                    break
                except OSError:  # taken in the meantime
                    server = None
            if server is None:
                raise RehearsalError("the emulator found no free port")
            # moto's state machine interpreter calls Lambda through boto3 at localhost:$MOTO_PORT.
            with mock.patch.dict(os.environ, {"MOTO_PORT": str(port)}):
                yield f"http://127.0.0.1:{port}"
    finally:
        if server is not None:
            server.stop()
        werkzeug_log.setLevel(saved_level)
        default_user_config.clear()
        default_user_config.update(saved_config)
        _reset_moto_backends()


def _reset_moto_backends() -> None:
    """Drop everything the rehearsal created in moto's in-process backends (other code may share them)."""
    from moto.awslambda_simple.models import lambda_simple_backends
    from moto.backends import get_backend
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends

    backends = [lambda_simple_backends, stepfunctions_parser_backends]
    backends += [get_backend(service) for service in  # type: ignore[call-overload]
                 ("apigatewayv2", "cloudwatch", "ec2", "events", "iam", "kms", "lambda", "logs", "rds", "scheduler",
                  "secretsmanager", "sns", "sqs", "stepfunctions", "sts")]
    for backend in backends:
        with contextlib.suppress(Exception):
            backend.reset()


def aws_client(url: str, service: str) -> Any:
    import boto3

    return boto3.client(service, endpoint_url=url, region_name=REGION, aws_access_key_id="rehearsal",
                        aws_secret_access_key="rehearsal")


def create_network(url: str, vpc_id: str, subnet_ids: tuple[str, ...]) -> None:
    """The 'existing' VPC and private subnets, with the IDs the settings name (moto makes random ones:
    its ID generators are pinned for these calls), one availability zone per subnet."""
    ec2 = aws_client(url, "ec2")
    association_id = "vpc-cidr-assoc-" + vpc_id.removeprefix("vpc-")  # appears in the plan: keep it stable
    with mock.patch("moto.ec2.models.vpcs.random_vpc_id", return_value=vpc_id), \
            mock.patch("moto.ec2.models.vpcs.random_vpc_cidr_association_id", return_value=association_id):
        ec2.create_vpc(CidrBlock="10.40.0.0/16")
    for index, subnet_id in enumerate(subnet_ids):
        with mock.patch("moto.ec2.models.subnets.random_subnet_id", return_value=subnet_id):
            ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.40.{index}.0/24",
                              AvailabilityZone=f"{REGION}{'abc'[index % 3]}")


# -- terraform folder ---------------------------------------------------------------------------------
def prepare_stack(stack_dir: Path, workdir: Path, url: str) -> None:
    """A copy of the synthesized stack plus the provider and backend overrides (Terraform merges
    *_override.tf.json files into the configuration; the synthesized JSON stays as it is)."""
    copy_with_local_backend(stack_dir, workdir, BACKEND_OVERRIDE, workdir / "terraform.tfstate")
    provider = provider_override(url)
    (workdir / PROVIDER_OVERRIDE).write_text(json.dumps({"provider": {"aws": [provider]}}, indent=2) + "\n")


def provider_override(url: str, services: tuple[str, ...] = ENDPOINT_SERVICES) -> dict[str, Any]:
    """Provider arguments merged over the stack's (region and default_tags stay as synthesized), with the
    endpoints of ``services`` pointed at the emulator."""
    return {
        "access_key": FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "secret_key": FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "skip_credentials_validation": True,
        "skip_metadata_api_check": True,
        "skip_region_validation": True,
        "skip_requesting_account_id": False,  # sts GetCallerIdentity answers from the emulator
        "s3_use_path_style": True,
        "endpoints": [{service: url for service in services}],
    }


def terraform_environment(scratch: Path) -> dict[str, str]:
    env = terraform_env(scratch)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        env.pop(key, None)
    env.update(FAKE_CREDENTIALS, AWS_DEFAULT_REGION=REGION, AWS_REGION=REGION,
               AWS_CONFIG_FILE=str(scratch / "aws-config-none"), AWS_SHARED_CREDENTIALS_FILE=str(scratch / "none"))
    env.pop("TF_DATA_DIR", None)
    return env


def sanitize_plan(plan: dict[str, Any], scratch: Path) -> dict[str, Any]:
    """plan.json without run-specific paths, timestamps or emulator settings, and in a stable order (so it
    can be committed: it changes only when the stack or the code in it does)."""
    text = json.dumps(plan, sort_keys=True)
    text = text.replace(str(scratch), "<rehearsal>")
    document = json.loads(text)
    document.pop("timestamp", None)
    document["relevant_attributes"] = sorted(document.get("relevant_attributes") or [],
                                             key=lambda item: json.dumps(item, sort_keys=True))
    provider = ((document.get("configuration") or {}).get("provider_config") or {}).get("aws") or {}
    expressions = provider.get("expressions") or {}
    for key in provider_override(""):  # the emulator's settings, not the stack's
        expressions.pop(key, None)
    return document


# -- the second act's settings, configuration swaps and checks -----------------------------------------
def rehearsal_settings(base: dict[str, Any], environment: str, name_prefix: str) -> dict[str, Any]:
    """config/environments.json as it is, except: `environment` gets new descriptions for both security groups
    and the parameter group (each forces a replacement), and a prod-like environment is added: prod's settings
    (when there is a prod) with a final snapshot and no deletion protection, so it can be torn down."""
    document = copy.deepcopy(base)
    entry = document.setdefault(environment, {})
    entry["network"] = {**entry.get("network", {}),
                        "lambda_sg_description": f"{name_prefix} pipeline functions (replaced by the rehearsal)",
                        "rds_sg_description": f"{name_prefix} PostgreSQL (replaced by the rehearsal)"}
    entry["database"] = {**entry.get("database", {}),
                         "parameter_group_description": f"{name_prefix} PostgreSQL (replaced by the rehearsal)"}
    prodlike = copy.deepcopy(base.get("prod", {}))
    prodlike["database"] = {**prodlike.get("database", {}), "deletion_protection": False, "final_snapshot": True}
    document[PRODLIKE] = prodlike
    return document


# What a new synthesis must not remove from the working folder: Terraform's data and the provider selections
# `init` made (the lock file, unless the synthesis brings its own), the state, our overrides.
KEPT_IN_WORKDIR = frozenset({".terraform", ".terraform.lock.hcl", "terraform.tfstate", "terraform.tfstate.backup",
                             PROVIDER_OVERRIDE, BACKEND_OVERRIDE})


def update_stack(stack_dir: Path, workdir: Path) -> None:
    """Swap the configuration in a prepared working folder for a new synthesis of the same stack, as a deploy of
    a new commit does (same state, same provider installation, same overrides)."""
    for entry in workdir.iterdir():
        if entry.name in KEPT_IN_WORKDIR:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    shutil.copytree(stack_dir, workdir, symlinks=True, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(".terraform", "*.tfstate", "*.tfstate.backup"))


def managed_in_state(workdir: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """Attributes of each managed resource instance in the local state (of one type, or all), with its
    resource's `_address` (`type.name`) added."""
    path = workdir / "terraform.tfstate"
    resources = json.loads(path.read_text()).get("resources", []) if path.exists() else []
    return [{**instance.get("attributes", {}), "_address": f"{resource['type']}.{resource['name']}"}
            for resource in resources if resource.get("mode") == "managed" and kind in (None, resource["type"])
            for instance in resource.get("instances", [])]


def check_replacement_plan(plan: dict[str, Any]) -> list[str]:
    """What is wrong with the plan of the description change: each security group, its rules and the parameter
    group must be replaced create-before-destroy (created, under a new name, before the old one is deleted), and the
    database updated in place, not replaced. Returns the problems, none when the plan is right."""
    problems = []
    changes = [rc for rc in plan.get("resource_changes", []) if rc.get("mode", "managed") == "managed"]
    for kind in REPLACED_TYPES:
        of_kind = [rc for rc in changes if rc["type"] == kind]
        if not of_kind:
            problems.append(f"no {kind} in the plan")
        for rc in of_kind:
            actions = rc["change"]["actions"]
            if actions != CREATE_BEFORE_DESTROY:
                problems.append(f"{rc['address']}: {actions}, expected {CREATE_BEFORE_DESTROY} "
                                "(a replacement created before the old one is deleted)")
    for rc in changes:
        if rc["type"] == "aws_db_instance" and rc["change"]["actions"] != ["update"]:
            problems.append(f"{rc['address']}: {rc['change']['actions']}, expected ['update'] "
                            "(the database moves to the new groups in place)")
    return problems


def plan_summary(plan: dict[str, Any]) -> str:
    """The plan's changes counted by kind: replacements in their order, then in-place updates."""
    kinds = {("create", "delete"): "create-before-destroy", ("delete", "create"): "delete-then-create",
             ("update",): "update in place", ("create",): "create", ("delete",): "delete"}
    counted: dict[str, Counter[str]] = {}
    for rc in plan.get("resource_changes", []):
        kind = kinds.get(tuple(rc["change"]["actions"]))
        if kind:
            counted.setdefault(kind, Counter())[rc["type"]] += 1
    return "; ".join(f"{kind}: " + ", ".join(f"{n} {t}" for t, n in sorted(types.items()))
                     for kind, types in counted.items())


def plan_change_lines(plan: dict[str, Any]) -> list[str]:
    """What a plan changes, one line each: resources (an update names the attributes it changes), then outputs."""
    resources = []
    for rc in plan.get("resource_changes", []):
        actions = rc["change"]["actions"]
        if actions in (["no-op"], ["read"]):
            continue
        line = f"{rc['address']}: {'/'.join(actions)}"
        if actions == ["update"]:
            before, after = rc["change"].get("before") or {}, rc["change"].get("after") or {}
            changed = [f"{key} {before.get(key)!r} -> {after.get(key)!r}" for key in sorted(set(before) | set(after))
                       if before.get(key) != after.get(key) and not isinstance(after.get(key), (dict, list))]
            line += f" ({', '.join(changed)})" if changed else ""
        resources.append(line)
    outputs = [f"output {name}: {change.get('before')!r} -> {change.get('after')!r}"
               for name, change in (plan.get("output_changes") or {}).items() if change["actions"] != ["no-op"]]
    return resources + outputs


def check_final_snapshots(snapshots: list[dict[str, Any]], identifier: str, expected: list[str]) -> list[str]:
    """After two teardowns, the database's manual snapshots are the two final snapshots the configuration
    named, each `<identifier>-final-...`, with different identifiers. Returns the problems."""
    names = sorted(s["DBSnapshotIdentifier"] for s in snapshots if s.get("DBInstanceIdentifier") == identifier
                   and s.get("SnapshotType", "manual") == "manual")
    problems = []
    if len(expected) != 2 or len(set(expected)) != 2:
        problems.append(f"the two builds named final snapshots {expected}, expected two different names")
    if names != sorted(expected):
        problems.append(f"the emulator holds final snapshots {names}, expected {sorted(expected)}")
    problems += [f"{name} does not start with {identifier}-final-" for name in expected
                 if not name.startswith(f"{identifier}-final-")]
    return problems


class ProcessGroups:
    """Runs terraform like tools.terraform.run_logged (own process group, output appended to a log, exit codes
    checked), from any thread, and can stop every command it started at once: the prod-like environment's
    Terraform runs in a thread, which the rehearsal ends this way when it stops early. With `niceness` the
    commands run at that lower CPU priority (the prod-like environment has time to spare; the other has not)."""

    def __init__(self, niceness: int = 0) -> None:
        self._lock = threading.Lock()
        self._running: set[int] = set()
        self.stopped = threading.Event()
        self._prefix = ("nice", "-n", str(niceness)) if niceness and shutil.which("nice") else ()

    def run(self, binary: str, folder: Path, env: dict[str, str], *args: str, log: Path, timeout: float,
            ok_codes: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
        with self._lock:
            if self.stopped.is_set():
                raise RehearsalError("stopped: the rehearsal ended early")
            proc = subprocess.Popen([*self._prefix, binary, *args], cwd=folder, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, start_new_session=True)
            self._running.add(proc.pid)
        try:
            stdout, stderr = communicate_or_kill_group(proc, timeout)
        finally:
            with self._lock:
                self._running.discard(proc.pid)
        with log.open("a", encoding="utf-8") as fh:
            fh.write(f"$ terraform {' '.join(args)}\n{stdout}{stderr}[exit {proc.returncode}]\n\n")
        if self.stopped.is_set():
            raise RehearsalError("stopped: the rehearsal ended early")
        if proc.returncode not in ok_codes:
            tail = "\n".join((stderr.strip() or stdout.strip()).splitlines()[-ERROR_TAIL_LINES:])
            raise TerraformError(args[0], proc.returncode, tail)
        return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)

    def stop(self) -> None:
        """Refuse new commands and kill the running ones (terraform and its provider plugins)."""
        with self._lock:
            self.stopped.set()
            running = list(self._running)
        for pid in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


# -- serving the deployed functions -------------------------------------------------------------------
FOLDERS = ("lambda_1", "lambda_2", "lambda_3", "lambda_error_handler")


@dataclass
class Deployment:
    functions: dict[str, dict[str, Any]]  # folder -> GetFunctionConfiguration
    state_machine_arn: str
    integration: dict[str, Any]
    db_secret_arn: str
    db_secret: dict[str, Any]
    token_secret_arn: str
    db_resource_id: str = ""  # DbiResourceId, what rds-db:connect ARNs name


def database_logins(url: str, deployment: Deployment) -> dict[str, str]:
    """folder -> the database user it connects as with an IAM token, after checking that its role's policy allows
    `rds-db:connect` as exactly that user of this database (and nothing else of rds-db) and that a token for it
    signs (locally, as in AWS). Functions that log in with a password (step 1, the master secret) are not listed."""
    iam = aws_client(url, "iam")
    users: dict[str, str] = {}
    for folder, configuration in deployment.functions.items():
        variables = (configuration.get("Environment") or {}).get("Variables") or {}
        role = configuration["Role"].rsplit("/", 1)[1]
        allowed = [resource for name in iam.list_role_policies(RoleName=role)["PolicyNames"]
                   for statement in iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]["Statement"]
                   if any(action.startswith("rds-db:") for action in listed(statement["Action"]))
                   for resource in listed(statement["Resource"])]
        if variables.get("DB_AUTH") != "iam":
            expect(not allowed, f"{folder} logs in with a password but may also rds-db:connect: {allowed}")
            continue
        user = variables.get("DB_USER", "")
        expected = f"arn:aws:rds-db:{REGION}:{ACCOUNT_ID}:dbuser:{deployment.db_resource_id}/{user}"
        expect(allowed == [expected], f"{folder} (DB_USER={user}) may rds-db:connect {allowed}, expected [{expected}]")
        expect("DB_SECRET_ARN" not in variables, f"{folder} logs in with IAM but is told the master secret")
        users[folder] = user
    return users


def listed(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def iam_token_for(url: str, configuration: dict[str, Any], host: str) -> str:
    """The token the function's layer code signs for its configured user (boto3's generate_db_auth_token)."""
    from pagerduty_pipeline.config import load_config
    from pagerduty_pipeline.db_auth import IamTokens, credentials

    variables = dict((configuration.get("Environment") or {}).get("Variables") or {})
    variables.update({"DB_HOST": host, "AWS_REGION": REGION, "DB_SSL_ROOT_CERT": ""})
    variables["DB_SSL"] = "require"  # the bundle's path is checked when connecting, not needed to sign
    with _environment({"AWS_ENDPOINT_URL": url, **FAKE_CREDENTIALS}):
        _, token = credentials(load_config(variables, need_pagerduty=False), IamTokens())
    return token


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def deployed_layer_files(url: str, configuration: dict[str, Any], workdir: Path, target: Path) -> Path:
    """Unpack the layer the function runs with, found in the stack's assets by the CodeSha256 the emulator
    reports, into `target` (a stand-in for the function's /opt)."""
    import base64
    import hashlib
    import zipfile

    (layer,) = configuration["Layers"]
    name, version = layer["Arn"].split(":layer:", 1)[1].rsplit(":", 1)  # moto lacks GetLayerVersionByArn
    sha = aws_client(url, "lambda").get_layer_version(LayerName=name, VersionNumber=int(version))["Content"][
        "CodeSha256"]
    for candidate in sorted(workdir.rglob("*.zip")):
        if base64.b64encode(hashlib.sha256(candidate.read_bytes()).digest()).decode() == sha:
            with zipfile.ZipFile(candidate) as archive:
                archive.extractall(target)
            return target
    raise RehearsalError(f"the deployed layer {layer['Arn']} (CodeSha256 {sha}) is none of the stack's assets")


def read_deployment(url: str, outputs: dict[str, Any], name_prefix: str) -> Deployment:
    """What the environment named `name_prefix` deployed (another environment may share the emulator)."""
    lam = aws_client(url, "lambda")
    functions = {}
    names = {fn["FunctionName"]: fn for page in lam.get_paginator("list_functions").paginate()
             for fn in page["Functions"] if fn["FunctionName"].startswith(f"{name_prefix}-")}
    for folder in FOLDERS:
        matches = [name for name in names if name.endswith(f"-{folder}")]
        if len(matches) != 1:
            raise RehearsalError(f"expected one deployed function for {folder}, found {matches or 'none'}")
        functions[folder] = lam.get_function_configuration(FunctionName=matches[0])
    project = next(key.split("-", 1)[1] for key in outputs if key.startswith("StateMachineArn-"))
    api_url = outputs[f"HttpApiEndpoint-{project}"]
    apis = aws_client(url, "apigatewayv2")
    api_id = next(api["ApiId"] for api in apis.get_apis()["Items"] if api["ApiEndpoint"] == api_url)
    routes = apis.get_routes(ApiId=api_id)["Items"]
    (route,) = [r for r in routes if r["RouteKey"] == "POST /invoke"]
    integration = apis.get_integration(ApiId=api_id, IntegrationId=route["Target"].split("/", 1)[1])
    rds = aws_client(url, "rds")
    instances = [db for db in rds.describe_db_instances()["DBInstances"]
                 if db["DBInstanceIdentifier"].startswith(f"{name_prefix}-")]
    if len(instances) != 1:
        raise RehearsalError(f"expected one database of {name_prefix}, found {len(instances)}")
    (instance,) = instances
    db_secret_arn = instance["MasterUserSecret"]["SecretArn"]
    sm = aws_client(url, "secretsmanager")
    db_secret = json.loads(sm.get_secret_value(SecretId=db_secret_arn)["SecretString"])
    return Deployment(functions, outputs[f"StateMachineArn-{project}"], integration, db_secret_arn, db_secret,
                      outputs[f"PagerDutyTokenSecretArn-{project}"], instance["DbiResourceId"])


def function_environment(configuration: dict[str, Any], url: str, pg: Any, pagerduty_url: str, opt: Path,
                         login_secrets: dict[str, str]) -> dict[str, str]:
    """The variables Terraform set on the function, plus what the Lambda runtime adds, with the database
    and PagerDuty redirected to the local stand-ins and AWS calls to the emulator. The connection is the
    configured one: DB_SSL as deployed, DB_SSL_ROOT_CERT in the deployed layer (unpacked at `opt`), the same
    database user; only an IAM token becomes that user's password (`login_secrets`: user -> secret ARN), since a
    local PostgreSQL cannot check tokens."""
    from tests.support.db_roles import with_password_login

    env = with_password_login((configuration.get("Environment") or {}).get("Variables") or {}, login_secrets,
                              configuration["FunctionName"])
    if env.get("DB_SSL_ROOT_CERT", "").startswith("/opt/"):
        env["DB_SSL_ROOT_CERT"] = str(opt / env["DB_SSL_ROOT_CERT"][len("/opt/"):])
    env.update({
        "DB_HOST": pg.host, "DB_PORT": str(pg.port),
        "PAGERDUTY_API_URL": pagerduty_url, "PAGERDUTY_RATE_LIMIT_PER_MINUTE": "1000000",
        "AWS_ENDPOINT_URL": url, "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION,
        "AWS_LAMBDA_FUNCTION_NAME": configuration["FunctionName"], **FAKE_CREDENTIALS,
    })
    return env


def start_like_the_integration(url: str, integration: dict[str, Any], body: str, name: str) -> str:
    """What API Gateway does for StepFunctions-StartExecution: each request parameter, with
    `$request.body` replaced by the request body, becomes a StartExecution parameter."""
    if integration.get("IntegrationSubtype") != "StepFunctions-StartExecution":
        raise RehearsalError(f"the integration is {integration.get('IntegrationSubtype')!r}, "
                             "not StepFunctions-StartExecution")
    params = {}
    for key, value in (integration.get("RequestParameters") or {}).items():  # StateMachineArn, Input, ...
        params[key[:1].lower() + key[1:]] = body if value == "$request.body" else value
    params["name"] = name
    return aws_client(url, "stepfunctions").start_execution(**params)["executionArn"]


def wait_for(url: str, execution_arn: str, timeout: float = EXECUTION_TIMEOUT) -> dict[str, Any]:
    sfn = aws_client(url, "stepfunctions")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        described = sfn.describe_execution(executionArn=execution_arn)
        if described["status"] != "RUNNING":
            return described
        time.sleep(0.2)
    raise RehearsalError(f"{execution_arn} still RUNNING after {timeout:.0f} s")


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise RehearsalError(message)


# -- the rehearsal ------------------------------------------------------------------------------------
class Rehearsal:
    def __init__(self, *, environment: str = "dev", keep_plan: Path | None = None, fail_at: str | None = None,
                 out: Callable[[str], None] = print, n_incidents: int = 40) -> None:
        self.environment = environment
        self.keep_plan = keep_plan
        self.fail_at = fail_at  # tests: make this phase fail, to prove cleanup
        self._out = out
        self._out_lock = threading.Lock()  # the prod-like environment's thread prints too: whole lines only
        self.n_incidents = n_incidents
        self.outcome = Outcome()
        self.scratch: Path | None = None
        self.workdir: Path | None = None  # this environment's Terraform folder (its assets: the deployed zips)
        self.background = ProcessGroups(niceness=10)  # the prod-like environment's terraform commands

    def out(self, text: str) -> None:
        with self._out_lock:
            self._out(text)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.out(f"rehearsal: {name} ...")
        started = time.monotonic()
        try:
            if self.fail_at == name:
                raise RehearsalError(f"phase {name} failed on request (--fail-at {name})")
            yield
        except BaseException as exc:
            seconds = time.monotonic() - started
            detail = str(exc) if isinstance(exc, (RehearsalError, TerraformError)) else f"{type(exc).__name__}: {exc}"
            logs = self.scratch / "functions.log" if self.scratch else None
            if logs and logs.exists() and name in ("happy", "failing", "badbody"):
                tail = logs.read_text(encoding="utf-8", errors="replace").splitlines()[-20:]
                detail += "\nlast function log lines:\n" + "\n".join(line[:300] for line in tail)
            self.outcome.phases.append(PhaseResult(name, seconds, False, detail))
            self.out(f"rehearsal: {name} FAILED after {seconds:.1f} s\n{detail}")
            raise
        seconds = time.monotonic() - started
        self.outcome.phases.append(PhaseResult(name, seconds, True))
        self.out(f"rehearsal: {name} ok ({seconds:.1f} s)")

    def run(self) -> Outcome:
        started = time.monotonic()
        try:
            self._run()
        except KeyboardInterrupt:
            self.outcome.error = "interrupted"
        except Exception as exc:  # noqa: BLE001 - reported as the verdict
            self.outcome.error = str(exc) or type(exc).__name__
        self.outcome.total_seconds = time.monotonic() - started
        ordered = sorted(self.outcome.phases, key=lambda p: PHASES.index(p.name) if p.name in PHASES else len(PHASES))
        summary = ", ".join(f"{p.name} {p.seconds:.1f}s" for p in ordered)
        verdict = "PASSED" if self.outcome.ok else "FAILED"
        self.out(f"rehearsal: {verdict} in {self.outcome.total_seconds:.1f} s ({summary})")
        return self.outcome

    def _run(self) -> None:
        from modules.settings import ENVIRONMENTS_FILE, load_settings
        from tests.support.synth import synthesize

        binary = terraform_path()
        if not binary:
            raise RehearsalError("terraform is not on PATH")
        (settings,) = load_settings(only=[self.environment])
        if settings.region != REGION:
            raise RehearsalError(f"the rehearsal emulates {REGION}; {self.environment} deploys to {settings.region}")
        with contextlib.ExitStack() as cleanup:
            self.scratch = scratch = Path(tempfile.mkdtemp(prefix="rehearsal-"))
            cleanup.callback(shutil.rmtree, scratch, True)
            # The second act's settings: this environment's descriptions changed, a prod-like one added.
            settings_file = scratch / SETTINGS_FILE
            settings_file.write_text(json.dumps(rehearsal_settings(
                json.loads(ENVIRONMENTS_FILE.read_text(encoding="utf-8")), self.environment, settings.name_prefix),
                indent=2) + "\n", encoding="utf-8")
            (prodlike,) = load_settings(settings_file, [PRODLIKE])
            if prodlike.region != REGION:
                raise RehearsalError(f"the rehearsal emulates {REGION}; {PRODLIKE} deploys to {prodlike.region}")
            log = scratch / "terraform.log"
            with self.phase("emulator"):
                url = cleanup.enter_context(emulator())
                self.out(f"rehearsal: emulator at {url}, stack {settings.stack_name} ({self.environment}), "
                         f"scratch {scratch}")
                create_network(url, settings.network.vpc_id, settings.network.private_subnet_ids)
                if prodlike.network.vpc_id != settings.network.vpc_id:  # the same VPC unless its settings say not
                    create_network(url, prodlike.network.vpc_id, prodlike.network.private_subnet_ids)
            # The second act's configuration (this environment with new descriptions, and the prod-like one),
            # synthesized in one run alongside the first act; the prod-like environment from now on, alongside
            # this one. Both are stopped (terraform killed) and waited for before the emulator goes.
            synth_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rehearsal-synth")
            cleanup.callback(synth_pool.shutdown, wait=True, cancel_futures=True)
            first_synth_done = threading.Event()  # not both synths at once: the first one is in the way
            cleanup.callback(first_synth_done.set)
            act2: Future[Path] = synth_pool.submit(self._synth_act2, first_synth_done, scratch / "cdktf.out-act2",
                                                   settings_file)
            background = threading.Thread(target=self._prodlike, args=(url, binary, act2, prodlike),
                                          name="rehearsal-prodlike", daemon=True)
            cleanup.callback(self._join, background)
            cleanup.callback(self.background.stop)
            background.start()
            with self.phase("synth"):
                try:
                    synthesize(scratch / "cdktf.out", "--environment", self.environment)
                finally:
                    first_synth_done.set()
                self.workdir = workdir = scratch / "stack"
                prepare_stack(scratch / "cdktf.out" / "stacks" / settings.stack_name, workdir, url)
                env = terraform_environment(scratch)
            tf = lambda *args, **kw: run_logged(binary, workdir, env, *args, log=log,  # noqa: E731
                                                timeout=TERRAFORM_TIMEOUT, **kw)
            with self.phase("init"):
                tf("init", "-input=false", "-no-color")
            with self.phase("plan"):
                tf("plan", "-input=false", "-no-color", "-lock=false", "-out=tfplan")
                plan = json.loads(tf("show", "-json", "tfplan").stdout)
                if self.keep_plan:
                    self.keep_plan.parent.mkdir(parents=True, exist_ok=True)
                    self.keep_plan.write_text(json.dumps(sanitize_plan(plan, scratch), indent=1, sort_keys=True)
                                              + "\n", encoding="utf-8")
            with self.phase("apply"):
                tf("apply", "-input=false", "-no-color", "-lock=false", "tfplan")
                outputs = {k: v["value"] for k, v in json.loads(tf("output", "-json").stdout).items()}
            with self.phase("serve"):
                deployment, runtime, pagerduty, pg = self._serve(url, outputs, settings.name_prefix, cleanup)
            with self.phase("scheduled"):
                operations = self._scheduled(url, outputs, deployment, settings, pg)
            with self.phase("happy"):
                self._happy(url, deployment, runtime, pg)
            with self.phase("failing"):
                self._failing(url, deployment, runtime, pagerduty, pg)
            with self.phase("badbody"):
                self._bad_body(url, deployment, runtime, pg)
            with self.phase("notify"):
                self._notify(url, operations, deployment, runtime, settings, pg)
            with self.phase("replan"):
                self._expect_no_changes(tf, "the second plan")
            # -- the second act: what happens to a stack that lives on -------------------------------------
            with self.phase("replace"):
                self._replace(tf, url, workdir, settings, act2)
            with self.phase("upgrade"):
                self._upgrade(tf, url, workdir)
            # `rebuild` runs in the prod-like environment's thread, between its two builds (_prodlike_twice)
            with self.phase("destroy"):
                tf("destroy", "-input=false", "-no-color", "-lock=false", "-auto-approve")
                managed = managed_in_state(workdir)
                expect(not managed, f"resources left after destroy: {[r['_address'] for r in managed]}")
            if background.is_alive():
                self.out(f"rehearsal: waiting for {PRODLIKE} ...")
            self._join(background)
            expect(any(p.name == PRODLIKE for p in self.outcome.phases), f"{PRODLIKE} reported no verdict")

    def _synth_act2(self, after: threading.Event, outdir: Path, settings_file: Path) -> Path:
        """This environment with the second act's settings and the prod-like one, in one `main.py` run."""
        from tests.support.synth import synthesize

        while not after.wait(0.5):
            if self.background.stopped.is_set():
                raise RehearsalError("stopped: the rehearsal ended early")
        if self.background.stopped.is_set():
            raise RehearsalError("stopped: the rehearsal ended early")
        return synthesize(outdir, "--settings", str(settings_file), "--environment", self.environment,
                          "--environment", PRODLIKE)

    @staticmethod
    def _join(thread: threading.Thread) -> None:
        while thread.is_alive():  # in slices, so Ctrl-C still reaches the main thread
            thread.join(0.5)

    @staticmethod
    def _expect_no_changes(tf: Callable[..., subprocess.CompletedProcess[str]], what: str) -> None:
        result = tf("plan", "-input=false", "-no-color", "-lock=false", "-detailed-exitcode", ok_codes=(0, 2))
        if result.returncode == 2:
            changes = [line for line in result.stdout.splitlines() if line.strip().startswith(("#", "~", "+", "-"))]
            raise RehearsalError(f"{what} is not empty:\n" + "\n".join(changes[:60]))

    # -- the second act ---------------------------------------------------------------------------
    def _replace(self, tf: Callable[..., Any], url: str, workdir: Path, settings: Any, act2: Future[Path]) -> None:
        """New descriptions force new security groups and a new parameter group: created before the old ones go,
        under names that cannot collide with them."""
        old_groups = {r["id"] for r in managed_in_state(workdir, "aws_security_group")}
        old_parameter_groups = {r["id"] for r in managed_in_state(workdir, "aws_db_parameter_group")}
        update_stack(act2.result(timeout=TERRAFORM_TIMEOUT) / "stacks" / settings.stack_name, workdir)
        # No refresh: the replan just before read everything back and found nothing changed.
        tf("plan", "-input=false", "-no-color", "-lock=false", "-refresh=false", "-out=tfplan-replace")
        plan = json.loads(tf("show", "-json", "tfplan-replace").stdout)
        problems = check_replacement_plan(plan)
        expect(not problems, "the plan of the new descriptions is not the replacement expected:\n"
               + "\n".join(problems) + "\nthe plan changes:\n  " + "\n  ".join(plan_change_lines(plan)))
        self.out(f"rehearsal: replace: plan {plan_summary(plan)}")
        tf("apply", "-input=false", "-no-color", "-lock=false", "tfplan-replace")

        prefix = settings.name_prefix
        groups = {r["id"]: r for r in managed_in_state(workdir, "aws_security_group")}
        parameter_groups = {r["id"] for r in managed_in_state(workdir, "aws_db_parameter_group")}
        expect(not set(groups) & old_groups and not parameter_groups & old_parameter_groups,
               f"the state still has the old groups: {sorted(set(groups) & old_groups)} "
               f"{sorted(parameter_groups & old_parameter_groups)}")
        ec2 = aws_client(url, "ec2")
        in_vpc = [g for page in ec2.get_paginator("describe_security_groups").paginate(
            Filters=[{"Name": "vpc-id", "Values": [settings.network.vpc_id]}]) for g in page["SecurityGroups"]]
        ours = {g["GroupId"]: g["GroupName"] for g in in_vpc if g["GroupName"].startswith(f"{prefix}-")}
        lambda_groups = [i for i, n in ours.items() if n.startswith(f"{prefix}-lambda")]
        rds_groups = [i for i, n in ours.items() if n.startswith(f"{prefix}-rds")]
        expect(len(lambda_groups) == 1 and len(rds_groups) == 1 and set(ours) == set(groups),
               f"security groups of {prefix} in the emulator: {ours}; expected the state's {sorted(groups)}")
        rds = aws_client(url, "rds")
        names = sorted(g["DBParameterGroupName"] for page in rds.get_paginator("describe_db_parameter_groups")
                       .paginate() for g in page["DBParameterGroups"] if g["DBParameterGroupName"].startswith(f"{prefix}-"))
        expect(names == sorted(parameter_groups),
               f"parameter groups of {prefix} in the emulator: {names}; expected the state's {sorted(parameter_groups)}")
        (instance,) = managed_in_state(workdir, "aws_db_instance")
        (db,) = rds.describe_db_instances(DBInstanceIdentifier=instance["identifier"])["DBInstances"]
        used_parameter_groups = [g["DBParameterGroupName"] for g in db["DBParameterGroups"]]
        used_groups = [g["VpcSecurityGroupId"] for g in db["VpcSecurityGroups"]]
        expect(used_parameter_groups == names and used_groups == rds_groups,
               f"the database uses {used_parameter_groups} and {used_groups}, not the new {names} and {rds_groups}")
        self.out(f"rehearsal: replace: security groups {sorted(old_groups)} -> {sorted(ours)}, parameter group "
                 f"{sorted(old_parameter_groups)} -> {names}")
        self._expect_no_changes(tf, "the plan after the replacement")

    def _upgrade(self, tf: Callable[..., Any], url: str, workdir: Path) -> None:
        """RDS upgrades the minor version itself (auto_minor_version_upgrade): Terraform must not try to undo it."""
        (instance,) = managed_in_state(workdir, "aws_db_instance")
        rds = aws_client(url, "rds")
        (db,) = rds.describe_db_instances(DBInstanceIdentifier=instance["identifier"])["DBInstances"]
        before = db["EngineVersion"]
        expect(before != UPGRADED_ENGINE_VERSION, f"the database already runs {before}")
        rds.modify_db_instance(DBInstanceIdentifier=instance["identifier"], EngineVersion=UPGRADED_ENGINE_VERSION,
                               ApplyImmediately=True)
        (db,) = rds.describe_db_instances(DBInstanceIdentifier=instance["identifier"])["DBInstances"]
        expect(db["EngineVersion"] == UPGRADED_ENGINE_VERSION,
               f"the emulator reports {db['EngineVersion']} after the upgrade to {UPGRADED_ENGINE_VERSION}")
        self.out(f"rehearsal: upgrade: {instance['identifier']} {before} -> {db['EngineVersion']} outside Terraform "
                 f"(configured: {instance.get('engine_version')})")
        result = tf("plan", "-input=false", "-no-color", "-lock=false", "-detailed-exitcode", "-out=tfplan-upgrade",
                    ok_codes=(0, 2))
        if result.returncode == 2:
            changes = plan_change_lines(json.loads(tf("show", "-json", "tfplan-upgrade").stdout))
            raise RehearsalError(f"the plan after RDS upgraded to {UPGRADED_ENGINE_VERSION} is not empty:\n  "
                                 + "\n  ".join(changes))

    def _check_rebuilt(self, url: str, workdir: Path, secrets: list[dict[str, Any]],
                       db_before: dict[str, Any]) -> None:
        """After a teardown and an immediate rebuild: nothing the first build named still holds its name. The
        database is back under its identifier; the first build's token secret is still scheduled for deletion
        (its recovery window) and the rebuild created another."""
        (db_after,) = managed_in_state(workdir, "aws_db_instance")
        rds = aws_client(url, "rds")
        (db,) = rds.describe_db_instances(DBInstanceIdentifier=db_after["identifier"])["DBInstances"]
        expect(db_after["identifier"] == db_before["identifier"] and db["DBInstanceStatus"] == "available",
               f"the database came back as {db_after['identifier']} ({db['DBInstanceStatus']})")
        sm = aws_client(url, "secretsmanager")
        rebuilt = {r["_address"]: r for r in managed_in_state(workdir, "aws_secretsmanager_secret")}
        for old in secrets:  # the stack's own token secret (none when the settings name an existing one)
            scheduled = sm.describe_secret(SecretId=old["arn"])
            expect(scheduled.get("DeletedDate") is not None, f"{old['name']} is not scheduled for deletion")
            new = rebuilt.get(old["_address"])
            expect(new is not None and new["arn"] != old["arn"], f"no new secret for {old['_address']}")
            self.out(f"rehearsal: rebuild: {old['name']} scheduled for deletion, {new['name']} created")

    # -- the prod-like environment (a thread, alongside the rest) ------------------------------------
    def _prodlike(self, url: str, binary: str, act2: Future[Path], settings: Any) -> None:
        with contextlib.suppress(BaseException):  # the verdict is recorded and printed by phase()
            with self.phase(PRODLIKE):
                self._prodlike_twice(url, binary, act2, settings)

    def _prodlike_twice(self, url: str, binary: str, act2: Future[Path], settings: Any) -> None:
        assert self.scratch is not None
        folder = self.scratch / PRODLIKE
        folder.mkdir()
        step_started = time.monotonic()

        def step(text: str) -> None:
            nonlocal step_started
            now = time.monotonic()
            self.out(f"rehearsal: {PRODLIKE}: {text} ({now - step_started:.1f} s)")
            step_started = now

        while True:  # in slices: the rehearsal may stop meanwhile
            try:
                outdir = act2.result(timeout=0.5)
                break
            except FutureTimeout:
                if self.background.stopped.is_set():
                    raise RehearsalError("stopped: the rehearsal ended early") from None
        workdir = folder / "stack"
        prepare_stack(outdir / "stacks" / settings.stack_name, workdir, url)
        env = terraform_environment(folder)
        log = folder / "terraform.log"

        def tf(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
            return self.background.run(binary, workdir, env, *args, log=log, timeout=TERRAFORM_TIMEOUT, **kw)

        tf("init", "-input=false", "-no-color")
        step(f"stack {settings.stack_name} synthesized, init ok")
        final_snapshots: list[str] = []

        def build(n: int) -> dict[str, Any]:
            tf("apply", "-input=false", "-no-color", "-lock=false", "-auto-approve")
            (db,) = managed_in_state(workdir, "aws_db_instance")
            expect(not db.get("skip_final_snapshot") and not db.get("deletion_protection"),
                   f"{db['identifier']}: skip_final_snapshot {db.get('skip_final_snapshot')}, deletion_protection "
                   f"{db.get('deletion_protection')}; the prod-like environment keeps a final snapshot and can go")
            final_snapshots.append(db["final_snapshot_identifier"])
            step(f"apply {n} ok")
            return db

        def teardown(n: int, db: dict[str, Any]) -> None:
            # No refresh: the apply just before wrote what is there.
            tf("destroy", "-input=false", "-no-color", "-lock=false", "-refresh=false", "-auto-approve")
            managed = managed_in_state(workdir)
            expect(not managed, f"resources left after destroy {n}: {[r['_address'] for r in managed]}")
            step(f"destroy {n} ok, final snapshot {db['final_snapshot_identifier']}")

        first = build(1)
        secrets = managed_in_state(workdir, "aws_secretsmanager_secret")
        # Torn down and built again at once (the other environment meanwhile goes on with its own phases).
        with self.phase("rebuild"):
            teardown(1, first)
            second = build(2)
            self._check_rebuilt(url, workdir, secrets, first)
        teardown(2, second)
        identifier = second["identifier"]
        rds = aws_client(url, "rds")
        snapshots = [s for page in rds.get_paginator("describe_db_snapshots").paginate(SnapshotType="manual")
                     for s in page["DBSnapshots"]]
        problems = check_final_snapshots(snapshots, identifier, final_snapshots)
        expect(not problems, "\n".join(problems))

    # -- phases with the deployed stack -----------------------------------------------------------
    def _serve(self, url: str, outputs: dict[str, Any], name_prefix: str, cleanup: contextlib.ExitStack) -> tuple:
        from tests.support.fake_pagerduty import FakePagerDuty, generate_account
        from tests.support.db_roles import login_secrets
        from tests.support.lambda_runtime import InProcessLambdas, load_handler
        from tests.support.postgres import throwaway_postgres
        from tests.support.tls import STANDIN_CA_CERT, STANDIN_CA_KEY

        deployment = read_deployment(url, outputs, name_prefix)
        secret = deployment.db_secret
        expect(isinstance(secret.get("username"), str) and isinstance(secret.get("password"), str),
               "the RDS-managed secret has no username/password")
        db_name = deployment.functions["lambda_1"]["Environment"]["Variables"]["DB_NAME"]
        users = database_logins(url, deployment)
        for folder, user in users.items():
            token = iam_token_for(url, deployment.functions[folder], "rehearsal.invalid")
            expect(f"DBUser={user}" in token and "X-Amz-Expires=900" in token, f"{folder}: no IAM token for {user}")
        # The master login of the local server is the one in the emulator's RDS-managed secret; its certificate
        # is issued by the stand-in CA the synth packed into the layer, so the deployed bundle verifies it.
        pg = cleanup.enter_context(throwaway_postgres(user=secret["username"], password=secret["password"],
                                                      dbname=db_name, ca=(STANDIN_CA_CERT, STANDIN_CA_KEY)))
        self.out(f"rehearsal: PostgreSQL at {pg.host}:{pg.port}, data {Path(pg.datadir).parent} (TLS, stand-in CA)")
        conn = pg.connect()
        try:
            logins = login_secrets(conn, aws_client(url, "secretsmanager"), "rehearsal/",
                                   tuple(sorted(set(users.values()))))
        finally:
            conn.close()
        self.out(f"rehearsal: IAM logins {', '.join(f'{f}={u}' for f, u in users.items())}: policies name exactly "
                 "these users and tokens sign; locally they log in with passwords")
        pagerduty = cleanup.enter_context(FakePagerDuty(generate_account(self.n_incidents, 11, PD_START),
                                                        token=PAGERDUTY_TOKEN, rate_limit=1_000_000))
        # The stack creates the token secret empty; the operator puts the token in (README).
        aws_client(url, "secretsmanager").put_secret_value(SecretId=deployment.token_secret_arn,
                                                           SecretString=PAGERDUTY_TOKEN)
        # The functions' logs (and the interpreter's) go to a file, as CloudWatch would keep them, not to the screen.
        function_log = logging.FileHandler(self.scratch / "functions.log", encoding="utf-8")  # type: ignore[operator]
        logging.getLogger().addHandler(function_log)
        cleanup.callback(function_log.close)
        cleanup.callback(logging.getLogger().removeHandler, function_log)
        runtime = InProcessLambdas()
        for folder, configuration in deployment.functions.items():
            expect(configuration["Handler"] == "handler.handler", f"{folder}: handler {configuration['Handler']}")
            opt = deployed_layer_files(url, configuration, self.workdir, self.scratch / "opt" / folder)  # type: ignore[operator]
            env = function_environment(configuration, url, pg, pagerduty.url, opt, logins)
            expect(env.get("DB_SSL") == "verify-full" and Path(env.get("DB_SSL_ROOT_CERT", "")).is_file(),
                   f"{folder}: deployed with DB_SSL={env.get('DB_SSL')}, DB_SSL_ROOT_CERT="
                   f"{env.get('DB_SSL_ROOT_CERT')} (the layer does not carry it)")
            runtime.register(configuration["FunctionName"], load_handler(folder), env,
                             timeout_seconds=configuration["Timeout"])
        cleanup.enter_context(runtime.serving())
        return deployment, runtime, pagerduty, pg

    def _run_of(self, pg: Any, execution_arn: str) -> dict[str, Any] | None:
        conn = pg.connect()
        try:
            rows = conn.run("SELECT to_jsonb(r)::text FROM pagerduty.pipeline_runs r WHERE execution_id = :e",
                            e=execution_arn)
        finally:
            conn.close()
        return json.loads(rows[0][0]) if rows else None

    def _scheduled(self, url: str, outputs: dict[str, Any], deployment: Deployment, settings: Any, pg: Any) -> Any:
        """The schedule as deployed; an execution started as its target would runs the incremental load."""
        from tools.rehearsal_operations import check_schedule, read_operations, start_like_the_schedule

        client = lambda service: aws_client(url, service)  # noqa: E731
        operations = read_operations(client, outputs, deployment.state_machine_arn)
        check_schedule(client, operations, deployment.state_machine_arn, settings.schedule.is_enabled)
        arn = start_like_the_schedule(client, operations)
        result = wait_for(url, arn)
        expect(result["status"] == "SUCCEEDED",
               f"scheduled run: {result['status']} {result.get('error')}: {result.get('cause')}")
        run = self._run_of(pg, arn)
        expect(run is not None and run["status"] == "succeeded" and run.get("scope") == "all",
               f"scheduled run: pipeline_runs row {run} (expected succeeded, scope all)")
        from pagerduty_pipeline.runs import get_watermark

        conn = pg.connect()
        try:
            watermark = get_watermark(conn, "all")
        finally:
            conn.close()
        expect(watermark is not None, "scheduled run: no watermark for scope all")
        self.out(f"rehearsal: schedule {operations.schedule['Name']} ({operations.schedule['ScheduleExpression']}, "
                 f"{operations.schedule['State']}) started {arn.rsplit(':', 1)[1]}: SUCCEEDED, watermark "
                 f"{watermark.isoformat()}")
        return operations

    def _notify(self, url: str, operations: Any, deployment: Deployment, runtime: Any, settings: Any,
                pg: Any) -> None:
        """Executions that ended FAILED and TIMED_OUT with their runs left running (no Catch ran): the rule's
        targets mark the runs and tell the topic, readably."""
        from tests.support.eventbridge import status_change_event
        from tests.support.pipeline import envelope
        from tools.rehearsal_operations import deliver, matches, read_inbox, subscribe_inbox

        client = lambda service: aws_client(url, service)  # noqa: E731
        inbox = subscribe_inbox(client, operations.topic_arn, "rehearsal-operator-inbox")
        step1 = deployment.functions["lambda_1"]["FunctionName"]
        executions = deployment.state_machine_arn.replace(":stateMachine:", ":execution:")
        pattern = operations.rule["EventPattern"]
        expect(not matches(pattern, status_change_event(f"{executions}:fine", "SUCCEEDED")),
               "notify: the rule would also fire for a SUCCEEDED execution")
        other = executions.replace(executions.rsplit(":", 1)[1], "another-pipeline")
        expect(not matches(pattern, status_change_event(f"{other}:x", "FAILED")),
               "notify: the rule would also fire for another state machine's executions")
        cases = [("TIMED_OUT", "States.Timeout", None, "timed_out"),
                 ("FAILED", "States.TaskFailed", "lambda_2: the Lambda service failed the invocation", "failed")]
        for status, error, cause, run_status in cases:
            # What the state machine's Lambda task sends step 1 for an execution of the deployed machine.
            payload = envelope({"since": "2024-03-02T00:00:00Z", "until": "2024-03-03T00:00:00Z"},
                               f"rehearsal-{status.lower().replace('_', '-')}", "FetchInitialData",
                               executions.rsplit(":", 1)[1], started=datetime.now(timezone.utc).isoformat(),
                               timeout_seconds=settings.workflow.timeout_seconds)
            arn = payload["execution_id"]
            expect(arn.startswith(f"{executions}:"), f"notify: {arn} is not an execution of {executions}")
            started = json.loads(aws_client(url, "lambda").invoke(FunctionName=step1, Payload=json.dumps(
                payload).encode())["Payload"].read())
            expect(started.get("success") is True, f"notify: step 1 of {arn} did not start a run: {started}")
            delivered = deliver(client, operations, status_change_event(arn, status, error=error, cause=cause))
            run = self._run_of(pg, arn)
            expect(run is not None and run["status"] == run_status and run.get("error") == error,
                   f"notify: after {status}, pipeline_runs row {run} (expected {run_status}, error {error})")
            handled = delivered["lambda"]
            expect(handled.get("recorded") is True, f"notify: the error handler answered {handled}")
            received = read_inbox(client, inbox)
            expect(len(received) == 1, f"notify: the topic delivered {len(received)} messages for {status}")
            message = received[0]
            wanted = [arn.rsplit(":", 1)[1], status, error] + (["lambda_2"] if cause else [])
            missing = [word for word in wanted if word not in message]
            expect(not missing and not message.lstrip().startswith("{"),
                   f"notify: the {status} message is not readable (missing {missing}): {message[:600]}")
            self.out(f"rehearsal: {status}: run {run['run_id']} marked {run_status}; the topic said: "
                     + " / ".join(line.strip() for line in message.splitlines() if line.strip())[:300])

    def _happy(self, url: str, deployment: Deployment, runtime: Any, pg: Any) -> None:
        body = json.dumps({"since": "2024-03-01T00:00:00Z", "until": "2024-04-01T00:00:00Z"})
        arn = start_like_the_integration(url, deployment.integration, body, "rehearsal-happy")
        result = wait_for(url, arn)
        expect(result["status"] == "SUCCEEDED",
               f"happy path: {result['status']} {result.get('error')}: {result.get('cause')}")
        run = self._run_of(pg, arn)
        expect(run is not None and run["status"] == "succeeded", f"happy path: pipeline_runs row {run}")
        conn = pg.connect()
        try:
            incidents = conn.run("SELECT count(*) FROM pagerduty.incidents")[0][0]
            checks = conn.run("SELECT count(*), count(*) FILTER (WHERE passed) FROM pagerduty.validation_results "
                              "WHERE run_id = :r", r=run["run_id"])[0]
        finally:
            conn.close()
        expect(incidents > 0, "happy path: no incidents loaded")
        expect(checks[0] > 0 and checks[0] == checks[1], f"happy path: checks passed {checks[1]} of {checks[0]}")
        called = [call.function for call in runtime.invocations]
        for folder in ("lambda_1", "lambda_2", "lambda_3"):
            expect(deployment.functions[folder]["FunctionName"] in called, f"happy path: {folder} never invoked")

    def _failing(self, url: str, deployment: Deployment, runtime: Any, pagerduty: Any, pg: Any) -> None:
        handler_name = deployment.functions["lambda_error_handler"]["FunctionName"]
        before = len(runtime.calls(handler_name))
        pagerduty.inject(403, count=1000, path="/log_entries")  # PagerDuty refuses step 2's reads
        try:
            body = json.dumps({"since": "2024-03-01T00:00:00Z", "until": "2024-04-01T00:00:00Z"})
            arn = start_like_the_integration(url, deployment.integration, body, "rehearsal-failing")
            result = wait_for(url, arn)
        finally:
            pagerduty.clear_faults()
        expect(result["status"] == "FAILED" and result.get("error") == "pagerduty_forbidden",
               f"failing step: {result['status']} {result.get('error')} (expected FAILED pagerduty_forbidden)")
        expect(len(runtime.calls(handler_name)) == before + 1, "failing step: the error handler did not run")
        run = self._run_of(pg, arn)
        expect(run is not None and run["status"] == "failed" and run.get("step") == "FetchIncidents",
               f"failing step: pipeline_runs row {run}")

    def _bad_body(self, url: str, deployment: Deployment, runtime: Any, pg: Any) -> None:
        step2 = deployment.functions["lambda_2"]["FunctionName"]
        before = len(runtime.calls(step2))
        arn = start_like_the_integration(url, deployment.integration, json.dumps({"since": "yesterday"}),
                                         "rehearsal-bad-body")
        result = wait_for(url, arn)
        expect(result["status"] == "FAILED" and result.get("error") == "invalid_date",
               f"bad body: {result['status']} {result.get('error')} (expected FAILED invalid_date)")
        expect(len(runtime.calls(step2)) == before, "bad body: step 2 ran")
        run = self._run_of(pg, arn)
        expect(run is not None and run["status"] == "failed" and run.get("step") == "FetchInitialData",
               f"bad body: pipeline_runs row {run}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.rehearsal", description=__doc__.splitlines()[0])
    parser.add_argument("--environment", default="dev", help="environment of config/environments.json (default dev)")
    parser.add_argument("--keep-plan", type=Path, help="write the stack's sanitized plan.json here")
    parser.add_argument("--fail-at", choices=PHASES, help=argparse.SUPPRESS)  # cleanup tests
    args = parser.parse_args(argv)

    def out(line: str) -> None:
        print(line, flush=True)

    outcome = Rehearsal(environment=args.environment, keep_plan=args.keep_plan, fail_at=args.fail_at, out=out).run()
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())
