"""IAM policy documents as JSON strings: written per role in code, so every grant is reviewable."""

from __future__ import annotations

import json
from typing import Any

Statement = dict[str, Any]


def statement(sid: str, actions: list[str], resources: list[str], condition: dict[str, Any] | None = None) -> Statement:
    entry: Statement = {"Sid": sid, "Effect": "Allow", "Action": sorted(actions), "Resource": resources}
    if condition:
        entry["Condition"] = condition
    return entry


def policy_document(*statements: Statement) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)}, indent=None)


def assume_role_policy(service: str, source_account: str | None = None) -> str:
    """Trust policy for one AWS service; with source_account, only on behalf of this account."""
    trust: Statement = {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
    if source_account:
        trust["Condition"] = {"StringEquals": {"aws:SourceAccount": source_account}}
    return json.dumps({"Version": "2012-10-17", "Statement": [trust]})
