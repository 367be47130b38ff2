"""The paging engine: walk a time window of a classic-paginated list, splitting it below the offset cap, with
the next page fetched while the previous batch is written, and a position that moves only past committed work.

Three stages overlap: a helper thread fetches and decodes the next page (one request in flight, as PagerDuty
advises), the caller's thread collects pages into batches of ``WRITE_BATCH_ITEMS`` items, and a writer thread
writes each batch in one transaction on the step's only connection (at most one batch waiting). After a failed
batch nothing later commits.
"""

from __future__ import annotations

import json
import logging
import math
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Callable

from .client import MAX_LIMIT, OFFSET_CAP, PagerDutyClient
from .coverage import iso
from .errors import OutOfTime, PagerDutyError, PipelineError

log = logging.getLogger("pagerduty_pipeline")
UTC = timezone.utc
SPLIT_TARGET = 8_000  # aim sub-windows at this many rows, leaving room under the 10,000 cap
WRITE_BATCH_ITEMS = 1_000  # API items per transaction (10 pages)


def split_window(window: list[str], parts: int) -> list[list[str]]:
    """[since, until] cut evenly in time into ``parts`` pieces (whole seconds)."""
    s = int(datetime.fromisoformat(window[0]).timestamp())
    u = int(datetime.fromisoformat(window[1]).timestamp())
    if u - s < 2:
        raise PagerDutyError(f"more than {OFFSET_CAP} items inside one second at {window[0]}; cannot split",
                             "pagerduty_offset_cap")
    parts = max(2, min(parts, u - s))
    edges = [s + (u - s) * k // parts for k in range(parts + 1)]
    return [[iso(datetime.fromtimestamp(edges[k], UTC)), iso(datetime.fromtimestamp(edges[k + 1], UTC))]
            for k in range(parts) if edges[k] < edges[k + 1]]


def _drain(future: Future | None) -> None:
    """Wait for an unneeded prefetch (the client must be idle before anything else uses it)."""
    if future is None:
        return
    try:
        future.result()
    except Exception:  # noqa: BLE001 - its page is not needed
        pass


class WindowWalk:
    """One list (``path``, response ``key``) over the windows of ``position`` (``{"windows": [[since, until],
    …], "offset": n, "api_total": t}``), which it updates only after a batch commits: a resumed walk starts
    exactly after committed work. ``api_total`` adds up the API's ``total`` of each (sub-)window walked."""

    def __init__(self, client: PagerDutyClient, path: str, key: str, base_params: list, *,
                 write: Callable[[list[dict]], None], position: dict, out_of_time: Callable[[], bool]) -> None:
        self.client, self.path, self.key, self.base_params = client, path, key, base_params
        self.write, self.position, self.out_of_time = write, position, out_of_time
        self.splits = 0

    def _fetch(self, window: list[str], offset: int) -> tuple[list, bool, int | None]:
        params = [("since", window[0]), ("until", window[1]), ("time_zone", "UTC")] + self.base_params
        return self.client.page(self.path, self.key, params, offset, MAX_LIMIT, total=offset == 0)

    def run(self) -> bool:
        """Walk to the end (True) or stop for time with the position after the last commit (False)."""
        pos = self.position
        windows, offset = list(pos["windows"]), int(pos.get("offset", 0))  # position after collected pages
        collected: list[dict] = []
        totals = 0
        writing: list[Future] = []  # submitted batches, oldest first
        failed: list[BaseException] = []

        def commit(items: list[dict], at: tuple[list, int], api_total: int) -> None:
            if failed:  # an earlier batch failed: never commit past it
                raise PipelineError("an earlier batch failed", "db_error")
            try:
                if items:
                    self.write(items)
            except BaseException as exc:
                failed.append(exc)
                raise
            pos["windows"], pos["offset"] = at
            pos["api_total"] = int(pos.get("api_total", 0)) + api_total

        def submit() -> None:
            nonlocal collected, totals
            while len(writing) >= 2:  # bound memory: one batch writing, one waiting
                writing.pop(0).result()
            writing.append(writer.submit(commit, collected, (list(windows), offset), totals))
            collected, totals = [], 0

        fetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="writer")
        ahead: tuple[tuple[str, str, int], Future] | None = None
        stopped = False
        try:
            while windows:
                if self.out_of_time():
                    stopped = True
                    break
                if writing and writing[0].done():
                    writing.pop(0).result()  # surface a failed write now
                window = windows[0]
                try:
                    if ahead is not None and ahead[0] == (window[0], window[1], offset):
                        items, more, total = ahead[1].result()
                    else:
                        _drain(ahead[1] if ahead else None)
                        items, more, total = self._fetch(window, offset)
                except OutOfTime:
                    stopped = True
                    break
                finally:
                    ahead = None
                if offset == 0 and total is not None and total > OFFSET_CAP:
                    pieces = split_window(window, math.ceil(total / SPLIT_TARGET))
                    log.info(json.dumps({"event": "window_split", "path": self.path, "window": window,
                                         "total": total, "pieces": len(pieces)}))
                    windows = pieces + windows[1:]
                    self.splits += 1
                    continue
                if offset == 0 and total is not None:
                    totals += total
                if more and items:  # where the walk goes after this page
                    offset += len(items)
                    if offset + MAX_LIMIT > OFFSET_CAP:  # grew past the cap while paging: split the rest
                        windows, offset = split_window(window, 2) + windows[1:], 0
                else:
                    windows, offset = windows[1:], 0
                if windows and not self.out_of_time():
                    nxt = windows[0]
                    ahead = ((nxt[0], nxt[1], offset), fetcher.submit(self._fetch, nxt, offset))
                collected.extend(items)
                if len(collected) >= WRITE_BATCH_ITEMS:
                    submit()
            submit()
            while writing:
                writing.pop(0).result()
            return not stopped
        finally:
            _drain(ahead[1] if ahead else None)
            fetcher.shutdown(wait=True)
            writer.shutdown(wait=True, cancel_futures=True)  # after a failure, later batches never run
