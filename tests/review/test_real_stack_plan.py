"""review.plan_summary on the plan of the real dev stack: made by real Terraform and the real AWS provider
during the deploy rehearsal (`make rehearse` keeps it), so every resource type the product deploys is
summarized here, not only the small configurations of tests/review/configs."""

from __future__ import annotations

import json
from pathlib import Path

from review import plan_summary as ps
from tests.support.synth import ROOT

REAL_PLAN = ROOT / "tests" / "rehearsal" / "stepfuncproject-dev.plan.json"


def summary() -> str:
    return ps.render_markdown(ps.load_plan(REAL_PLAN), "Terraform plan: `stepfuncproject-dev`",
                              full_plan_hint="`review-plans/stepfuncproject-dev/plan.txt`")


def test_golden(golden) -> None:
    golden("real_stack_dev.md", summary())


def test_every_security_sensitive_resource_of_the_stack_is_called_out() -> None:
    plan = json.loads(REAL_PLAN.read_text())
    created = {change["address"] for change in plan["resource_changes"] if change["change"]["actions"] == ["create"]}
    md = summary()
    assert f"**Plan:** {len(created)} to create, 0 to update, 0 to replace, 0 to delete." in md
    security = md.split("### Security-sensitive changes", 1)[1].split("\n#### ", 1)[0]
    sensitive_types = ("aws_iam_role.", "aws_iam_role_policy.", "aws_iam_role_policy_attachment.", "aws_kms_key.",
                       "aws_kms_alias.", "aws_secretsmanager_secret.", "aws_security_group.",
                       "aws_vpc_security_group_egress_rule.", "aws_vpc_security_group_ingress_rule.",
                       "aws_db_instance.", "aws_db_parameter_group.", "aws_db_subnet_group.",
                       "aws_apigatewayv2_route.", "aws_lambda_permission.", "aws_sns_topic_policy.",
                       "aws_sqs_queue_policy.")
    expected = sorted(a for a in created if a.startswith(sensitive_types))
    listed = sorted(line.split("`")[1] for line in security.splitlines() if line.startswith("| create |"))
    assert listed == expected and len(expected) >= 20
    assert '+ authorization_type = "AWS_IAM"' in md


def test_fits_one_comment_and_names_no_local_paths() -> None:
    md = summary()
    assert len(md) <= ps.DEFAULT_MAX_CHARS
    assert "/tmp/" not in md and str(Path.home()) not in md and "127.0.0.1" not in md
