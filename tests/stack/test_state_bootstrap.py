"""The remote-state walkthrough (README, "Remote state") end to end: real Terraform, the real AWS provider, moto.

1. `main.py --bootstrap-state`: the bootstrap stack with a local backend (at <project>/state/, redirected to a
   temp file here so the project's state/ folder is never touched), `terraform init` + `apply` into moto;
2. `main.py` (no flag) into the same working folder: `terraform init -migrate-state -force-copy` moves the state
   into the bucket the stack created, under `state-backend/<key>`, encrypted with the stack's KMS key (SSE-KMS,
   not the AES256 Terraform asks for without backend.tf.json's kms_key_id); the local file is deleted;
3. a new machine (a fresh copy of the synthesized folder: no .terraform, no state): `init` finds the state in
   the bucket and `plan -detailed-exitcode` reports no changes.
A second test shows the encryption check failing for a backend without kms_key_id.

The synthesized JSON is never edited: Terraform merges `*_override.tf.json` files into the configuration. The
provider override points the provider at moto; the backend override repeats the synthesized backend block (an
override's backend replaces the original's as a whole) with moto's endpoints added.

moto runs as its own process (a small script starting ThreadedMotoServer on a free port): an in-process server
would share moto's process-wide backends with the other suites running in the same pytest-xdist worker.

Gaps of moto 5.2.5 met here (the first is filled in moto's process only; each assertion says what it proves):
- Bucket policies: moto checks a bucket's Deny statements on object requests but evaluates only the
  `StringEquals` condition operator and counts any other as met, so the stack's DenyInsecureTransport statement
  (`Bool: aws:SecureTransport = false`) denies every object request (HeadObject 403: the migration fails),
  whatever the transport. On AWS Terraform talks TLS, so the statement never applies; the server script leaves
  exactly that statement out of moto's check (the policy itself is stored and read back unchanged).
- SSE-KMS key ids: S3 resolves the `x-amz-server-side-encryption-aws-kms-key-id` a PutObject names and reports
  the key's ARN; moto stores and reports the string as given (Terraform sends backend.tf.json's alias, so
  HeadObject says `alias/stepfuncproject-terraform-state`), accepts an alias that does not exist, and reports no
  key id for `aws:kms` without one (S3: the aws/s3 managed key's ARN). So the check resolves an alias itself
  (kms.describe_key, which fails for an unknown alias) and compares with the key the stack created
  (`StateKeyArn`); it accepts the key's ARN or id as S3 reports them.
- Objects are not actually encrypted, and KMS key policies are not evaluated.
No gap for the lock table: moto keeps its deletion protection, point-in-time recovery and KMS encryption with the
state key (the test reads them back, and the new machine's plan finds nothing to change).

Runtime: about 1.5-2 minutes for the first test, most of it the provider waiting (~55 s) for the bucket's
lifecycle rules to read back as written, and KMS key creation (~13 s); the second applies only what state
encryption depends on (~1 minute). The two run in parallel under `pytest -n 2`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from modules.settings import key_alias  # pydantic only: no CDK import
from tests.support.synth import BOOTSTRAP_STACK as STACK_NAME
from tests.support.synth import ROOT, run_main, synthesize
from tests.support.tools import terraform_binary, terraform_env
from tools import rehearsal
from tools.terraform import TerraformError, copy_with_local_backend, run_logged

pytestmark = pytest.mark.slow

REGION = "eu-west-2"
ACCESS_KEY = SECRET_KEY = "state-bootstrap-test"
PROVIDER_OVERRIDE = "zz_test_provider_override.tf.json"
LOCAL_BACKEND_OVERRIDE = "zz_test_local_backend_override.tf.json"
S3_BACKEND_OVERRIDE = "zz_test_s3_backend_override.tf.json"
# Every service the bootstrap stack's resources and data sources call, by the provider's endpoint names.
PROVIDER_SERVICES = ("dynamodb", "iam", "kms", "s3", "sts")
# The services the S3 backend calls (state object and lock file, lock table, caller identity).
BACKEND_SERVICES = ("dynamodb", "s3", "sts")
TERRAFORM_TIMEOUT = 300
# The walkthrough's fixed points (README, "Remote state"), spelled out rather than imported from modules.state_backend
# (which would load cdktf into the test process: half a minute of collection).
LOCAL_STATE_FILE = ROOT / "state" / f"{STACK_NAME}.tfstate"
STATE_KEY = "state-backend/stepfuncproject/terraform.tfstate"
# moto's server as a process of its own: it prints its port, then serves until its stdin closes. One gap is filled
# in that process only (see the module docstring): the bucket's TLS-only statement is left out of moto's policy
# check, as AWS leaves it out for the TLS requests Terraform makes there.
MOTO_SERVER = """
import json, logging, sys
from moto.iam.access_control import IAMPolicy, PermissionResult
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.s3.models import FakeBucket

