"""Requests in flight under one shared budget (issue 11): the in-flight bound, one token bucket for every worker,
a 429 that pauses them all, a failed request that stops the others, pages written in offset order, and the
alert policies on realistic data."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from pagerduty_pipeline import steps
from pagerduty_pipeline.client import PagerDutyClient
from pagerduty_pipeline.errors import PagerDutyError
from pagerduty_pipeline.paging import WindowWalk
from tests.pipeline.conftest import START, TOKEN, count, envelope, make_env, make_server, run_pipeline
from tests.pipeline.test_load import WEEK, assert_matches_account, grouped
from tests.support.pipeline import kept_alerts


def in_threads(n: int, work) -> list[BaseException]:
    """Run ``work(k)`` on n threads at once; the exceptions they raised."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def run(k: int) -> None:
        barrier.wait()
        try:
            work(k)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def settled(server, n: int) -> list:
    """The server's request log once it holds n records (a record is appended just after its response is sent)."""
    deadline = time.monotonic() + 5
    while len(server.requests) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    return list(server.requests)


def test_requests_in_flight_never_exceed_the_bound():
    with make_server(n_incidents=5, latency=0.05) as server:
        client = PagerDutyClient(TOKEN, server.url, rate_per_minute=1_000_000, max_in_flight=3)
        assert in_threads(8, lambda k: [client.get("/priorities") for _ in range(5)]) == []
        client.close()
        assert len(settled(server, 40)) == 40
        # the server saw three at once (so they overlap), never four
        assert server.max_concurrent == 3 and client.peak_in_flight == 3 and client.in_flight == 0


def test_one_token_bucket_paces_every_worker():
    """Eight workers share 1,200 requests a minute (20/s, bursts of 10): the server never sees more."""
    with make_server(n_incidents=5) as server:
        client = PagerDutyClient(TOKEN, server.url, rate_per_minute=1_200, max_in_flight=8)
        assert in_threads(8, lambda k: [client.get("/priorities") for _ in range(5)]) == []
        arrivals = sorted(r.at for r in settled(server, 40))
        assert len(arrivals) == 40
        # request i+k comes at least (k - burst) / rate after request i, whichever worker sent them
        for i in range(len(arrivals)):
            for k in range(11, len(arrivals) - i):
                assert arrivals[i + k] - arrivals[i] >= (k - 10) / 20 - 0.02, (i, k)


def test_a_429_with_ratelimit_reset_pauses_every_worker_not_just_the_one_that_got_it():
    with make_server(n_incidents=5) as server:
        waits: dict[str, list[float]] = {}

        def sleep(seconds: float) -> None:  # records the wait instead of waiting it
            waits.setdefault(threading.current_thread().name, []).append(seconds)

        client = PagerDutyClient(TOKEN, server.url, rate_per_minute=1_000_000, max_in_flight=4, sleep=sleep)
        server.inject(429, count=1, headers=True)
        client.get("/priorities")  # a 429 with ratelimit-reset (the rest of the fake's 60 s window), then 200
        assert client.rate_limited_count == 1
        pause = waits.pop(threading.current_thread().name)
        assert len(pause) == 1 and pause[0] >= 1
        # four workers that never saw a 429 each wait for the same pause before their first request
        assert in_threads(4, lambda k: client.get("/teams")) == []
        assert len(waits) == 4
        assert all(len(w) == 1 and abs(w[0] - pause[0]) < 1.5 for w in waits.values()), waits
        assert [r.status for r in settled(server, 6)] == [429, 200, 200, 200, 200, 200]


def walk(client, server, position, write, out_of_time=lambda: False):
    return WindowWalk(client, "/log_entries", "log_entries", [("include[]", "incidents")], write=write,
                      position=position, out_of_time=out_of_time)


def serial_order(server, window) -> list[str]:
    """The window's log entry ids in the API's order, read one page at a time."""
    client = PagerDutyClient(TOKEN, server.url, rate_per_minute=1_000_000, max_in_flight=1)
    ids, offset = [], 0
    while True:
        items, more, _ = client.page("/log_entries", "log_entries", [("since", window[0]), ("until", window[1]),
                                                                     ("time_zone", "UTC")], offset)
        ids += [e["id"] for e in items]
        if not more:
            return ids
        offset += len(items)


def test_pages_answered_out_of_order_are_written_in_offset_order(monkeypatch):
    monkeypatch.setattr("pagerduty_pipeline.paging.WRITE_BATCH_ITEMS", 300)
    with make_server(n_incidents=400, seed=5, latency=0.005, jitter=0.04) as server:
        window = [WEEK["since"], WEEK["until"]]
        expected = serial_order(server, window)
        assert len(expected) > 2000  # 20+ pages, answered in a jittered order
        position = {"windows": [window], "offset": 0, "api_total": 0}
        written: list[list[str]] = []
        offsets: list[int] = []

        def write(items):
            offsets.append(position["offset"])  # the committed position before this batch
            written.append([e["id"] for e in items])

        client = PagerDutyClient(TOKEN, server.url, rate_per_minute=1_000_000, max_in_flight=6)
        assert walk(client, server, position, write).run() is True
        assert [i for batch in written for i in batch] == expected
        # each batch was written from where the previous one left the position
        assert offsets == [sum(map(len, written[:k])) for k in range(len(written))]
        assert position == {"windows": [], "offset": 0, "api_total": len(expected)}
        assert server.max_concurrent > 1 and client.peak_in_flight <= 6


