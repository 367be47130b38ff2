"""Summarize a Terraform plan (``terraform show -json`` output) as Markdown for review.

Usage::

    python -m review.plan_summary PLAN_JSON [--out plan.md] [--title TITLE]
                                  [--full-plan-hint PATH] [--max-chars N]

The summary lists, in this order: counts by action, deletions and replacements
(with the attributes forcing replacement and Terraform's reason),
security-sensitive changes, output changes, drift (changes made outside
Terraform), updates in place, creates and data sources read during apply.

Security-sensitive changes (``SENSITIVE_TYPES``, ``SENSITIVE_PREFIXES``,
``SENSITIVE_ATTRIBUTES``) are everything that changes access, network paths,
encryption, secrets, the database, the API's authorization or the Terraform
state backend: whole resource types always, and other types when an update
touches one of the listed attributes (a function's role or VPC configuration,
not its code). Each is shown with a category and its attribute diff, never only
in the collapsed updates.

Sensitive values are never printed: anything marked in ``before_sensitive`` /
``after_sensitive`` (or a sensitive output) is shown as ``(sensitive)``. Unknown
values are shown as ``(known after apply)``. The output is deterministic and is
cut at a block boundary to fit ``--max-chars`` (a GitHub comment holds 65,536
characters), with a note saying where the full plan is.
"""

from __future__ import annotations

import argparse
import contextvars
import difflib
import html
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

GITHUB_COMMENT_LIMIT = 65536
DEFAULT_MAX_CHARS = 65000  # a little head room below GitHub's limit

ACTIONS = ("create", "update", "replace", "delete", "read", "no-op")
EXTRA_ACTIONS = ("forget",)  # shown in the counts only when present

MAX_VALUE_CHARS = 200  # one rendered value
MAX_DIFF_LINES = 120  # lines of attribute diff shown per resource
MAX_JSON_DIFF_LINES = 80  # lines of one embedded JSON document diff


class _Marker:
    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return self.text


SENSITIVE = _Marker("(sensitive)")
UNKNOWN = _Marker("(known after apply)")

REASONS = {
    "replace_because_tainted": "the existing object is tainted",
    "replace_because_cannot_update": "a changed attribute cannot be updated in place",
    "replace_by_request": "replacement was requested (`-replace`)",
    "replace_by_triggers": "a `replace_triggered_by` reference changed",
    "delete_because_no_resource_config": "the resource was removed from the configuration",
    "delete_because_no_module": "its module was removed from the configuration",
    "delete_because_wrong_repetition": "`count`/`for_each` was added or removed",
    "delete_because_count_index": "its `count` index is out of range now",
    "delete_because_each_key": "its `for_each` key is gone",
    "delete_because_no_move_target": "a `moved` block points to a missing target",
    "read_because_config_unknown": "its configuration depends on values known only after apply",
    "read_because_dependency_pending": "it depends on a resource with pending changes",
    "read_because_check_nested": "it is used by a `check` block",
}