TLS_ONLY = {"Bool": {"aws:SecureTransport": "false"}}

def get_permission(self, action, resource):
    if self.policy is None:
        return PermissionResult.NEUTRAL
    document = json.loads(self.policy.decode())
    statements = document["Statement"] if isinstance(document["Statement"], list) else [document["Statement"]]
    document["Statement"] = [s for s in statements if s.get("Condition") != TLS_ONLY]
    return IAMPolicy(json.dumps(document)).is_action_permitted(action, resource)

FakeBucket.get_permission = get_permission
logging.getLogger("werkzeug").setLevel(logging.WARNING)
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
server.stop()
"""


# -- moto ---------------------------------------------------------------------------------------------
@pytest.fixture
def moto_url(tmp_path: Path) -> Iterator[str]:
    """A moto server of this test's own, on a free loopback port; stopped (and waited for) afterwards."""
    log = (tmp_path / "moto.log").open("w")
    proc = subprocess.Popen([sys.executable, "-c", MOTO_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=log, text=True)
    try:
        line = proc.stdout.readline().strip() if proc.stdout else ""
        if not line.isdigit():
            proc.wait(timeout=10)
            pytest.fail(f"moto did not start: {(tmp_path / 'moto.log').read_text()}")
        yield f"http://127.0.0.1:{line}"
    finally:
        if proc.stdin:
            proc.stdin.close()  # the server stops
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def aws(url: str, service: str) -> Any:
    import boto3

    return boto3.client(service, endpoint_url=url, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET_KEY)


# -- configuration ------------------------------------------------------------------------------------
def s3_backend(stack_dir: Path) -> dict[str, Any]:
    """The synthesized S3 backend block of a stack folder."""
    config = json.loads((stack_dir / "cdk.tf.json").read_text())
    return config["terraform"]["backend"]["s3"]


def provider_override(url: str) -> dict[str, Any]:
    """The rehearsal's provider override (fake keys, no metadata or credential checks), for the state services."""
    return {"provider": {"aws": [rehearsal.provider_override(url, PROVIDER_SERVICES)]}}


def backend_override(settings: dict[str, Any], url: str) -> dict[str, Any]:
    """The S3 backend exactly as given (bucket, key, region, encrypt, kms_key_id, dynamodb_table, use_lockfile),
    with moto's endpoints and credentials added."""
    return {"terraform": {"backend": {"s3": {
        **settings,
        "endpoints": {service: url for service in BACKEND_SERVICES},
        "use_path_style": True,
        "access_key": ACCESS_KEY, "secret_key": SECRET_KEY,
        "skip_credentials_validation": True, "skip_requesting_account_id": True,
        "skip_metadata_api_check": True, "skip_region_validation": True,
    }}}}


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2) + "\n")


