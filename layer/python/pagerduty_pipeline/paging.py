"""The paging engine: walk a time window of a classic-paginated list, splitting it below the offset cap, with
several pages in flight while earlier ones are written, and a position that moves only past committed work.

Three stages overlap: worker threads fetch and decode pages (up to the client's in-flight bound, all paced by
its one token bucket), the caller's thread takes the pages back in offset order and collects them into batches
of ``WRITE_BATCH_ITEMS`` items, and a writer thread writes each batch in one transaction on the step's only
connection (at most one batch waiting). After a failed batch nothing later commits; after a failed request the
other requests are dropped and nothing past the last committed page is recorded.
"""

from __future__ import annotations

import json
import logging
import math
from collections import deque
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


def _drop(futures: list[Future]) -> None:
    """Cancel the calls not started and wait for the running ones, whose results (or errors) are not needed."""
    for future in futures:
        future.cancel()
    for future in futures:
        if not future.cancelled():
            try:
                future.result()
            except BaseException:  # noqa: BLE001 - not needed
                pass


class InOrder:
    """API calls running on up to ``width`` threads (the client's in-flight bound), taken back in the order they
    were submitted, so that whatever is written after them is written in that order too. ``cancel`` drops the
    calls not started and waits for the running ones: after it nothing of theirs is used and no thread is left
    sending requests."""

    def __init__(self, width: int, name: str) -> None:
        self.width = max(1, width)
        self._pool = ThreadPoolExecutor(max_workers=self.width, thread_name_prefix=name)
        self._queue: deque[tuple[object, Future]] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    def full(self) -> bool:
        return len(self._queue) >= self.width

    def submit(self, key, fn: Callable, *args) -> None:
        self._queue.append((key, self._pool.submit(fn, *args)))

    def adopt(self, key, future: Future) -> None:
        """Queue a call already started elsewhere (a prefetched first page)."""
        self._queue.append((key, future))

    def next_key(self):
        return self._queue[0][0] if self._queue else None

    def take(self):
        """The oldest call's (key, result); its exception, if it failed."""
        key, future = self._queue.popleft()
        return key, future.result()

    def cancel(self) -> None:
        queued, self._queue = self._queue, deque()
        _drop([future for _, future in queued])

    def close(self) -> None:
        self.cancel()
        self._pool.shutdown(wait=True)


class WindowWalk:
    """One list (``path``, response ``key``) over the windows of ``position`` (``{"windows": [[since, until],
    …], "offset": n, "api_total": t}``), which it updates only after a batch commits: a resumed walk starts
    exactly after committed work. ``api_total`` adds up the API's ``total`` of each (sub-)window walked.

    Once a window's total is known (its first page asks for it), the rest of its pages are requested
    concurrently, up to the client's in-flight bound, and taken back in offset order; the next window's first
    page is fetched ahead (``ahead``: the caller's, shared across walks, or the walk's own)."""

    def __init__(self, client: PagerDutyClient, path: str, key: str, base_params: list, *,
                 write: Callable[[list[dict]], None] | None = None, position: dict | None = None,
                 out_of_time: Callable[[], bool] = lambda: False, ahead: "FirstPages | None" = None) -> None:
        self.client, self.path, self.key, self.base_params = client, path, key, base_params
        self.write, self.position, self.out_of_time = write, position, out_of_time
        self.ahead = ahead
        self.splits = 0

    def first_page(self, window: list[str]) -> tuple[list, bool, int | None]:
        """A window's first page with its total (what ``run`` asks first), for fetching it ahead."""
        return self._fetch(window, 0, True)

    def _fetch(self, window: list[str], offset: int, want_total: bool) -> tuple[list, bool, int | None]:
        params = [("since", window[0]), ("until", window[1]), ("time_zone", "UTC")] + self.base_params
        return self.client.page(self.path, self.key, params, offset, MAX_LIMIT, total=want_total)

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

        fetches = InOrder(self.client.max_in_flight, "fetch")
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="writer")
        ahead = self.ahead or FirstPages()
        window_total: int | None = None  # the current window's total, once known
        planned = 0  # the offset of the next page of the current window not yet requested
        stopped = False
        try:
            while windows:
                if self.out_of_time():
                    stopped = True
                    break
                if writing and writing[0].done():
                    writing.pop(0).result()  # surface a failed write now
                window = windows[0]
                if fetches.next_key() != (window[0], window[1], offset):
                    fetches.cancel()  # the walk went elsewhere (split, short page): re-plan from here
                    early = ahead.take(self.path, window) if offset == 0 else None
                    if early is not None:
                        fetches.adopt((window[0], window[1], 0), early)
                    else:
                        fetches.submit((window[0], window[1], offset), self._fetch, window, offset,
                                       window_total is None)
                    planned = offset + MAX_LIMIT
                while window_total is not None and not fetches.full() and planned < window_total \
                        and planned + MAX_LIMIT <= OFFSET_CAP and not self.out_of_time():
                    fetches.submit((window[0], window[1], planned), self._fetch, window, planned, False)
                    planned += MAX_LIMIT
                if window_total is not None and planned >= window_total and len(windows) > 1 \
                        and not self.out_of_time():
                    ahead.fetch(self, windows[1])  # the next window's first page while this one ends
                try:
                    _, (items, more, total) = fetches.take()
                except OutOfTime:
                    stopped = True
                    break
                if total is not None:
                    window_total = total
                if offset == 0 and total is not None and total > OFFSET_CAP:
                    pieces = split_window(window, math.ceil(total / SPLIT_TARGET))
                    log.info(json.dumps({"event": "window_split", "path": self.path, "window": window,
                                         "total": total, "pieces": len(pieces)}))
                    windows, window_total = pieces + windows[1:], None
                    self.splits += 1
                    continue
                if offset == 0 and total is not None:
                    totals += total
                if more and items:  # where the walk goes after this page
                    offset += len(items)
                    if offset + MAX_LIMIT > OFFSET_CAP:  # grew past the cap while paging: split the rest
                        windows, offset, window_total = split_window(window, 2) + windows[1:], 0, None
                else:
                    windows, offset, window_total, planned = windows[1:], 0, None, MAX_LIMIT
                collected.extend(items)
                if len(collected) >= WRITE_BATCH_ITEMS:
                    submit()
            submit()
            while writing:
                writing.pop(0).result()
            return not stopped
        finally:
            fetches.close()
            if ahead is not self.ahead:
                ahead.close()
            writer.shutdown(wait=True, cancel_futures=True)  # after a failure, later batches never run


class FirstPages:
    """First pages fetched ahead of their walk: the next phase's or chunk's first request (the one whose total the
    rest of a window's pages wait for) runs while the current phase still works, so a phase does not start with
    a round trip to the API. Pages not taken are awaited and dropped by ``close``."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ahead")
        self._pages: dict[tuple, Future] = {}

    def fetch(self, walk: WindowWalk, window: list[str]) -> None:
        key = (walk.path, window[0], window[1])
        if key not in self._pages:
            self._pages[key] = self._pool.submit(walk.first_page, window)

    def take(self, path: str, window: list[str]) -> Future | None:
        return self._pages.pop((path, window[0], window[1]), None)

    def close(self) -> None:
        pages, self._pages = self._pages, {}
        _drop(list(pages.values()))
        self._pool.shutdown(wait=True)