# Security- and data-relevant changes are listed above the routine ones, each with its attribute diff and
# a category. Three tables decide (tests/review/configs/risky_updates has a real plan of each kind).
#
# Whole types: every change of these is flagged (exact types first, then prefixes). What they hold is
# access (IAM, policies, security groups), keys, secrets, the database and the Terraform state backend
# (the app's only S3 buckets and DynamoDB tables are the state bucket and lock table).
SENSITIVE_TYPES: dict[str, str] = {
    "aws_security_group": "Security group",
    "aws_default_security_group": "Security group",
    "aws_security_group_rule": "Security group rule",
    "aws_vpc_security_group_ingress_rule": "Security group rule",
    "aws_vpc_security_group_egress_rule": "Security group rule",
    "aws_ssm_parameter": "Secret",
    "aws_db_instance": "Database",
    "aws_rds_cluster": "Database",
    "aws_db_parameter_group": "Database parameters",  # e.g. rds.force_ssl
    "aws_rds_cluster_parameter_group": "Database parameters",
    "aws_db_subnet_group": "Database network",
    "aws_apigatewayv2_authorizer": "API authorization",
    "aws_lambda_function_url": "API authorization",  # authorization_type NONE is a public endpoint
    "aws_lambda_permission": "Resource policy",
    "aws_s3_bucket_policy": "Resource policy",
    "aws_s3_bucket_public_access_block": "Resource policy",
    "aws_sqs_queue_policy": "Resource policy",
    "aws_sns_topic_policy": "Resource policy",
    "aws_s3_bucket_server_side_encryption_configuration": "Encryption",
    "aws_s3_bucket": "State backend",
    "aws_dynamodb_table": "State backend",
}
SENSITIVE_PREFIXES: tuple[tuple[str, str], ...] = (
    ("aws_iam_", "IAM"),  # roles, trust policies, inline policies, attachments, ...
    ("aws_kms_", "KMS"),
    ("aws_secretsmanager_", "Secret"),
    ("aws_s3_bucket_", "State backend"),  # the state bucket's versioning, lifecycle, ownership controls, ...
)
# Attributes: an update or replacement touching one of these (top-level) attributes is flagged with its
# category; other updates of the type stay routine (a function's new code, a log group's retention). On a
# whole type they add the category (a lock table's encryption: "State backend, Encryption").
_ROUTE_AUTH_ATTRS = ("authorization_type", "authorizer_id", "authorization_scopes", "api_key_required")
SENSITIVE_ATTRIBUTES: dict[str, dict[str, str]] = {
    "aws_lambda_function": {"role": "Function role", "vpc_config": "Function network (VPC)",
                            "kms_key_arn": "Encryption"},  # kms_key_arn encrypts the environment variables
    "aws_sfn_state_machine": {"role_arn": "Workflow role", "encryption_configuration": "Encryption"},
    "aws_apigatewayv2_integration": {"credentials_arn": "API integration credentials"},
    "aws_apigatewayv2_route": {attr: "API authorization" for attr in _ROUTE_AUTH_ATTRS},
    "aws_cloudwatch_log_group": {"kms_key_id": "Encryption"},
    "aws_sqs_queue": {"kms_master_key_id": "Encryption", "sqs_managed_sse_enabled": "Encryption"},
    "aws_sns_topic": {"kms_master_key_id": "Encryption"},
    # what the schedule starts, with which role; its payload's key
    "aws_scheduler_schedule": {"target": "Schedule target and role", "kms_key_arn": "Encryption"},
    "aws_db_instance": {attr: "Encryption" for attr in (
        "storage_encrypted", "kms_key_id", "performance_insights_kms_key_id", "master_user_secret_kms_key_id")},
    "aws_rds_cluster": {"storage_encrypted": "Encryption", "kms_key_id": "Encryption"},
    "aws_secretsmanager_secret": {"kms_key_id": "Encryption"},
    "aws_dynamodb_table": {"server_side_encryption": "Encryption"},
    "aws_s3_bucket": {"server_side_encryption_configuration": "Encryption"},
}
# Attribute-scoped types whose creation or removal is itself flagged: a new route is a new way in.
SENSITIVE_WHEN_ADDED_OR_REMOVED: dict[str, str] = {"aws_apigatewayv2_route": "API authorization"}


# --------------------------------------------------------------------------- helpers


def classify(actions: Iterable[str]) -> str:
    acts = list(actions or [])
    if "delete" in acts and "create" in acts:
        return "replace"
    if len(acts) == 1 and acts[0] in ACTIONS + EXTRA_ACTIONS:
        return acts[0]
    if "delete" in acts:  # e.g. ["delete", "forget"]: treat as delete
        return "delete"
    return "+".join(acts) or "no-op"


def _natural_key(text: str) -> list:
    return [(0, int(tok), "") if tok.isdigit() else (1, 0, tok) for tok in re.split(r"(\d+)", text)]


def _sub(mask: Any, key: Any) -> Any:
    """Descend into a sensitivity/unknown mask (True covers everything below)."""
    if mask is True:
        return True
    if isinstance(mask, dict) and isinstance(key, str):
        return mask.get(key)
    if isinstance(mask, list) and isinstance(key, int) and key < len(mask):
        return mask[key]
    return None


def _has_true(mask: Any) -> bool:
    if mask is True:
        return True
    if isinstance(mask, dict):
        return any(_has_true(v) for v in mask.values())
    if isinstance(mask, list):
        return any(_has_true(v) for v in mask)
    return False


def redact(value: Any, sensitive: Any = None, unknown: Any = None) -> Any:
    """Copy ``value`` with sensitive parts replaced by SENSITIVE and unknown parts by UNKNOWN."""
    if sensitive is True:
        return SENSITIVE
    if unknown is True:
        return UNKNOWN
    if isinstance(value, dict) or isinstance(unknown, dict):
        src = value if isinstance(value, dict) else {}
        keys = set(src)
        if isinstance(unknown, dict):
            keys |= {k for k, v in unknown.items() if _has_true(v)}
        return {k: redact(src.get(k), _sub(sensitive, k), _sub(unknown, k)) for k in sorted(keys)}
    if isinstance(value, list):
        return [redact(v, _sub(sensitive, i), _sub(unknown, i)) for i, v in enumerate(value)]
    return value


def _json_default(obj: Any) -> Any:
    if isinstance(obj, _Marker):
        return obj.text
    raise TypeError(type(obj))


