"""review.plan_summary on plans from real `terraform plan` runs, plus hand-made edge cases."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from review import plan_summary as ps
from tests.review import plans

ROOT = Path(__file__).resolve().parents[2]
HINT = "`review-plans/example/plan.txt`"
SECRETS = ("hunter2", "tok-OLD", "tok-NEW", "s3cr3t-do-not-print")


def summarize(path: Path, name: str, **kw) -> str:
    return ps.render_markdown(ps.load_plan(path), f"Terraform plan: `{name}`", full_plan_hint=HINT, **kw)


def section(md: str, heading: str) -> str:
    """Text of the ``### heading...`` section (up to the next ### heading)."""
    m = re.search(rf"^### {re.escape(heading)}.*?(?=^### |\Z)", md, re.S | re.M)
    assert m, f"no section {heading!r} in:\n{md}"
    return m.group(0)


pytestmark = pytest.mark.slow


@pytest.mark.parametrize("scenario", sorted(plans.ALL_SCENARIOS))
def test_golden(plan_files, golden, scenario):
    golden(f"{scenario}.md", summarize(plan_files[scenario], scenario))


@pytest.mark.parametrize("scenario", sorted(plans.ALL_SCENARIOS))
def test_deterministic_and_fits_comment(plan_files, scenario):
    first = summarize(plan_files[scenario], scenario)
    assert first == summarize(plan_files[scenario], scenario)
    assert len(first) <= ps.DEFAULT_MAX_CHARS < ps.GITHUB_COMMENT_LIMIT
    assert "/tmp/" not in first and str(ROOT) not in first


def test_no_changes(plan_files):
    md = summarize(plan_files["no_changes"], "no_changes")
    assert "**No changes.**" in md
    assert ps.count_actions(ps.load_plan(plan_files["no_changes"]))["no-op"] == 1
    assert "CAUTION" not in md


def test_create_only(plan_files):
    md = summarize(plan_files["create_only"], "create_only")
    assert "**Plan:** 4 to create, 0 to update, 0 to replace, 0 to delete." in md
    assert "- `terraform_data.worker[1]`" in section(md, "Creates (4)")
    assert "`(known after apply)`" in section(md, "Output changes")


def test_update_in_place_and_moved(plan_files):
    md = summarize(plan_files["update_in_place"], "update_in_place")
    updates = section(md, "Updates in place (1)")
    assert "~ input.memory_mb = 128 -> 256" in updates
    assert '+ input.tags.owner = "ops"' in updates
    assert "(moved from `terraform_data.old_name`)" in section(md, "Moved or imported")


def test_delete_reasons(plan_files):
    md = summarize(plan_files["delete"], "delete")
    deletions = section(md, "Deletions and replacements (3)")
    assert "delete `terraform_data.legacy_queue`" in deletions
    assert "`delete_because_no_resource_config`" in deletions
    assert "`delete_because_count_index`" in deletions
    # Deletions come before everything else.
    assert md.index("Deletions and replacements") < md.index("Output changes")


def test_replace_paths_and_reasons(plan_files):
    md = summarize(plan_files["replace"], "replace")
    deletions = section(md, "Deletions and replacements (3)")
    assert "- Forces replacement: `triggers_replace`" in deletions
    assert '~ triggers_replace.engine_version = "15.4" -> "16.3"   # forces replacement' in deletions
    for reason in ("replace_because_cannot_update", "replace_by_request", "replace_by_triggers"):
        assert f"`{reason}`" in deletions


def test_iam_and_security_groups(plan_files):
    md = summarize(plan_files["iam_security_group"], "iam_security_group")
    sec = section(md, "Security-sensitive changes (8)")
    for row in ("| update | `aws_iam_role_policy.worker` | IAM |",
                "| delete | `aws_iam_policy.logs` | IAM |",
                "| replace | `aws_security_group.app` | Security group |",
                "| replace | `aws_security_group_rule.https_in` | Security group rule |",
                "| update | `aws_apigatewayv2_route.trigger` | API authorization |",
                "| create | `aws_apigatewayv2_authorizer.jwt` | API authorization |"):
        assert row in sec
    assert '+           "s3:PutObject"' in sec  # the policy document is diffed line by line
    assert '~ authorization_type = "NONE" -> "JWT"' in sec
    deletions = section(md, "Deletions and replacements")
    assert '~ cidr_blocks = ["10.10.0.0/16"] -> ["0.0.0.0/0"]   # forces replacement' in deletions
    assert "- Forces replacement: `name`" in deletions
    drift = section(md, "Changed outside Terraform (drift)")
    assert '~ description = "Lambda worker" -> "Lambda worker (edited in console)"' in drift


