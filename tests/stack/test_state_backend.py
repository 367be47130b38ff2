"""The bootstrap stack that creates the state bucket and lock table the main stacks' backend points at."""

from __future__ import annotations

import json
from typing import Any

from modules.settings import load_backend
from tests.support.synth import only

Stack = dict[str, Any]


def test_names_come_from_the_backend_file(stacks: dict[str, Stack]) -> None:
    backend = load_backend()
    state = stacks["state"]
    assert only(state["resource"], "aws_s3_bucket")["bucket"] == backend["bucket"]
    assert only(state["resource"], "aws_dynamodb_table")["name"] == backend["dynamodb_table"]
    assert state["provider"]["aws"][0]["region"] == backend["region"]


def test_bootstrap_keeps_its_own_state_locally_outside_cdktf_out(stacks: dict[str, Stack]) -> None:
    assert stacks["state"]["terraform"]["backend"] == {
        "local": {"path": "../../../state/stepfuncproject-state.tfstate"}}


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
