"""PagerDuty REST API v2 client.

HTTP client choice: the standard library's ``http.client`` with one persistent (keep-alive)
connection per client. It adds no dependency to the layer, keeps TLS connections open across
the thousands of paged requests of a load (``urllib.request`` opens a new connection per request),
and leaves retries, rate limiting and timeouts entirely to this module. urllib3 is present in the
Lambda runtime only as a transitive dependency of boto3, in a version we do not control.

JSON decoding: orjson (a layer dependency). Decoding PagerDuty's pages is the loader's largest Python
cost (log entries with ``include[]=incidents`` run to ~350 KB per page); orjson decodes them in about
two-thirds of the standard library's time (bench figures in docs/pipeline.md), and its errors are
``ValueError`` subclasses.
"""

from __future__ import annotations

import http.client
import logging
import random
import socket
import ssl
import threading
import time
from typing import Callable, Iterable
from urllib.parse import urlencode, urlsplit

import orjson

from .errors import OutOfTime, PagerDutyError

log = logging.getLogger(__name__)

ACCEPT = "application/vnd.pagerduty+json;version=2"
MAX_LIMIT = 100
OFFSET_CAP = 10_000
RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}
MIN_REQUEST_SECONDS = 0.5  # a request is not started with less time than this left (PagerDuty answers in 0.1-0.3 s)


class TokenBucket:
    """Client-side rate limiter shared by every worker thread of a client: ``rate_per_minute`` sustained,
    ``burst`` requests at once. Each caller reserves the next token under a lock and then waits for its time
    outside it, so N threads are paced exactly like one. A server-announced pause (``block_for``: a 429, or
    ratelimit-remaining exhausted) holds back every caller until it ends."""

    def __init__(self, rate_per_minute: float, burst: int = 10, *, clock=time.monotonic, sleep=time.sleep):
        self.rate = rate_per_minute / 60.0
        self.capacity = float(max(1, burst))
        self.tokens = self.capacity
        self.clock, self.sleep = clock, sleep
        self.updated = clock()
        self.blocked_until = 0.0
        self._lock = threading.Lock()

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def acquire(self) -> None:
        with self._lock:
            now = self.clock()
            self._refill(now)
            self.tokens -= 1.0  # may go below zero: a reservation that later callers queue behind
            ready = now + max(0.0, -self.tokens) / self.rate
        waited_for = None
        while True:  # a pause announced while this caller waits extends its wait
            target = max(ready, self.blocked_until)
            wait = target - self.clock()
            if wait <= 0 or target == waited_for:
                return
            self.sleep(wait)
            waited_for = target

    def wait_seconds(self) -> float:
        """How long the next acquire() would wait (server pause or empty bucket)."""
        with self._lock:
            now = self.clock()
            tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            return max(self.blocked_until - now, 0.0, (1.0 - tokens) / self.rate)

    def block_for(self, seconds: float) -> None:
        with self._lock:
            self.blocked_until = max(self.blocked_until, self.clock() + seconds)