def test_security_creates_and_reads(plan_files):
    md = summarize(plan_files["security_create"], "security_create")
    sec = section(md, "Security-sensitive changes (10)")
    for kind in ("IAM", "KMS", "Secret", "Security group", "Database", "API authorization"):
        assert f"| {kind} |" in sec
    assert '+ ingress[0].cidr_blocks = ["0.0.0.0/0"]' in sec
    assert "+ password = (sensitive)" in sec
    assert "+ secret_string = (sensitive)" in sec
    assert "`read_because_config_unknown`" in section(md, "Data sources read during apply (1)")
    counts = ps.count_actions(ps.load_plan(plan_files["security_create"]))
    assert counts["read"] == 1 and counts["create"] == 12


@pytest.mark.parametrize("scenario", ["sensitive", "security_create"])
def test_sensitive_values_never_printed(plan_files, scenario):
    raw = plan_files[scenario].read_text()
    assert any(s in raw for s in SECRETS), "the plan JSON itself holds the secrets"
    md = summarize(plan_files[scenario], scenario)
    for secret in SECRETS:
        assert secret not in md
    assert "(sensitive)" in md


def test_sensitive_outputs(plan_files):
    md = summarize(plan_files["sensitive"], "sensitive")
    outputs = section(md, "Output changes (3)")
    assert "| `db_password` | update | `(sensitive)` | `(sensitive)` |" in outputs
    assert "| `connection` | update | `(sensitive)` | `(sensitive)` |" in outputs
    # terraform_data.output copies the sensitive input without the mark: still masked.
    assert '~ output = {"password": "(sensitive)", "username": "app"}' in md


def test_too_large_is_truncated_with_pointer(plan_files):
    plan = ps.load_plan(plan_files["too_large"])
    full = ps.render_markdown(plan, "big", full_plan_hint=HINT, max_chars=10**9)
    assert len(full) > ps.GITHUB_COMMENT_LIMIT
    md = summarize(plan_files["too_large"], "too_large")
    assert len(md) <= ps.DEFAULT_MAX_CHARS
    assert "Summary truncated to fit a GitHub comment" in md
    assert f"The full plan is in {HINT}." in md
    assert "**Plan:** 0 to create, 400 to update" in md  # the counts always survive
    assert md.count("<details>") == md.count("</details>")
    assert md.count("```") % 2 == 0
    small = summarize(plan_files["too_large"], "too_large", max_chars=3000)
    assert len(small) <= 3000 and "Summary truncated" in small