# Values marked sensitive anywhere in the plan. Some objects lose their marks
# (``terraform_data.output`` copies a sensitive ``input`` unmarked), so every
# rendered string is also checked against these known secrets.
_SECRETS: contextvars.ContextVar[tuple[frozenset[str], tuple[str, ...]]] = contextvars.ContextVar(
    "review_plan_secrets", default=(frozenset(), ()))
MIN_SECRET_LEN = 4  # shorter sensitive values are not searched for
MIN_SECRET_SUBSTRING_LEN = 8  # values at least this long are also masked inside longer strings


def collect_secrets(plan: dict) -> set[str]:
    """Every string (and long number) that Terraform marks sensitive somewhere in the plan."""
    found: set[str] = set()

    def leaves(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                leaves(v)
        elif isinstance(value, list):
            for v in value:
                leaves(v)
        elif isinstance(value, str):
            found.add(value)
            doc = _json_doc(value)
            if doc is not None:
                leaves(doc)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            found.add(str(value))

    def add(value: Any, mask: Any) -> None:
        if mask is True:
            leaves(value)
        elif isinstance(mask, dict) and isinstance(value, dict):
            for k, m in mask.items():
                add(value.get(k), m)
        elif isinstance(mask, list) and isinstance(value, list):
            for v, m in zip(value, mask):
                add(v, m)

    def change(ch: dict) -> None:
        add(ch.get("before"), ch.get("before_sensitive"))
        add(ch.get("after"), ch.get("after_sensitive"))

    for rc in (plan.get("resource_changes") or []) + (plan.get("resource_drift") or []):
        change(rc.get("change") or {})
    for ch in (plan.get("output_changes") or {}).values():
        change(ch or {})

    def module(mod: dict) -> None:
        for res in mod.get("resources") or []:
            add(res.get("values"), res.get("sensitive_values"))
        for child in mod.get("child_modules") or []:
            module(child)

    for key in ("prior_state", "planned_values"):
        values = plan.get(key) or {}
        values = values.get("values", values)
        module(values.get("root_module") or {})
        for out in (values.get("outputs") or {}).values():
            if out.get("sensitive"):
                leaves(out.get("value"))
    config_vars = ((plan.get("configuration") or {}).get("root_module") or {}).get("variables") or {}
    for name, var in config_vars.items():
        if var.get("sensitive"):
            leaves(((plan.get("variables") or {}).get(name) or {}).get("value"))
    return {s for s in found if len(s) >= MIN_SECRET_LEN}


def _mask_secrets(value: Any) -> Any:
    exact, long_ones = _SECRETS.get()
    if not exact:
        return value
    if isinstance(value, dict):
        return {(k if not _leaks(k, exact, long_ones) else SENSITIVE.text): _mask_secrets(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_secrets(v) for v in value]
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        if _leaks(str(value), exact, long_ones):
            return SENSITIVE
    return value


def _leaks(text: str, exact: frozenset[str], long_ones: tuple[str, ...]) -> bool:
    return text in exact or any(sec in text for sec in long_ones)


def fmt_value(value: Any, limit: int = MAX_VALUE_CHARS) -> str:
    """One-line rendering of an already redacted value (known secrets masked too)."""
    value = _mask_secrets(value)
    if isinstance(value, _Marker):
        text = value.text
    else:
        text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=_json_default)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


class _Named(str):
    """A path step to the element of a list of blocks that has this ``name`` (shown ``[name="…"]``)."""


def _by_name(items: list) -> dict[str, int] | None:
    """name -> index when every element is a block with a distinct string ``name`` (parameter groups' parameters):
    such elements are compared by name, so a changed value shows which parameter it belongs to, whatever the
    set's order."""
    names = [i.get("name") if isinstance(i, dict) else None for i in items]
    if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        return None
    return {n: i for i, n in enumerate(names)}


def _without_name(block: dict | None) -> dict | None:
    return None if block is None else {k: v for k, v in block.items() if k != "name"}


def _fmt_path(path: list) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, _Named):
            out += f"[name={json.dumps(str(part), ensure_ascii=False)}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", part):
            out += ("." if out else "") + part
        else:
            out += f"[{json.dumps(part, ensure_ascii=False)}]"
    return out or "(value)"