def test_a_failed_request_stops_the_others_and_nothing_past_the_last_commit_is_recorded(monkeypatch):
    monkeypatch.setattr("pagerduty_pipeline.paging.WRITE_BATCH_ITEMS", 200)
    with make_server(n_incidents=400, seed=5, latency=0.01, jitter=0.02) as server:
        window = [WEEK["since"], WEEK["until"]]
        expected = serial_order(server, window)
        position = {"windows": [window], "offset": 0, "api_total": 0}
        written: list[str] = []
        checks = []

        def out_of_time() -> bool:  # once a few pages are in, a 403 hits whichever request comes next
            checks.append(1)
            if len(checks) == 4:
                server.inject(403, count=1, path="/log_entries")
            return False

        client = PagerDutyClient(TOKEN, server.url, rate_per_minute=1_000_000, max_in_flight=6)
        with pytest.raises(PagerDutyError) as exc:
            walk(client, server, position, lambda items: written.extend(e["id"] for e in items),
                 out_of_time).run()
        assert exc.value.status == 403
        failed_offset = int(next(r for r in settled(server, 1) if r.status == 403).query["offset"][0])
        # what was written is the window's beginning, in order, and stops before the failed page; the position
        # says exactly that much
        assert written == expected[:len(written)] and len(written) <= failed_offset
        assert position["windows"] == [window] and position["offset"] == len(written)
        # no worker is left sending requests
        assert client.in_flight == 0
        quiet = len(server.requests)
        time.sleep(0.2)
        assert len(server.requests) == quiet
        # resumed from the position, the walk writes the rest once: nothing lost, nothing twice
        assert walk(client, server, position, lambda items: written.extend(e["id"] for e in items)).run()
        assert written == expected


# -- alert policies on realistic data -----------------------------------------------------------------
def alert_requests(server) -> list[str]:
    return sorted(r.path for r in server.requests if r.path.endswith("/alerts"))


@pytest.mark.parametrize("policy", ["all", "resolved", "off"])
def test_each_alert_policy_stores_and_requests_exactly_its_alerts(pg, secrets_arns, db, policy):
    with make_server(n_incidents=300, seed=21) as server:
        acc = server.account
        env = {**make_env(pg, secrets_arns, server), "PIPELINE_ALERTS": policy}
        out = run_pipeline(env, WEEK)
        assert out["step3"]["success"], out["step3"]
        assert_matches_account(db, acc, policy=policy)
        kept = kept_alerts(acc, policy)
        # one request per incident whose alerts the policy keeps, none for the others
        assert alert_requests(server) == sorted(f"/incidents/{i}/alerts" for i in kept)
        with_alerts = sum(1 for a in acc.alerts.values() if a)
        resolved = sum(1 for i, a in acc.alerts.items() if a and acc.incidents[i]["status"] == "resolved")
        assert len(kept) == {"all": with_alerts, "resolved": resolved, "off": 0}[policy]
        assert 0 < resolved < with_alerts  # the data has both kinds

        # a day later: three open incidents resolve (their alerts with them), a triggered one gets another alert
        server.requests.clear()
        open_ids = [i for i, inc in acc.incidents.items() if inc["status"] != "resolved" and acc.alerts.get(i)]
        grouped_into = next(i for i in open_ids if acc.incidents[i]["status"] == "triggered")
        resolving = [i for i in open_ids if i != grouped_into][:3]
        later = START + timedelta(days=8, hours=1)
        acc.add_grouped_alert(grouped_into, later)
        for inc_id in resolving:
            acc.resolve(inc_id, later + timedelta(minutes=5))
        day9 = {"since": WEEK["until"], "until": (START + timedelta(days=9)).strftime("%Y-%m-%dT%H:%M:%SZ")}
        out = run_pipeline(env, day9, name="exec-2")
        assert out["step3"]["success"], out["step3"]
        assert_matches_account(db, acc, policy=policy)
        changed = {"all": {grouped_into, *resolving}, "resolved": set(resolving), "off": set()}[policy]
        assert alert_requests(server) == sorted(f"/incidents/{i}/alerts" for i in changed)

        # nothing changed since: a re-run of the same day fetches no alerts at all
        server.requests.clear()
        assert run_pipeline(env, day9, name="exec-3")["step3"]["success"]
        assert alert_requests(server) == []
        assert count(db, "alerts") == sum(map(len, kept_alerts(acc, policy).values()))
        assert grouped(db.run("SELECT incident_id, id FROM pagerduty.alerts")).keys() == kept_alerts(acc, policy).keys()
