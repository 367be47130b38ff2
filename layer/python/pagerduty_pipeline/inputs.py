"""Validation of the execution input (the HTTP request body) for step 1."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from .errors import InputError
from .schema import URGENCIES

UTC = timezone.utc
ALLOWED_KEYS = ("since", "until", "service_ids", "team_ids", "urgencies")
ID_RE = re.compile(r"^[A-Z0-9]{1,32}$")
# An explicit window is loaded in chunks that PagerDuty accepts, over as many executions as it takes; this bound
# only catches typos (since=1970). A window derived from the watermark has no bound.
MAX_WINDOW = timedelta(days=3 * 366)
CLOCK_SKEW = timedelta(seconds=60)
MAX_IDS = 100


def _fail(code: str, key: str | None, message: str):
    raise InputError(message, code, key=key)


def parse_instant(key: str, value) -> datetime:
    if not isinstance(value, str):
        _fail("invalid_type", key, f"'{key}' must be an ISO 8601 string with a time zone, got {type(value).__name__}")
    try:
        dt = datetime.fromisoformat(value.strip())
    except ValueError:
        _fail("invalid_date", key, f"'{key}' is not a valid ISO 8601 date-time: {value!r}")
    if dt.tzinfo is None or dt.utcoffset() is None:
        _fail("invalid_date", key, f"'{key}' must include a time zone (e.g. 'Z' or '+01:00'): {value!r}")
    return dt.astimezone(UTC)


def _id_list(key: str, value) -> list[str]:
    if not isinstance(value, list):
        _fail("invalid_type", key, f"'{key}' must be a list of PagerDuty IDs, got {type(value).__name__}")
    if len(value) > MAX_IDS:
        _fail("invalid_value", key, f"'{key}' may hold at most {MAX_IDS} IDs")
    for item in value:
        if not isinstance(item, str):
            _fail("invalid_type", key, f"'{key}' must contain only strings, found {type(item).__name__}")
        if not ID_RE.match(item):
            _fail("invalid_value", key, f"'{key}' contains {item!r}, which is not a PagerDuty ID (A-Z, 0-9)")
    return sorted(set(value))


def validate_input(data, now: datetime | None = None) -> dict:
    """Return {"since": dt|None, "until": dt|None, "filters": {...}} or raise InputError."""
    now = now or datetime.now(UTC)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        _fail("invalid_input", None, f"input must be a JSON object, got {type(data).__name__}")
    unknown = sorted(k for k in data if k not in ALLOWED_KEYS)
    if unknown:
        _fail("unknown_key", unknown[0], f"unknown key '{unknown[0]}'; allowed keys: {', '.join(ALLOWED_KEYS)}")
    since = parse_instant("since", data["since"]) if data.get("since") is not None else None
    until = parse_instant("until", data["until"]) if data.get("until") is not None else None
    filters = {}
    for key in ("service_ids", "team_ids"):
        if data.get(key) is not None:
            ids = _id_list(key, data[key])
            if ids:
                filters[key] = ids
    if data.get("urgencies") is not None:
        value = data["urgencies"]
        if not isinstance(value, list):
            _fail("invalid_type", "urgencies", f"'urgencies' must be a list of 'high'/'low', got {type(value).__name__}")
        for item in value:
            if not isinstance(item, str):
                _fail("invalid_type", "urgencies", f"'urgencies' must contain only strings, found {type(item).__name__}")
            if item not in URGENCIES:
                _fail("invalid_value", "urgencies", f"'urgencies' may only contain 'high' or 'low', found {item!r}")
        if value:
            filters["urgencies"] = sorted(set(value))
    if since is not None and since > now + CLOCK_SKEW:
        _fail("future_window", "since", f"'since' ({since.isoformat()}) is in the future")
    if until is not None and until > now + CLOCK_SKEW:
        _fail("future_window", "until", f"'until' ({until.isoformat()}) is in the future")
    if since is not None:  # without 'until' the window ends now: the same rules apply
        end = until if until is not None else now
        if since >= end:
            _fail("reversed_window", "since", "'since' must be earlier than 'until'")
        if end - since > MAX_WINDOW:
            _fail("window_too_long", "since", f"the window 'since'..'until' may span at most {MAX_WINDOW.days} days")
    return {"since": since, "until": until, "filters": filters}


def scope_of(filters: dict) -> str:
    """Watermark scope: one per filter set (an unfiltered load has scope 'all')."""
    if not filters:
        return "all"
    return ";".join(f"{k}={','.join(filters[k])}" for k in sorted(filters))