def _json_doc(value: Any) -> Any:
    """The parsed JSON if ``value`` is a string holding a JSON object or array."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            doc = json.loads(value)
        except ValueError:
            return None
        return doc if isinstance(doc, (dict, list)) else None
    return None


def _pretty(doc: Any) -> list[str]:
    doc = _mask_secrets(doc)
    return json.dumps(doc, default=_json_default, indent=2, sort_keys=True, ensure_ascii=False).splitlines()


def _empty(value: Any) -> bool:
    """null, "", [] and {} are the same to a reviewer (providers normalize between them)."""
    return value is None or value == "" or value == [] or value == {}


def _is_scalar_list(value: Any) -> bool:
    return isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value)


@dataclass
class AttrChange:
    path: str
    before: Any  # redacted
    after: Any  # redacted
    doc_before: Any = None  # parsed JSON documents, for policy-like strings
    doc_after: Any = None


def diff_attrs(before: Any, after: Any, unknown: Any = None, before_sens: Any = None,
               after_sens: Any = None) -> list[AttrChange]:
    """Changed attributes between ``before`` and ``after``, sensitive values masked."""
    changes: list[AttrChange] = []

    def walk(path: list, b: Any, a: Any, unk: Any, bs: Any, as_: Any) -> None:
        if bs is True or as_ is True:
            if b != a or unk is True:
                changes.append(AttrChange(_fmt_path(path), SENSITIVE if b is not None else None,
                                          UNKNOWN if unk is True else (SENSITIVE if a is not None else None)))
            return
        if unk is True:
            changes.append(AttrChange(_fmt_path(path), redact(b, bs), UNKNOWN))
            return
        b_map, a_map = isinstance(b, dict), isinstance(a, dict)
        if (b_map or a_map or isinstance(unk, dict)) and not (b is not None and not b_map) \
                and not (a is not None and not a_map):
            bd, ad = b or {}, a or {}
            keys = set(bd) | set(ad)
            if isinstance(unk, dict):
                keys |= {k for k, v in unk.items() if _has_true(v)}
            for key in sorted(keys):
                walk(path + [key], bd.get(key), ad.get(key), _sub(unk, key), _sub(bs, key), _sub(as_, key))
            return
        b_list, a_list = isinstance(b, list), isinstance(a, list)
        if (b_list or a_list) and not (b is not None and not b_list) and not (a is not None and not a_list) \
                and not (_is_scalar_list(b or []) and _is_scalar_list(a or [])):
            bl, al = b or [], a or []
            b_names, a_names = _by_name(bl), _by_name(al)
            if b_names is not None and a_names is not None and (bl or al):
                for name in sorted(set(b_names) | set(a_names), key=_natural_key):
                    bi, ai = b_names.get(name), a_names.get(name)
                    be, ae = (bl[bi] if bi is not None else None), (al[ai] if ai is not None else None)
                    masks = (_sub(unk, ai) if ai is not None else None, _sub(bs, bi) if bi is not None else None,
                             _sub(as_, ai) if ai is not None else None)
                    start = len(changes)
                    # The path names the element: its ``name`` is not repeated as an attribute.
                    walk(path + [_Named(name)], _without_name(be), _without_name(ae), *masks)
                    if len(changes) == start and (be is None) != (ae is None):
                        changes.append(AttrChange(_fmt_path(path + [_Named(name)]), redact(be, masks[1]),
                                                  redact(ae, masks[2], masks[0])))
                return
            for i in range(max(len(bl), len(al))):
                walk(path + [i], bl[i] if i < len(bl) else None, al[i] if i < len(al) else None,
                     _sub(unk, i), _sub(bs, i), _sub(as_, i))
            return
        if (b == a or (_empty(b) and _empty(a))) and not _has_true(unk):
            return
        change = AttrChange(_fmt_path(path), redact(b, bs), redact(a, as_, unk))
        db, da = _json_doc(b), _json_doc(a)
        if (db is not None or b is None) and (da is not None or a is None) and (db is not None or da is not None):
            change.doc_before, change.doc_after = db, da
        changes.append(change)

    walk([], before, after, unknown, before_sens, after_sens)
    return changes


def _fence(lines: list[str], lang: str = "diff") -> str:
    body = "\n".join(lines)
    longest = max((len(m) for m in re.findall(r"`+", body)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{lang}\n{body}\n{ticks}"


def _code(text: str) -> str:
    """Inline code span that survives backticks and table pipes."""
    text = text.replace("|", "\\|")
    if "`" in text:
        return f"`` {text} ``"
    return f"`{text}`"


def _diff_lines(changes: list[AttrChange], forced: set[str] | None = None,
                group_unknown: bool = False) -> list[str]:
    """Terraform-like diff lines: ``~ path = before -> after``; JSON documents as line diffs.

    ``forced`` paths get a ``# forces replacement`` comment. With ``group_unknown``
    (replacements), attributes that merely become "known after apply" are listed
    on one line instead of one line each.
    """
    forced = forced or set()
    lines: list[str] = []
    later: list[str] = []
    for ch in changes:
        is_forced = _is_forced(ch.path, forced)
        if group_unknown and ch.after is UNKNOWN and not is_forced:
            later.append(ch.path)
            continue
        start = len(lines)
        if ch.doc_before is not None or ch.doc_after is not None:
            old = _pretty(ch.doc_before) if ch.doc_before is not None else []
            new = _pretty(ch.doc_after) if ch.doc_after is not None else []
            sign = "~" if old and new else ("+" if new else "-")
            lines.append(f"{sign} {ch.path} (JSON document):")
            body = [ln for ln in difflib.unified_diff(old, new, lineterm="", n=2)][2:]
            body = [ln for ln in body if not ln.startswith("@@")] if len(old) + len(new) < 40 else body
            if len(body) > MAX_JSON_DIFF_LINES:
                more = len(body) - MAX_JSON_DIFF_LINES
                body = body[:MAX_JSON_DIFF_LINES] + [f"  … {more} more lines (see the full plan)"]
            lines.extend(ln[:1] + "   " + ln[1:] if ln[:1] in "+- " else ln for ln in body)
        elif ch.before is None:
            lines.append(f"+ {ch.path} = {fmt_value(ch.after)}")
        elif ch.after is None:
            lines.append(f"- {ch.path} = {fmt_value(ch.before)}")
        else:
            lines.append(f"~ {ch.path} = {fmt_value(ch.before)} -> {fmt_value(ch.after)}")
        if is_forced:
            lines[start] += "   # forces replacement"
    if later:
        lines.append("# known after apply: " + ", ".join(later))
    if len(lines) > MAX_DIFF_LINES:
        more = len(lines) - MAX_DIFF_LINES
        lines = lines[:MAX_DIFF_LINES] + [f"# … {more} more lines (see the full plan)"]
    return lines


def _create_lines(after: Any, unknown: Any, sens: Any) -> list[str]:
    """Configured values of a new object (unknown top-level attributes summarized on one line)."""
    known = {k: v for k, v in (after or {}).items()
             if v not in (None, [], {}, "") and not (isinstance(unknown, dict) and unknown.get(k) is True)}
    changes = diff_attrs(None, known, unknown if isinstance(unknown, dict) else None, None, sens)
    changes = [c for c in changes if c.after is not UNKNOWN and not (isinstance(c.after, list) and not c.after)]
    lines = _diff_lines(changes)
    later = sorted(k for k, v in (unknown or {}).items() if v is True) if isinstance(unknown, dict) else []
    if later:
        lines.append("# known after apply: " + ", ".join(later))
    return lines


# --------------------------------------------------------------------------- model


@dataclass
class Entry:
    address: str
    kind: str  # create/update/replace/delete/read/no-op/forget
    rtype: str
    mode: str
    reason: str | None
    replace_paths: list[str]
    change: dict
    deposed: str | None = None
    previous_address: str | None = None
    importing: bool = False
    security: str | None = None  # the categories that flag it (SENSITIVE_*), None for a routine change
    security_attrs: list[str] = field(default_factory=list)  # the SENSITIVE_ATTRIBUTES it touches
    _attr_changes: list[AttrChange] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def label(self) -> str:
        text = _code(self.address)
        notes = []
        if self.deposed:
            notes.append(f"deposed object `{self.deposed}`")
        if self.previous_address and self.previous_address != self.address:
            notes.append(f"moved from {_code(self.previous_address)}")
        if self.importing:
            notes.append("imported")
        return text + (f" ({'; '.join(notes)})" if notes else "")

    def attr_changes(self) -> list[AttrChange]:
        """The attribute diff, computed once (classification and rendering both use it)."""
        if self._attr_changes is None:
            ch = self.change
            self._attr_changes = diff_attrs(ch.get("before"), ch.get("after"), ch.get("after_unknown"),
                                            ch.get("before_sensitive"), ch.get("after_sensitive"))
        return self._attr_changes


def _top_attribute(path: str) -> str:
    return re.split(r"[.\[]", path, maxsplit=1)[0]


def _touched_attributes(entry: Entry) -> set[str]:
    """Top-level attributes the change sets. In a replacement every computed attribute turns "known after
    apply"; only those that are known, or force the replacement, count there."""
    forced = set(entry.replace_paths)
    return {_top_attribute(c.path) for c in entry.attr_changes()
            if entry.kind != "replace" or c.after is not UNKNOWN or _is_forced(c.path, forced)}