def test_cli_writes_file(plan_files, tmp_path):
    out = tmp_path / "plan.md"
    proc = subprocess.run([sys.executable, "-m", "review.plan_summary", str(plan_files["delete"]),
                           "--out", str(out), "--title", "Terraform plan: `delete`", "--full-plan-hint", HINT],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == summarize(plan_files["delete"], "delete")


def test_cli_rejects_non_plan(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"hello": 1}))
    proc = subprocess.run([sys.executable, "-m", "review.plan_summary", str(bad)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "not a `terraform show -json` plan" in proc.stderr


# --------------------------------------------------------------------------- risky updates (issue 12)

ROLE = "arn:aws:iam::123456789012:role/"
KEY = "arn:aws:kms:us-east-1:123456789012:key/aws-kms-key-key-"
# address -> (category in the security table, a line of its attribute diff). All are updates in place of
# tests/review/configs/risky_updates (v1 applied into moto, v2 planned).
RISKY = {
    "aws_db_parameter_group.postgres": ("Database parameters", '~ parameter[name="rds.force_ssl"].value = "1" -> "0"'),
    "aws_db_subnet_group.main": (
        "Database network",
        '~ subnet_ids = ["aws-subnet-private-a-id", "aws-subnet-private-b-id"] -> '
        '["aws-subnet-private-a-id", "aws-subnet-private-c-id"]'),
    "aws_apigatewayv2_integration.start": (
        "API integration credentials",
        f'~ credentials_arn = "{ROLE}stepfunc-api-role-a" -> "{ROLE}stepfunc-api-role-b"'),
    "aws_lambda_function.worker": (
        "Function role", f'~ role = "{ROLE}stepfunc-fn-role-a" -> "{ROLE}stepfunc-fn-role-b"'),
    "aws_lambda_function.database_client": (
        "Function network (VPC)",
        '~ vpc_config[0].security_group_ids = ["aws-security-group-fn-a-id"] -> ["aws-security-group-fn-b-id"]'),
    "aws_sfn_state_machine.workflow": (
        "Workflow role", f'~ role_arn = "{ROLE}stepfunc-workflow-role-a" -> "{ROLE}stepfunc-workflow-role-b"'),
    "aws_s3_bucket_server_side_encryption_configuration.state": (
        "Encryption", '~ rule[0].apply_server_side_encryption_by_default[0].sse_algorithm = "aws:kms" -> "AES256"'),
    "aws_s3_bucket_versioning.state": (
        "State backend", '~ versioning_configuration[0].status = "Enabled" -> "Suspended"'),
    "aws_dynamodb_table.lock": (
        "State backend, Encryption", f'~ server_side_encryption[0].kms_key_arn = "{KEY}a-id" -> "{KEY}b-id"'),
    "aws_cloudwatch_log_group.workflow": ("Encryption", f'~ kms_key_id = "{KEY}a-id" -> "{KEY}b-id"'),
}
ROUTINE = {
    "aws_lambda_function.routine": ("~ memory_size = 128 -> 256", '+ tags.owner = "ops"'),
    "aws_cloudwatch_log_group.routine": ("~ retention_in_days = 7 -> 14",),
}


def block(md: str, heading: str) -> str:
    """The ``#### heading`` block (up to the next heading)."""
    m = re.search(rf"^#### {re.escape(heading)}\n.*?(?=^#{{2,4}} |\Z)", md, re.S | re.M)
    assert m, f"no block {heading!r} in:\n{md}"
    return m.group(0)


def test_risky_updates_plan_is_what_the_configs_say(plan_files):
    plan = ps.load_plan(plan_files["risky_updates"])
    updates = sorted(rc["address"] for rc in plan["resource_changes"] if rc["change"]["actions"] == ["update"])
    assert updates == sorted([*RISKY, *ROUTINE])
    assert ps.count_actions(plan) == {"create": 0, "update": 12, "replace": 0, "delete": 0, "read": 0, "no-op": 16}


@pytest.mark.parametrize("address", sorted(RISKY))
def test_risky_update_flagged_with_its_diff(plan_files, address):
    """Each security- or data-relevant update is listed, with its category and attribute diff, among the
    security-sensitive changes, not collapsed with the routine updates."""
    category, diff_line = RISKY[address]
    md = summarize(plan_files["risky_updates"], "risky_updates")
    sec = section(md, f"Security-sensitive changes ({len(RISKY)})")
    assert f"| update | `{address}` | {category} |" in sec
    detail = block(sec, f"update `{address}`")
    assert diff_line in detail
    assert address not in section(md, f"Updates in place ({len(ROUTINE)})")
    assert f"{len(RISKY)} security-sensitive change(s)" in md.split("###")[0]  # the caution at the top


def test_routine_updates_stay_collapsed(plan_files):
    """A function's memory and tags, a log group's retention: routine, in the collapsed updates only."""
    md = summarize(plan_files["risky_updates"], "risky_updates")
    updates = section(md, f"Updates in place ({len(ROUTINE)})")
    for address, lines in ROUTINE.items():
        assert f"<details><summary><code>{address}</code></summary>" in updates
        for line in lines:
            assert line in updates
        assert f"`{address}`" not in section(md, "Security-sensitive changes")


def test_attribute_scoped_flags_name_the_attribute(plan_files):
    md = summarize(plan_files["risky_updates"], "risky_updates")
    sec = section(md, "Security-sensitive changes")
    for address, attr in (("aws_lambda_function.worker", "role"), ("aws_lambda_function.database_client", "vpc_config"),
                          ("aws_sfn_state_machine.workflow", "role_arn"),
                          ("aws_apigatewayv2_integration.start", "credentials_arn"),
                          ("aws_cloudwatch_log_group.workflow", "kms_key_id"),
                          ("aws_dynamodb_table.lock", "server_side_encryption")):
        assert f"- Security-relevant attributes changed: `{attr}`" in block(sec, f"update `{address}`")
