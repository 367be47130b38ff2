"""The bootstrap stack that creates the state bucket and lock table the main stacks' backend points at."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from modules.settings import load_backend
from tests.support.synth import only

Stack = dict[str, Any]
ROOT = Path(__file__).resolve().parents[2]


def test_names_come_from_the_backend_file(stacks: dict[str, Stack]) -> None:
    backend = load_backend()
    state = stacks["state"]
    assert only(state["resource"], "aws_s3_bucket")["bucket"] == backend["bucket"]
    assert only(state["resource"], "aws_dynamodb_table")["name"] == backend["dynamodb_table"]
    assert state["provider"]["aws"][0]["region"] == backend["region"]


def test_bootstrap_keeps_its_state_in_its_own_bucket_under_its_own_key(stacks: dict[str, Stack]) -> None:
    backend = load_backend()
    assert stacks["state"]["terraform"]["backend"] == {
        "s3": {**backend, "key": f"state-backend/{backend['key']}"}}


def test_state_objects_are_encrypted_with_the_key_the_bootstrap_creates(stacks: dict[str, Stack]) -> None:
    """backend.tf.json names the key's alias: without kms_key_id Terraform writes state as SSE-S3 (AES256)."""
    backend = load_backend()
    assert backend["encrypt"] is True and backend["kms_key_id"] == "alias/stepfuncproject-terraform-state"
    alias = only(stacks["state"]["resource"], "aws_kms_alias")
    assert alias["name"] == backend["kms_key_id"]
    for env in ("dev", "prod"):
        assert stacks[env]["terraform"]["backend"]["s3"]["kms_key_id"] == backend["kms_key_id"]


@pytest.mark.parametrize("outdir", ["cdktf.out", "elsewhere/deeper/out"])
def test_the_first_apply_keeps_state_in_state_dir_whatever_the_outdir(tmp_path: Path, outdir: str) -> None:
    """`--bootstrap-state`: a local state file at <project>/state/, found from any --outdir."""
    from modules.state_backend import LOCAL_STATE_FILE

    out = tmp_path / outdir
    code = subprocess.run([sys.executable, "main.py", "--environment", "dev", "--bootstrap-state", "--outdir",
                           str(out)], cwd=ROOT, capture_output=True, text=True).returncode
    assert code == 0
    folder = out / "stacks" / "stepfuncproject-state"
    config = json.loads((folder / "cdk.tf.json").read_text())
    (path,) = (config["terraform"]["backend"]["local"]["path"],)
    assert (folder / path).resolve() == LOCAL_STATE_FILE
    assert (ROOT / ".gitignore").read_text().count("state/*.tfstate*") == 1  # migrated, never committed


def test_bucket_is_versioned_encrypted_private_and_tls_only(stacks: dict[str, Stack]) -> None:
    resources = stacks["state"]["resource"]
    assert only(resources, "aws_s3_bucket")["lifecycle"] == {"prevent_destroy": True}
    assert only(resources, "aws_s3_bucket_versioning")["versioning_configuration"] == {"status": "Enabled"}
    (rule,) = only(resources, "aws_s3_bucket_server_side_encryption_configuration")["rule"]
    assert rule["apply_server_side_encryption_by_default"]["sse_algorithm"] == "aws:kms"
    assert rule["apply_server_side_encryption_by_default"]["kms_master_key_id"].startswith("${aws_kms_key.")
    block = only(resources, "aws_s3_bucket_public_access_block")
    assert all(block[flag] is True for flag in
               ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"))
    (deny,) = json.loads(only(resources, "aws_s3_bucket_policy")["policy"])["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert only(resources, "aws_s3_bucket_ownership_controls")["rule"]["object_ownership"] == "BucketOwnerEnforced"


def test_noncurrent_state_versions_expire(stacks: dict[str, Stack]) -> None:
    (rule,) = only(stacks["state"]["resource"], "aws_s3_bucket_lifecycle_configuration")["rule"]
    assert rule["status"] == "Enabled"
    assert rule["noncurrent_version_expiration"] == [{"noncurrent_days": 90}]


def test_lock_table(stacks: dict[str, Stack]) -> None:
    table = only(stacks["state"]["resource"], "aws_dynamodb_table")
    assert table["hash_key"] == "LockID" and table["attribute"] == [{"name": "LockID", "type": "S"}]
    assert table["billing_mode"] == "PAY_PER_REQUEST"
    assert table["point_in_time_recovery"] == {"enabled": True}
    assert table["server_side_encryption"]["enabled"] is True
    assert table["deletion_protection_enabled"] is True


def test_destroy_guards_lift_only_with_the_retirement_flag(stacks: dict[str, Stack], tmp_path) -> None:
    """`main.py --allow-state-destroy` changes exactly the three guards, nothing else."""
    from tests.support.synth import BOOTSTRAP_STACK, load_stack, synthesize, without_metadata

    retiring = without_metadata(load_stack(synthesize(tmp_path / "out", "--allow-state-destroy", "-e", "dev"),
                                           BOOTSTRAP_STACK))
    bucket = only(retiring["resource"], "aws_s3_bucket")
    assert bucket.pop("force_destroy") is True
    assert bucket.pop("lifecycle") == {"prevent_destroy": False}
    assert only(retiring["resource"], "aws_dynamodb_table").pop("deletion_protection_enabled") is False
    guarded = json.loads(json.dumps(stacks["state"]))
    assert "force_destroy" not in only(guarded["resource"], "aws_s3_bucket")
    del only(guarded["resource"], "aws_s3_bucket")["lifecycle"]
    del only(guarded["resource"], "aws_dynamodb_table")["deletion_protection_enabled"]
    assert retiring == guarded