def _security_category(entry: Entry) -> tuple[str | None, list[str]]:
    """The categories flagging a change (joined, None when routine) and the sensitive attributes it touches."""
    rtype, kind = entry.rtype, entry.kind
    categories = []
    whole = SENSITIVE_TYPES.get(rtype) or next((c for p, c in SENSITIVE_PREFIXES if rtype.startswith(p)), None)
    if whole:
        categories.append(whole)
    if kind in ("create", "delete", "replace") and rtype in SENSITIVE_WHEN_ADDED_OR_REMOVED:
        categories.append(SENSITIVE_WHEN_ADDED_OR_REMOVED[rtype])
    attrs: list[str] = []
    table = SENSITIVE_ATTRIBUTES.get(rtype)
    if table and kind in ("update", "replace"):
        touched = _touched_attributes(entry)
        attrs = [a for a in table if a in touched]
        categories += [table[a] for a in attrs]
    return (", ".join(dict.fromkeys(categories)) or None), attrs


def _entries(items: list[dict]) -> list[Entry]:
    out = []
    for rc in items or []:
        change = rc.get("change") or {}
        kind = classify(change.get("actions"))
        entry = Entry(
            address=rc.get("address", "?"),
            kind=kind,
            rtype=rc.get("type", ""),
            mode=rc.get("mode", "managed"),
            reason=rc.get("action_reason"),
            replace_paths=sorted({_fmt_path(p) if isinstance(p, list) else str(p)
                                  for p in change.get("replace_paths") or []}, key=_natural_key),
            change=change,
            deposed=rc.get("deposed"),
            previous_address=rc.get("previous_address"),
            importing=bool(change.get("importing")),
        )
        if entry.mode == "managed" and kind not in ("no-op", "read"):
            entry.security, entry.security_attrs = _security_category(entry)
        out.append(entry)
    out.sort(key=lambda e: (_natural_key(e.address), e.deposed or ""))
    return out


