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
    """Client-side rate limiter: ``rate_per_minute`` sustained, ``burst`` requests at once.
    Also honours a server-announced pause (ratelimit-remaining exhausted → wait ratelimit-reset)."""

    def __init__(self, rate_per_minute: float, burst: int = 10, *, clock=time.monotonic, sleep=time.sleep):
        self.rate = rate_per_minute / 60.0
        self.capacity = float(max(1, burst))
        self.tokens = self.capacity
        self.clock, self.sleep = clock, sleep
        self.updated = clock()
        self.blocked_until = 0.0

    def acquire(self) -> None:
        now = self.clock()
        if self.blocked_until > now:
            self._wait(self.blocked_until - now)
            now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1.0:
            self._wait((1.0 - self.tokens) / self.rate)
            now = self.clock()
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
        self.tokens = max(0.0, self.tokens - 1.0)

    def wait_seconds(self) -> float:
        """How long the next acquire() would wait (server pause or empty bucket)."""
        now = self.clock()
        tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        return max(self.blocked_until - now, 0.0) + max(0.0, (1.0 - tokens) / self.rate)

    def block_for(self, seconds: float) -> None:
        self.blocked_until = max(self.blocked_until, self.clock() + seconds)

    def _wait(self, seconds: float) -> None:
        self.sleep(seconds)


class PagerDutyClient:
    def __init__(
        self,
        token: str,
        base_url: str = "https://api.pagerduty.com",
        *,
        rate_per_minute: float = 900,
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
        self.base_url = base_url.rstrip("/")
        self._scheme, self._host = parts.scheme, parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._prefix = parts.path.rstrip("/")
        self.max_retries, self.backoff_base, self.backoff_cap = max_retries, backoff_base, backoff_cap
        self.timeout = timeout
        self.sleep, self.rng = sleep, rng
        self.bucket = TokenBucket(rate_per_minute, clock=clock, sleep=sleep)
        self._ssl = ssl_context
        self.budget = budget
        self._headers = {"Authorization": f"Token token={token}", "Accept": ACCEPT,
                         "User-Agent": "pagerduty-pipeline/1.0", "Connection": "keep-alive"}
        self._conn: http.client.HTTPConnection | None = None
        self._request_timeout = timeout
        self.request_count = 0  # HTTP attempts, retries included
        self.retry_count = 0

    def __repr__(self) -> str:  # never show the token
        return f"PagerDutyClient(base_url={self.base_url!r})"

    # -- transport ---------------------------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            timeout = self._request_timeout
            if self._scheme == "https":
                ctx = self._ssl or ssl.create_default_context()
                self._conn = http.client.HTTPSConnection(self._host, self._port, timeout=timeout, context=ctx)
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
            self._conn.connect()
            try:
                self._conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (OSError, AttributeError):
                pass
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

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
                self.retry_count += 1
            self._within_budget(self.bucket.wait_seconds(), path, last)
            self.bucket.acquire()
            self.request_count += 1
            data, last, delay = self._attempt(path, target, attempt)
            if data is not None:
                return data
            log.warning("GET %s: %s; retry %d in %.1fs", path, last.message, attempt + 1, delay)
            if attempt < self.max_retries:
                self._within_budget(delay, path, last)
                self.sleep(delay)
        assert last is not None
        last.message = f"{last.message} — gave up after {self.max_retries + 1} attempts"
        last.args = (last.message,)
        raise last

    def _within_budget(self, wait: float, path: str, last: PagerDutyError | None) -> None:
        """Raise OutOfTime when waiting ``wait`` seconds and then a request would overrun the budget; else
        bound the socket timeout by what is left after the wait."""
        if self.budget is None:
            return
        left = self.budget() - wait
        if left < MIN_REQUEST_SECONDS:
            why = f" after {last.message}" if last is not None else ""
            raise OutOfTime(f"no time left for GET {path}{why}: {wait:.1f} s wait, {self.budget():.1f} s budget")
        if self._conn is not None and self._conn.sock is not None:
            self._conn.sock.settimeout(min(self.timeout, left))
        self._request_timeout = min(self.timeout, left)

    def _attempt(self, path: str, target: str, attempt: int) -> tuple[dict | None, PagerDutyError | None, float]:
        """One request: (data, None, 0) on success, (None, error, delay before the next try) when the
        failure is worth retrying; a failure that is not is raised at once."""
        try:
            conn = self._connection()
            conn.request("GET", target, headers=self._headers)
            resp = conn.getresponse()
            body = resp.read()
            status = resp.status
            resp_headers = {k.lower(): v for k, v in resp.getheaders()}
            if resp_headers.get("connection", "").lower() == "close":
                self.close()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
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
        if reset is not None:
            delay = reset + self.rng()
        elif retry_after is not None:
            delay = retry_after
        return None, PagerDutyError(text, code, status=status, pd_code=pd_code), delay

    def _note_rate_headers(self, headers: dict) -> None:
        remaining = _number(headers.get("ratelimit-remaining"))
        reset = _number(headers.get("ratelimit-reset"))
        if remaining is not None and remaining <= 1 and reset is not None:
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
