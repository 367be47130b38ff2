"""Which windows of a scope are loaded completely, and the watermark they give.

A run records each chunk of its window that step 2 loaded and step 3 validated (``pagerduty.coverage``). The
watermark is the end of the contiguous coverage that holds the previous watermark (the first time: the run's
own start): a window loaded after a gap does not move it, so the next ``{}`` run starts at the gap (less the
overlap) and fills it. An explicit window fills coverage wherever it lies; gaps are reported, never hidden.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

UTC = timezone.utc
Interval = tuple[datetime, datetime]


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def merge(intervals: list[Interval]) -> list[Interval]:
    """Sorted, merged half-open intervals ([a, b) and [b, c) become [a, c))."""
    out: list[list[datetime]] = []
    for since, until in sorted(intervals):
        if out and since <= out[-1][1]:
            out[-1][1] = max(out[-1][1], until)
        else:
            out.append([since, until])
    return [(a, b) for a, b in out]


def gaps(merged: list[Interval]) -> list[Interval]:
    return [(merged[k][1], merged[k + 1][0]) for k in range(len(merged) - 1)]


def contiguous_end(merged: list[Interval], anchor: datetime | None) -> datetime | None:
    """The end of the merged interval that holds ``anchor`` (its end included); None when none does."""
    if anchor is None:
        return None
    for since, until in merged:
        if since <= anchor <= until:
            return until
    return None


def chunks(since: datetime, until: datetime, length: timedelta) -> list[Interval]:
    """[since, until) cut into consecutive pieces of at most ``length`` (every API query stays in one)."""
    out: list[Interval] = []
    at = since
    while at < until:
        out.append((at, min(until, at + length)))
        at = out[-1][1]
    return out


def describe(scope: str, merged: list[Interval], watermark: datetime | None) -> dict:
    """What step 3 returns and pipeline_runs.coverage keeps: intervals, gaps, watermark (ISO 8601 strings)."""
    return {"scope": scope, "intervals": [[iso(a), iso(b)] for a, b in merged],
            "gaps": [[iso(a), iso(b)] for a, b in gaps(merged)],
            "watermark": iso(watermark) if watermark is not None else None}