def _count(kinds: Iterable[str]) -> dict[str, int]:
    """Resources per action: every action in ACTIONS (0 when absent), then any other kind in order of
    appearance."""
    counts = {a: 0 for a in ACTIONS}
    for kind in kinds:
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def count_actions(plan: dict) -> dict[str, int]:
    return _count(classify((rc.get("change") or {}).get("actions")) for rc in plan.get("resource_changes") or [])


# --------------------------------------------------------------------------- rendering


@dataclass
class _Section:
    heading: str
    intro: list[str] = field(default_factory=list)  # blocks printed with the heading
    blocks: list[str] = field(default_factory=list)  # one per entry: the unit of truncation


def _reason_text(reason: str | None) -> str:
    if not reason:
        return ""
    text = REASONS.get(reason, reason.replace("_", " "))
    return f"{text} (`{reason}`)"


def _entry_detail(entry: Entry, h: str, show_security: bool = True) -> str:
    """A heading plus reason/diff for deletions, replacements and security changes."""
    parts = [f"{h} {entry.kind} {entry.label}"]
    facts = []
    attrs = ", ".join(_code(a) for a in entry.security_attrs)
    if entry.security and show_security:
        facts.append(f"- Security-sensitive: **{entry.security}**" + (f" (changes {attrs})" if attrs else ""))
    elif attrs:
        facts.append(f"- Security-relevant attributes changed: {attrs}")
    if entry.reason:
        facts.append(f"- Reason: {_reason_text(entry.reason)}")
    if entry.kind == "replace":
        if entry.replace_paths:
            facts.append("- Forces replacement: " + ", ".join(_code(p) for p in entry.replace_paths))
        elif entry.reason not in ("replace_by_request", "replace_because_tainted", "replace_by_triggers"):
            facts.append("- Forces replacement: (not reported by Terraform)")
    if facts:
        parts.append("\n".join(facts))
    lines: list[str] = []
    if entry.kind in ("update", "replace"):
        lines = _diff_lines(entry.attr_changes(), set(entry.replace_paths), group_unknown=entry.kind == "replace")
    elif entry.kind == "create":
        ch = entry.change
        lines = _create_lines(ch.get("after"), ch.get("after_unknown"), ch.get("after_sensitive"))
    if lines:
        parts.append(_fence(lines))
    return "\n\n".join(parts)


def _is_forced(path: str | None, forced: set[str]) -> bool:
    return path is not None and any(path == p or path.startswith((p + ".", p + "[")) for p in forced)


def _collapsible(entry: Entry, lines: list[str]) -> str:
    summary = f"<code>{html.escape(entry.address)}</code>"
    if entry.previous_address and entry.previous_address != entry.address:
        summary += f" (moved from <code>{html.escape(entry.previous_address)}</code>)"
    if not lines:
        return f"- {entry.label}"
    return f"<details><summary>{summary}</summary>\n\n{_fence(lines)}\n\n</details>"


def _output_rows(plan: dict) -> list[str]:
    rows = []
    for name in sorted(plan.get("output_changes") or {}, key=_natural_key):
        ch = plan["output_changes"][name] or {}
        kind = classify(ch.get("actions"))
        if kind == "no-op":
            continue
        before = "" if kind == "create" else fmt_value(redact(ch.get("before"), ch.get("before_sensitive")), 80)
        after = "" if kind == "delete" else fmt_value(
            redact(ch.get("after"), ch.get("after_sensitive"), ch.get("after_unknown")), 80)
        rows.append(f"| {_code(name)} | {kind} | {_code(before) if before else ''} | {_code(after) if after else ''} |")
    return rows