class Terraform:
    """terraform in one scratch folder's environment (offline provider mirror, moto's fake credentials only);
    every command and its output goes to terraform.log there."""

    def __init__(self, scratch: Path) -> None:
        self.binary = terraform_binary()
        self.log = scratch / "terraform.log"
        env = terraform_env(scratch)
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                    "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_STS", "TF_DATA_DIR", "TF_WORKSPACE"):
            env.pop(key, None)
        env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_REGION=REGION,
                   AWS_DEFAULT_REGION=REGION, AWS_CONFIG_FILE=str(scratch / "no-aws-config"),
                   AWS_SHARED_CREDENTIALS_FILE=str(scratch / "no-aws-credentials"),
                   TF_PLUGIN_CACHE_DIR=str(scratch / "plugin-cache"))  # the provider copied once, not per init
        (scratch / "plugin-cache").mkdir(exist_ok=True)
        self.env = env

    def __call__(self, folder: Path, *args: str, ok_codes: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        try:
            return run_logged(self.binary, folder, self.env, *args, "-no-color", log=self.log,
                              timeout=TERRAFORM_TIMEOUT, ok_codes=ok_codes)
        except TerraformError as exc:
            pytest.fail(f"{exc}\n(full log: {self.log})")
        finally:
            with self.log.open("a") as fh:
                fh.write(f"[{args[0]} took {time.monotonic() - started:.1f}s]\n\n")


# -- the walkthrough ----------------------------------------------------------------------------------
def synthesize_stack(outdir: Path, *args: str) -> Path:
    """`main.py --environment dev --outdir outdir *args` (the bootstrap stack is the same for any environment;
    one pipeline stack synthesizes faster than all). Returns the bootstrap stack's folder."""
    return synthesize(outdir, "--environment", "dev", *args) / "stacks" / STACK_NAME


def bootstrap(tmp_path: Path, url: str, terraform: Terraform, targets: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """Step 1: `main.py --bootstrap-state`, init + apply (of `targets` only, when given). Returns the working
    folder and its local state file."""
    stack_dir = synthesize_stack(tmp_path / "bootstrap-out", "--bootstrap-state")
    local = json.loads((stack_dir / "cdk.tf.json").read_text())["terraform"]["backend"]["local"]
    # The walkthrough's state file is <project>/state/…, whatever the outdir: the test keeps its own elsewhere.
    assert (stack_dir / local["path"]).resolve() == LOCAL_STATE_FILE
    workdir = tmp_path / "work"
    state_file = tmp_path / "local-state" / f"{STACK_NAME}.tfstate"
    state_file.parent.mkdir()
    copy_with_local_backend(stack_dir, workdir, LOCAL_BACKEND_OVERRIDE, state_file)
    write_json(workdir / PROVIDER_OVERRIDE, provider_override(url))
    terraform(workdir, "init", "-input=false")
    terraform(workdir, "apply", "-auto-approve", "-input=false", *(f"-target={target}" for target in targets))
    assert state_file.is_file()
    return workdir, state_file


def bootstrap_and_synthesize_remote(tmp_path: Path, url: str, terraform: Terraform,
                                    targets: tuple[str, ...] = ()) -> tuple[Path, Path, Path]:
    """Step 1, with step 2's synthesis (`main.py` without the flag) done meanwhile. Returns the working folder,
    its local state file and the S3-backend version of the stack folder."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        remote = pool.submit(synthesize_stack, tmp_path / "remote-out")
        workdir, state_file = bootstrap(tmp_path, url, terraform, targets)
        return workdir, state_file, remote.result()


def migrate(workdir: Path, stack_dir: Path, url: str, terraform: Terraform, settings: dict[str, Any]) -> None:
    """Step 2: the S3-backend configuration in place of the local one in the same working folder (Terraform's
    data, the provider override and the local state stay), then `init -migrate-state -force-copy`."""
    for name in ("cdk.tf.json", ".terraform.lock.hcl", LOCAL_BACKEND_OVERRIDE):
        (workdir / name).unlink()
    shutil.copytree(stack_dir, workdir, dirs_exist_ok=True)
    write_json(workdir / S3_BACKEND_OVERRIDE, backend_override(settings, url))
    terraform(workdir, "init", "-migrate-state", "-force-copy", "-input=false")


def new_machine(tmp_path: Path, stack_dir: Path, url: str, settings: dict[str, Any]) -> Path:
    """A fresh copy of the synthesized folder (no .terraform, no state) with the same overrides."""
    folder = tmp_path / "new-machine"
    shutil.copytree(stack_dir, folder)
    assert not (folder / ".terraform").exists() and not list(folder.glob("*.tfstate*"))
    write_json(folder / PROVIDER_OVERRIDE, provider_override(url))
    write_json(folder / S3_BACKEND_OVERRIDE, backend_override(settings, url))
    return folder


def state_object_problems(url: str, bucket: str, key: str, kms_key_id: str) -> list[str]:
    """What is wrong with the state object's encryption: it must be SSE-KMS with the key `kms_key_id` (the
    alias backend.tf.json names) resolves to, the key the bootstrap stack created."""
    head = aws(url, "s3").head_object(Bucket=bucket, Key=key)
    algorithm, object_key = head.get("ServerSideEncryption"), head.get("SSEKMSKeyId")
    if algorithm != "aws:kms":
        return [f"s3://{bucket}/{key} is encrypted with {algorithm!r}, expected 'aws:kms' (the state key)"]
    if object_key is None:
        return [f"s3://{bucket}/{key} is SSE-KMS without a key id"]
    kms = aws(url, "kms")
    expected = kms.describe_key(KeyId=kms_key_id)["KeyMetadata"]
    # S3 reports the key's ARN. moto reports the key id the request named, here the alias: resolved through KMS.
    if object_key.startswith("alias/") or ":alias/" in object_key:
        if key_alias(object_key) != key_alias(kms_key_id):
            return [f"s3://{bucket}/{key} is encrypted with {object_key}, expected {kms_key_id}"]
        object_key = kms.describe_key(KeyId=object_key)["KeyMetadata"]["Arn"]
    if object_key not in (expected["Arn"], expected["KeyId"]):
        return [f"s3://{bucket}/{key} is encrypted with {object_key}, expected {expected['Arn']} ({kms_key_id})"]
    return []


def state_outputs(state: dict[str, Any]) -> dict[str, Any]:
    return {name: output["value"] for name, output in state.get("outputs", {}).items()}


# -- the tests ----------------------------------------------------------------------------------------
def test_the_bootstrap_state_moves_into_its_bucket_encrypted_with_the_state_key(tmp_path: Path,
                                                                                 moto_url: str) -> None:
    terraform = Terraform(tmp_path)
    project_state = sorted(LOCAL_STATE_FILE.parent.glob("*.tfstate*"))

    # 1. first apply, local state
    workdir, state_file, stack_dir = bootstrap_and_synthesize_remote(tmp_path, moto_url, terraform)
    local_state = json.loads(state_file.read_text())
    outputs = state_outputs(local_state)
    settings = s3_backend(stack_dir)
    assert settings["key"] == STATE_KEY
    assert settings["encrypt"] is True and settings["kms_key_id"] == "alias/stepfuncproject-terraform-state"
    assert outputs["StateBucket"] == settings["bucket"] and outputs["LockTable"] == settings["dynamodb_table"]
    key_arn = outputs["StateKeyArn"]
    assert aws(moto_url, "kms").describe_key(KeyId=settings["kms_key_id"])["KeyMetadata"]["Arn"] == key_arn
    s3, dynamodb = aws(moto_url, "s3"), aws(moto_url, "dynamodb")
    (rule,) = s3.get_bucket_encryption(Bucket=settings["bucket"])["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn}
    table = dynamodb.describe_table(TableName=settings["dynamodb_table"])["Table"]
    assert table["DeletionProtectionEnabled"] is True
    assert table["SSEDescription"]["SSEType"] == "KMS" and table["SSEDescription"]["KMSMasterKeyArn"] == key_arn
    backups = dynamodb.describe_continuous_backups(TableName=settings["dynamodb_table"])["ContinuousBackupsDescription"]
    assert backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"

    # 2. the state moves into the bucket, under its own key, encrypted with the state key
    migrate(workdir, stack_dir, moto_url, terraform, settings)
    remote_state = json.loads(s3.get_object(Bucket=settings["bucket"], Key=settings["key"])["Body"].read())
    # The same resources and outputs (Terraform 1.11 writes the copy as a new state: serial 1, new lineage).
    assert remote_state["resources"] == local_state["resources"] and remote_state["outputs"] == local_state["outputs"]
    assert state_object_problems(moto_url, settings["bucket"], settings["key"], settings["kms_key_id"]) == []
    head = s3.head_object(Bucket=settings["bucket"], Key=settings["key"])
    assert head["SSEKMSKeyId"] in (key_arn, settings["kms_key_id"])  # S3: the ARN; moto: the alias Terraform sent
    # The lock table is in use: the S3 backend keeps the state's digest there.
    digest = dynamodb.get_item(TableName=settings["dynamodb_table"],
                               Key={"LockID": {"S": f"{settings['bucket']}/{settings['key']}-md5"}})
    assert "Item" in digest, "no state digest in the lock table"
    state_file.unlink()  # the walkthrough deletes the local file once the state is in the bucket
    listed = terraform(workdir, "state", "list").stdout.split()
    assert "aws_s3_bucket.state_bucket" in listed and "aws_kms_key.state_key" in listed

    # 3. a new machine finds the state in the bucket: nothing to change
    folder = new_machine(tmp_path, stack_dir, moto_url, settings)
    terraform(folder, "init", "-input=false")
    plan = terraform(folder, "plan", "-detailed-exitcode", "-input=false", ok_codes=(0, 2))
    assert plan.returncode == 0, f"the new machine's plan has changes:\n{plan.stdout}"
    assert not list(folder.glob("*.tfstate"))  # read from the bucket, not from a local file
    # No lock left behind (use_lockfile: a `<key>.tflock` object while an operation runs).
    listed_objects = s3.list_objects_v2(Bucket=settings["bucket"]).get("Contents", [])
    assert [obj["Key"] for obj in listed_objects] == [settings["key"]]

    # The project's state/ folder was left alone (the walkthrough's real local state lives there).
    assert sorted(LOCAL_STATE_FILE.parent.glob("*.tfstate*")) == project_state


# What the negative test applies: the state key and its alias, the bucket with its KMS default encryption and
# versioning, and the lock table. Not the lifecycle rules (the provider waits ~1 min for them to settle), the
# policy, public access block or ownership controls: they do not take part in how a state object is encrypted.
ENCRYPTION_TARGETS = ("aws_kms_alias.state_key_alias",
                      "aws_s3_bucket_server_side_encryption_configuration.state_bucket_encryption",
                      "aws_s3_bucket_versioning.state_bucket_versioning", "aws_dynamodb_table.lock_table")


def test_without_kms_key_id_the_state_object_is_aes256_and_the_check_fails(tmp_path: Path, moto_url: str) -> None:
    """The check above can fail: without backend.tf.json's kms_key_id Terraform asks S3 for AES256 on every write
    (its `encrypt: true`), overriding the bucket's KMS default."""
    backend_file = tmp_path / "backend-without-kms.tf.json"
    document = json.loads((ROOT / "backend.tf.json").read_text())
    del document["terraform"]["backend"]["s3"]["kms_key_id"]
    write_json(backend_file, document)
    # The app refuses such a backend file (modules/settings.py requires kms_key_id; the bootstrap stack's key
    # alias comes from it), so the backend Terraform gets here is the synthesized one without kms_key_id: what
    # the app synthesized before kms_key_id was added.
    refused = run_main("--backend", str(backend_file), "--outdir", str(tmp_path / "refused-out"))
    assert refused.returncode == 2 and "kms_key_id" in refused.stderr, refused.stdout + refused.stderr
    assert not (tmp_path / "refused-out").exists()

    terraform = Terraform(tmp_path)
    workdir, _state_file, stack_dir = bootstrap_and_synthesize_remote(tmp_path, moto_url, terraform,
                                                                      ENCRYPTION_TARGETS)
    settings = s3_backend(stack_dir)
    kms_key_id = settings.pop("kms_key_id")
    s3 = aws(moto_url, "s3")
    (rule,) = s3.get_bucket_encryption(Bucket=settings["bucket"])["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"  # the default it overrides
    migrate(workdir, stack_dir, moto_url, terraform, settings)

    head = s3.head_object(Bucket=settings["bucket"], Key=settings["key"])
    assert head["ServerSideEncryption"] == "AES256" and "SSEKMSKeyId" not in head
    problems = state_object_problems(moto_url, settings["bucket"], settings["key"], kms_key_id)
    assert problems and "'AES256'" in problems[0], problems
