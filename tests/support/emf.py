"""A second reading of AWS's "Specification: Embedded metric format", independent of the layer's emitter: what a
CloudWatch Logs extraction would refuse in a log line. The tests check every line the steps write with it (the
layer's own ``metrics.document_problems`` is the emitter's check, so it cannot be the test's too)."""

from __future__ import annotations

import json
import math
from typing import Any

UNITS = {"Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes", "Terabytes",
         "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count", "Bytes/Second",
         "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second", "Bits/Second",
         "Kilobits/Second", "Megabits/Second", "Gigabits/Second", "Terabits/Second", "Count/Second", "None"}


def _number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _name(value: Any, limit: int = 1024) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit


def violations(line: str) -> list[str]:
    """What in one log line breaks the spec (empty: CloudWatch would extract its metrics)."""
    try:
        doc = json.loads(line)
    except ValueError as exc:
        return [f"not JSON: {exc}"]
    if not isinstance(doc, dict):
        return ["the root is not an object"]
    aws = doc.get("_aws")
    if not isinstance(aws, dict):
        return ["no _aws object at the root"]
    out = []
    if type(aws.get("Timestamp")) is not int or aws["Timestamp"] <= 0:
        out.append(f"Timestamp {aws.get('Timestamp')!r} is not an integer of epoch milliseconds")
    directives = aws.get("CloudWatchMetrics")
    if not isinstance(directives, list) or not directives:
        return out + ["CloudWatchMetrics is not a non-empty array"]
    for directive in directives:
        if not isinstance(directive, dict) or set(directive) - {"Namespace", "Dimensions", "Metrics"}:
            out.append(f"directive {directive!r} is not an object of Namespace, Dimensions and Metrics")
            continue
        if not _name(directive.get("Namespace"), 255):
            out.append(f"Namespace {directive.get('Namespace')!r}")
        dimension_sets = directive.get("Dimensions")
        if not isinstance(dimension_sets, list):
            out.append("Dimensions is not an array")
            dimension_sets = []
        for dimension_set in dimension_sets:
            if not isinstance(dimension_set, list) or len(dimension_set) > 30:
                out.append(f"dimension set {dimension_set!r} is not an array of at most 30 names")
                continue
            for key in dimension_set:
                if not _name(key):
                    out.append(f"dimension name {key!r}")
                elif not _name(doc.get(key)):
                    out.append(f"dimension {key} has no string value at the root ({doc.get(key)!r})")
        metrics = directive.get("Metrics")
        if not isinstance(metrics, list) or len(metrics) > 100:
            out.append("Metrics is not an array of at most 100 definitions")
            continue
        for definition in metrics:
            if not isinstance(definition, dict) or set(definition) - {"Name", "Unit", "StorageResolution"}:
                out.append(f"metric definition {definition!r}")
                continue
            name = definition.get("Name")
            if not _name(name):
                out.append(f"metric Name {name!r}")
                continue
            if "Unit" in definition and definition["Unit"] not in UNITS:
                out.append(f"{name}: Unit {definition['Unit']!r}")
            value = doc.get(name)
            if isinstance(value, list):
                if not 0 < len(value) <= 100 or not all(_number(v) for v in value):
                    out.append(f"{name}: {len(value)} values, or not all numbers")
            elif not _number(value):
                out.append(f"{name}: value {value!r} at the root is not a number")
    return out