def render_markdown(plan: dict, title: str = "Terraform plan", *, full_plan_hint: str | None = None,
                    max_chars: int = DEFAULT_MAX_CHARS, heading_level: int = 2, counts_table: bool = True) -> str:
    """Render the plan summary; never longer than ``max_chars`` (a truncation note is added).

    ``counts_table=False`` leaves out the per-action table (for combined summaries that have one).
    """
    secrets = collect_secrets(plan)
    token = _SECRETS.set((frozenset(secrets), tuple(sorted(
        (s for s in secrets if len(s) >= MIN_SECRET_SUBSTRING_LEN), key=lambda s: (-len(s), s)))))
    try:
        return _render(plan, title, full_plan_hint, max_chars, heading_level, counts_table)
    finally:
        _SECRETS.reset(token)


def _render(plan: dict, title: str, full_plan_hint: str | None, max_chars: int, heading_level: int,
            counts_table: bool) -> str:
    h1 = "#" * heading_level
    h2 = "#" * (heading_level + 1)
    h3 = "#" * (heading_level + 2)
    entries = _entries(plan.get("resource_changes") or [])
    drift = [(e, _diff_lines(e.attr_changes()) if e.kind == "update" else [])
             for e in _entries(plan.get("resource_drift") or [])]
    # Entries whose only differences are null vs empty are provider noise.
    drift = [(e, lines) for e, lines in drift if lines or e.kind != "update"]
    counts = _count(e.kind for e in entries)  # in address order, like the sections

    head: list[str] = [f"{h1} {title}"]
    if plan.get("errored"):
        head.append("> [!WARNING]\n> Terraform reported errors while planning: this plan is incomplete.")
    elif plan.get("complete") is False:
        head.append("> [!NOTE]\n> Terraform deferred some changes: another plan/apply round will be needed.")
    outputs = _output_rows(plan)
    if not any(e.kind not in ("no-op", "read") for e in entries) and not outputs:
        head.append("**No changes.** The infrastructure matches the configuration.")
    else:
        head.append(
            f"**Plan:** {counts['create']} to create, {counts['update']} to update, "
            f"{counts['replace']} to replace, {counts['delete']} to delete."
        )
    shown = list(ACTIONS) + [a for a in counts if a not in ACTIONS]
    if counts_table:
        head.append("| " + " | ".join(a for a in shown) + " |\n|" + "---:|" * len(shown)
                    + "\n| " + " | ".join(str(counts[a]) for a in shown) + " |")
    destructive = [e for e in entries if e.kind in ("delete", "replace")]
    security = [e for e in entries if e.security]
    warn = []
    if destructive:
        warn.append(f"{len(destructive)} resource(s) will be deleted or replaced")
    if security:
        warn.append(f"{len(security)} security-sensitive change(s)")
    if drift:
        warn.append(f"{len(drift)} resource(s) changed outside Terraform")
    if warn:
        head.append("> [!CAUTION]\n> Review carefully: " + "; ".join(warn) + ".")

    sections: list[_Section] = []
    if destructive:
        sec = _Section(f"{h2} Deletions and replacements ({len(destructive)})")
        sec.blocks = [_entry_detail(e, h3) for e in destructive]
        sections.append(sec)
    if security:
        sec = _Section(f"{h2} Security-sensitive changes ({len(security)})")
        sec.intro.append("| Action | Resource | Kind |\n|---|---|---|\n" + "\n".join(
            f"| {e.kind} | {_code(e.address)} | {e.security} |" for e in security))
        sec.blocks = [_entry_detail(e, h3, show_security=False)
                      for e in security if e.kind not in ("delete", "replace")]
        sections.append(sec)
    if outputs:
        sec = _Section(f"{h2} Output changes ({len(outputs)})")
        sec.intro.append("| Output | Action | Before | After |\n|---|---|---|---|")
        sec.blocks = outputs
        sections.append(sec)
    if drift:
        sec = _Section(f"{h2} Changed outside Terraform (drift) ({len(drift)})")
        sec.intro.append("Terraform found these differences between the state and the real objects while "
                         "refreshing; the plan above already accounts for them.")
        for e, lines in drift:
            text = f"- {'deleted outside Terraform' if e.kind == 'delete' else e.kind} {e.label}"
            sec.blocks.append(text + ("\n\n" + _fence(lines) if lines else ""))
        sections.append(sec)
    updates = [e for e in entries if e.kind == "update" and not e.security]
    if updates:
        sec = _Section(f"{h2} Updates in place ({len(updates)})")
        sec.blocks = [_collapsible(e, _diff_lines(e.attr_changes())) for e in updates]
        sections.append(sec)
    creates = [e for e in entries if e.kind == "create" and not e.security]
    if creates:
        sec = _Section(f"{h2} Creates ({len(creates)})")
        sec.blocks = [f"- {e.label}" for e in creates]
        sections.append(sec)
    others = [e for e in entries if e.kind not in ACTIONS]
    if others:
        sec = _Section(f"{h2} Other actions ({len(others)})")
        sec.blocks = [f"- {e.kind} {e.label}" + (f" — {_reason_text(e.reason)}" if e.reason else "")
                      for e in others]
        sections.append(sec)
    moved = [e for e in entries if e.kind == "no-op" and (e.importing or (
        e.previous_address and e.previous_address != e.address))]
    if moved:
        sec = _Section(f"{h2} Moved or imported, otherwise unchanged ({len(moved)})")
        sec.blocks = [f"- {e.label}" for e in moved]
        sections.append(sec)
    reads = [e for e in entries if e.kind == "read"]
    if reads:
        sec = _Section(f"{h2} Data sources read during apply ({len(reads)})")
        sec.blocks = [f"- {e.label}" + (f" — {_reason_text(e.reason)}" if e.reason else "") for e in reads]
        sections.append(sec)

    footer_bits = []
    if plan.get("terraform_version"):
        footer_bits.append(f"Terraform {plan['terraform_version']}")
    if full_plan_hint:
        footer_bits.append(f"full plan: {full_plan_hint}")
    footer = ("<sub>" + " · ".join(footer_bits) + "</sub>") if footer_bits else ""

    return _assemble(head, sections, footer, max_chars, full_plan_hint)