class PagerDutyClient:
    """GET requests with retries, one shared token bucket and at most ``max_in_flight`` requests on the wire at
    once (each on its own keep-alive connection from a small pool). Thread-safe: the paging engine calls it from
    several worker threads."""

    def __init__(
        self,
        token: str,
        base_url: str = "https://api.pagerduty.com",
        *,
        rate_per_minute: float = 900,
        max_in_flight: int = 8,
        max_retries: int = 5,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        timeout: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
        ssl_context: ssl.SSLContext | None = None,
        budget: Callable[[], float] | None = None,
    ) -> None:
        """``budget`` returns the seconds the caller may still spend (None: no limit): no request, rate-limit
        pause or retry wait starts that cannot end within it; OutOfTime is raised instead."""
        parts = urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"invalid PagerDuty base URL {base_url!r}")
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.base_url = base_url.rstrip("/")
        self._scheme, self._host = parts.scheme, parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._prefix = parts.path.rstrip("/")
        self.max_retries, self.backoff_base, self.backoff_cap = max_retries, backoff_base, backoff_cap
        self.timeout = timeout
        self.sleep, self.rng = sleep, rng
        self.bucket = TokenBucket(rate_per_minute, clock=clock, sleep=sleep)
        self.max_in_flight = max_in_flight
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._ssl = ssl_context
        self.budget = budget
        self._headers = {"Authorization": f"Token token={token}", "Accept": ACCEPT,
                         "User-Agent": "pagerduty-pipeline/1.0", "Connection": "keep-alive"}
        self._idle: list[http.client.HTTPConnection] = []  # keep-alive connections not in use
        self._lock = threading.Lock()
        self.request_count = 0  # HTTP attempts, retries included
        self.retry_count = 0
        self.rate_limited_count = 0  # 429 answers
        self.in_flight = 0
        self.peak_in_flight = 0

    def __repr__(self) -> str:  # never show the token
        return f"PagerDutyClient(base_url={self.base_url!r})"

    # -- transport ---------------------------------------------------------------------------
    def _checkout(self, timeout: float) -> http.client.HTTPConnection:
        """An idle keep-alive connection, or a new one; its socket timeout set to ``timeout``."""
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            if self._scheme == "https":
                ctx = self._ssl or ssl.create_default_context()
                conn = http.client.HTTPSConnection(self._host, self._port, timeout=timeout, context=ctx)
            else:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
            conn.connect()
            try:
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (OSError, AttributeError):
                pass
        elif conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def _checkin(self, conn: http.client.HTTPConnection, reusable: bool) -> None:
        if reusable:
            with self._lock:
                self._idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        """Close the idle connections (call when no request is running)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _count(self, **increments: int) -> None:
        with self._lock:
            for name, n in increments.items():
                setattr(self, name, getattr(self, name) + n)
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def _backoff(self, attempt: int) -> float:
        base = min(self.backoff_cap, self.backoff_base * (2 ** attempt))
        return base / 2 + self.rng() * base / 2  # "equal jitter"

    def get(self, path: str, params: Iterable[tuple[str, object]] | dict | None = None) -> dict:
        """GET ``path`` (relative to the base URL) and return the decoded JSON object."""
        query = urlencode(_flatten(params), doseq=True)
        target = f"{self._prefix}{path}" + (f"?{query}" if query else "")
        last: PagerDutyError | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                self._count(retry_count=1)
            with self._slots:  # at most max_in_flight requests waiting for a token or on the wire
                timeout = self._within_budget(self.bucket.wait_seconds(), path, last)
                self.bucket.acquire()
                self._count(request_count=1, in_flight=1)
                try:
                    data, last, delay = self._attempt(path, target, attempt, timeout)
                finally:
                    self._count(in_flight=-1)
            if data is not None:
                return data
            log.warning("GET %s: %s; retry %d in %.1fs", path, last.message, attempt + 1, delay)
            if attempt < self.max_retries:
                if last.status == 429:  # the key's limit: every worker pauses, not just this one
                    self.bucket.block_for(delay)
                else:
                    self._within_budget(delay, path, last)
                    self.sleep(delay)
        assert last is not None
        last.message = f"{last.message} — gave up after {self.max_retries + 1} attempts"
        last.args = (last.message,)
        raise last

    def _within_budget(self, wait: float, path: str, last: PagerDutyError | None) -> float:
        """Raise OutOfTime when waiting ``wait`` seconds and then a request would overrun the budget; else
        return the socket timeout for the request (bounded by what is left after the wait)."""
        if self.budget is None:
            return self.timeout
        left = self.budget() - wait
        if left < MIN_REQUEST_SECONDS:
            why = f" after {last.message}" if last is not None else ""
            raise OutOfTime(f"no time left for GET {path}{why}: {wait:.1f} s wait, {self.budget():.1f} s budget")
        return min(self.timeout, left)

    def _attempt(self, path: str, target: str, attempt: int,
                 timeout: float) -> tuple[dict | None, PagerDutyError | None, float]:
        """One request: (data, None, 0) on success, (None, error, delay before the next try) when the
        failure is worth retrying; a failure that is not is raised at once."""
        conn = None
        try:
            conn = self._checkout(timeout)
            conn.request("GET", target, headers=self._headers)
            resp = conn.getresponse()
            body = resp.read()
            status = resp.status
            resp_headers = {k.lower(): v for k, v in resp.getheaders()}
            self._checkin(conn, resp_headers.get("connection", "").lower() != "close")
        except (OSError, http.client.HTTPException) as exc:
            if conn is not None:
                conn.close()
            return None, PagerDutyError(f"PagerDuty not reachable on GET {path}: {type(exc).__name__}: {exc}",
                                        "pagerduty_unavailable"), self._backoff(attempt)
        self._note_rate_headers(resp_headers)
        if 200 <= status < 300:
            try:
                data = orjson.loads(body)
                if not isinstance(data, dict):
                    raise ValueError("top-level JSON is not an object")
                return data, None, 0.0
            except ValueError as exc:
                return None, PagerDutyError(f"PagerDuty returned malformed JSON on GET {path} (HTTP {status}, "
                                            f"{len(body)} bytes): {exc}", "pagerduty_bad_response",
                                            status=status), self._backoff(attempt)
        message, pd_code = _error_of(body)
        text = f"PagerDuty HTTP {status} on GET {path}: {message}"
        if pd_code is not None:
            text += f" (code {pd_code})"
        if status not in RETRYABLE_STATUS:
            code = {400: "pagerduty_bad_request", 401: "pagerduty_unauthorized", 403: "pagerduty_forbidden",
                    404: "pagerduty_not_found"}.get(status, "pagerduty_error")
            raise PagerDutyError(text, code, status=status, pd_code=pd_code)
        code = "pagerduty_rate_limited" if status == 429 else "pagerduty_unavailable"
        delay = self._backoff(attempt)
        reset = _number(resp_headers.get("ratelimit-reset")) if status == 429 else None
        retry_after = _number(resp_headers.get("retry-after"))
        if status == 429:
            self._count(rate_limited_count=1)
        if reset is not None:
            delay = reset + self.rng()
        elif retry_after is not None:
            delay = retry_after
        return None, PagerDutyError(text, code, status=status, pd_code=pd_code), delay

    def _note_rate_headers(self, headers: dict) -> None:
        """Pause every worker until the window resets when the key has no more requests left than could
        already be in flight (other users of the key spend it too)."""
        remaining = _number(headers.get("ratelimit-remaining"))
        reset = _number(headers.get("ratelimit-reset"))
        if remaining is not None and reset is not None and remaining <= max(1, self.max_in_flight):
            self.bucket.block_for(reset)

    # -- paging helpers ----------------------------------------------------------------------
    def page(self, path: str, key: str, params, offset: int = 0, limit: int = MAX_LIMIT,
             total: bool = False) -> tuple[list, bool, int | None]:
        p = _flatten(params) + [("limit", limit), ("offset", offset)]
        if total:
            p.append(("total", "true"))
        data = self.get(path, p)
        items = data.get(key)
        if not isinstance(items, list):
            raise PagerDutyError(f"PagerDuty response to GET {path} lacks a '{key}' list", "pagerduty_bad_response")
        tot = data.get("total")
        return items, bool(data.get("more")), tot if isinstance(tot, int) else None

    def list_all(self, path: str, key: str, params=None, limit: int = MAX_LIMIT) -> tuple[list[dict], bool]:
        """Every item of a classic-paginated list with no time window to split, up to the offset cap.
        Returns (items, truncated): truncated is True when the list goes on past the cap (the API serves no
        more of it by offset); callers record that instead of failing."""
        items: list[dict] = []
        offset = 0
        while True:
            page, more, _ = self.page(path, key, params, offset, limit)
            items.extend(page)
            if not more or not page:
                return items, False
            offset += len(page)
            if offset + limit > OFFSET_CAP:
                return items, True


def _flatten(params) -> list[tuple[str, object]]:
    if params is None:
        return []
    items = params.items() if isinstance(params, dict) else params
    out: list[tuple[str, object]] = []
    for k, v in items:
        if isinstance(v, (list, tuple)):
            out.extend((k, x) for x in v)
        elif v is not None:
            out.append((k, v))
    return out


def _number(value) -> float | None:
    try:
        return float(value) if value is not None and value != "" else None
    except ValueError:
        return None


def _error_of(body: bytes) -> tuple[str, int | None]:
    try:
        data = orjson.loads(body)
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            msg = str(err.get("message") or "error")
            if err.get("errors"):
                msg += ": " + "; ".join(str(e) for e in err["errors"])
            code = err.get("code")
            return msg, code if isinstance(code, int) else None
    except ValueError:
        pass
    text = body[:200].decode("utf-8", "replace").strip()
    return text or "(empty body)", None