def _join_blocks(blocks: list[str]) -> str:
    out = ""
    for i, b in enumerate(blocks):
        out += (_sep(blocks[i - 1], b) if i else "") + b
    return out


def _sep(prev: str, cur: str) -> str:
    # Consecutive list items / table rows stay together; everything else is a paragraph.
    if (prev.startswith("- ") and cur.startswith("- ") and "\n" not in prev) or \
            (prev.startswith("|") and cur.startswith("| ")):
        return "\n"
    return "\n\n"


def _assemble(head: list[str], sections: list[_Section], footer: str, max_chars: int,
              hint: str | None) -> str:
    total_blocks = sum(len(s.blocks) for s in sections)
    where = hint or "the saved plan file (`terraform show tfplan`)"

    def note(omitted: int) -> str:
        return (f"> [!WARNING]\n> Summary truncated to fit a GitHub comment: {omitted} of {total_blocks} "
                f"entries are not shown. The full plan is in {where}.")

    blocks = list(head)
    full = blocks + [b for s in sections for b in ([s.heading] + s.intro + s.blocks)] + ([footer] if footer else [])
    text = _join_blocks(full) + "\n"
    if len(text) <= max_chars:
        return text

    reserve = len(note(total_blocks)) + len(footer) + 8
    budget = max_chars - reserve
    out = list(blocks)
    used = len(_join_blocks(out))
    shown = 0
    stop = False
    for s in sections:
        if stop:
            break
        pending = [s.heading] + s.intro  # emitted only with the first entry that fits
        for b in s.blocks:
            add = pending + [b]
            cost = sum(len(x) + 2 for x in add)
            if used + cost > budget:
                stop = True
                break
            out.extend(add)
            used += cost
            pending = []
            shown += 1
    out.insert(len(head), note(total_blocks - shown))
    if footer:
        out.append(footer)
    text = _join_blocks(out) + "\n"
    if len(text) > max_chars:  # the head alone is too big (tiny budgets): hard cut
        text = text[: max(0, max_chars - 3)].rstrip() + "\n…\n"
    return text


# --------------------------------------------------------------------------- CLI


def load_plan(path: str | Path) -> dict:
    with open(path, encoding="utf-8") as fh:
        plan = json.load(fh)
    if not isinstance(plan, dict) or "format_version" not in plan:
        raise ValueError(f"{path}: not a `terraform show -json` plan")
    return plan


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m review.plan_summary", description=__doc__.split("\n\n")[0])
    ap.add_argument("plan_json", help="output of `terraform show -json tfplan`")
    ap.add_argument("--out", help="write Markdown here (default: stdout)")
    ap.add_argument("--title", default="Terraform plan", help="heading of the summary")
    ap.add_argument("--full-plan-hint", help="where reviewers find the full plan (shown in the footer and "
                                              "in the truncation note), e.g. a plan.txt path or artifact name")
    ap.add_argument("--max-chars", type=int, default=DEFAULT_MAX_CHARS,
                    help=f"cut the summary to this many characters (default {DEFAULT_MAX_CHARS})")
    args = ap.parse_args(argv)
    try:
        plan = load_plan(args.plan_json)
    except (OSError, ValueError) as exc:
        print(f"plan_summary: error: {exc}", file=sys.stderr)
        return 2
    text = render_markdown(plan, args.title, full_plan_hint=args.full_plan_hint, max_chars=args.max_chars)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
