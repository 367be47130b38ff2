"""Benchmark: a month of incidents loaded from a distant, rate-limited PagerDuty (issue 11).

    .venv/bin/python bench/api_pace.py                        # N = 2,000 and 10,000 at 0, 50, 150, 300 ms
    .venv/bin/python bench/api_pace.py --sizes 2000 --latencies 150 --policy all

Each variant is a fresh local PagerDuty (the realistic mix: alerts on ~97 % of incidents, notes on ~15 %) in its
own process, answering after the given latency (±10 % jitter) and enforcing 960 requests a minute with 429s, and
a throwaway PostgreSQL; the real steps run as the state machine runs them (step 2 invoked again while it returns
its cursor; 10-minute Lambda invocations). Variants run side by side (``--parallel``): each has its own key and
server, and the loader waits on the API, not on the CPU. Prints one table; nothing is asserted.

Columns: requests made; the minimum for the alert policy (pages per daily chunk, one notes request per annotated
incident, one alerts request per incident the policy fetches, step 1's listings and count); wall time of the
three steps; the rate-limit minimum (requests ÷ configured rate); achieved requests a minute; 429s received;
the projected time for a 10,000-incident month at this achieved rate and request count per incident; incidents
a second end to end and into PostgreSQL (incidents over the step's database time).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

from harness import ROOT, pipeline_env, start_server  # noqa: E402  (sets the import path and a fake AWS environment)

UTC = timezone.utc
START = datetime(2024, 3, 1, tzinfo=UTC)
DAYS = 30
LAMBDA_MS = 600_000
SEED = 42


def minimum_requests(n: int, policy: str) -> dict:
    """The fewest requests that load the month under ``policy``, counted from the account itself."""
    from pagerduty_pipeline.schema import DIMENSIONS
    from tests.support.fake_pagerduty import generate_account

    acc = generate_account(n, SEED, START, START + timedelta(days=DAYS))
    per_day_inc = Counter(i["created_at"][:10] for i in acc.incidents.values())
    per_day_log = Counter(e["created_at"][:10] for e in acc.log_entries.values())
    days = [(START + timedelta(days=d)).strftime("%Y-%m-%d") for d in range(DAYS + 1)]  # the daily chunks
    # each chunk's lists in pages of 100; an empty list still costs its first page
    pages = sum(max(1, math.ceil(per_day_inc[d] / 100)) + max(1, math.ceil(per_day_log[d] / 100)) for d in days)
    notes = sum(1 for i in acc.incidents if acc.notes.get(i))
    alerts = sum(1 for i, a in acc.alerts.items() if a and (
        policy == "all" or (policy == "resolved" and acc.incidents[i]["status"] == "resolved")))
    step1 = sum(max(1, math.ceil(len(getattr(acc, kind)) / 100)) for kind in DIMENSIONS) + 1
    with_alerts = sum(1 for a in acc.alerts.values() if a) / len(acc.incidents)
    return {"total": pages + notes + alerts + step1, "pages": pages, "notes": notes,
            "alerts": alerts, "step1": step1, "alert_share": with_alerts, "log_entries": len(acc.log_entries)}


def one_variant(n: int, latency_ms: float, policy: str, rate: int, in_flight: int) -> dict:
    """Run one variant in this process; returns its figures."""
    from moto import mock_aws

    from pagerduty_pipeline import steps
    from tests.support.pipeline import envelope
    from tests.support.postgres import throwaway_postgres

    latency = latency_ms / 1000
    extra = ("--rate-limit", "960", "--enforce-rate-limit", "--latency", f"{latency * 0.9:.4f}",
             "--jitter", f"{latency * 0.2:.4f}")
    proc, url = start_server(n, start=START, days=DAYS, seed=SEED, extra=extra)
    window = {"since": START.strftime("%Y-%m-%dT%H:%M:%SZ"),
              "until": (START + timedelta(days=DAYS + 1)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    try:
        with throwaway_postgres() as pg, mock_aws():
            env = pipeline_env(pg, url, PAGERDUTY_RATE_LIMIT_PER_MINUTE=str(rate),
                               PAGERDUTY_MAX_IN_FLIGHT=str(in_flight), PIPELINE_ALERTS=policy)
            started = datetime.now(UTC)
            t0 = time.perf_counter()
            name = f"bench-{n}-{latency_ms:g}"

            def wrap(inp, state):
                return envelope(inp, name, state, "bench", started=started.isoformat(), timeout_seconds=2700)

            r1 = steps.start_run(wrap(window, "Step1"), Context(), env=env)
            assert r1["success"], r1
            state, invocations = r1, 0
            while True:
                state = steps.load_incidents(wrap(state, "Step2"), Context(), env=env)
                invocations += 1
                assert state["success"], state
                if state["complete"]:
                    break
            r3 = steps.validate_run(wrap(state, "Step3"), Context(), env=env)
            wall = time.perf_counter() - t0
            conn = pg.connect()
            incidents = conn.run("SELECT count(*) FROM pagerduty.incidents")[0][0]
            conn.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    c1, c2 = r1["counts"], state["counts"]
    return {"n": n, "latency_ms": latency_ms, "policy": policy, "rate": rate, "in_flight": in_flight,
            "requests": c1["api_requests"] + c2["api_requests"],
            "rate_limited": c1.get("api_rate_limited", 0) + c2.get("api_rate_limited", 0),
            "retries": c2.get("api_retries", 0), "wall": wall, "invocations": invocations,
            "incidents": incidents, "db_ms": c2.get("db_ms", 0), "partial": state.get("partial"),
            "validated": r3["success"]}


class Context:
    """A Lambda context: each invocation has the function's 10 minutes."""

    def __init__(self) -> None:
        self.deadline = time.monotonic() + LAMBDA_MS / 1000

    def get_remaining_time_in_millis(self) -> int:
        return int((self.deadline - time.monotonic()) * 1000)


def spawn(n: int, latency_ms: float, args) -> dict:
    """One variant in a child process (its own GIL, server and PostgreSQL)."""
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", str(n), str(latency_ms),
                          "--policy", args.policy, "--rate", str(args.rate), "--in-flight", str(args.in_flight)],
                         cwd=ROOT, capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        raise RuntimeError(f"variant N={n} {latency_ms} ms failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2_000, 10_000])
    ap.add_argument("--latencies", type=float, nargs="+", default=[0, 50, 150, 300], help="milliseconds")
    ap.add_argument("--policy", choices=["all", "resolved", "off"], default="resolved")
    ap.add_argument("--rate", type=int, default=900, help="PAGERDUTY_RATE_LIMIT_PER_MINUTE (900)")
    ap.add_argument("--in-flight", type=int, default=8, help="PAGERDUTY_MAX_IN_FLIGHT (8)")
    ap.add_argument("--parallel", type=int, default=8, help="variants at once (8)")
    ap.add_argument("--one", nargs=2, metavar=("N", "LATENCY_MS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_variant(int(args.one[0]), float(args.one[1]), args.policy, args.rate,
                                     args.in_flight)), flush=True)
        return
    variants = [(n, lat) for n in args.sizes for lat in args.latencies]
    print(f"{len(variants)} variants, {min(args.parallel, len(variants))} at a time; alert policy {args.policy}, "
          f"client {args.rate}/min with {args.in_flight} in flight, server 960/min enforced; month of {DAYS} days",
          flush=True)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        futures = {v: pool.submit(spawn, *v, args) for v in variants}
        minima = {n: minimum_requests(n, args.policy) for n in args.sizes}
        results = {v: f.result() for v, f in futures.items()}
    for n, m in minima.items():
        print(f"N={n:,}: {m['alert_share']:.1%} of incidents have alerts, {m['log_entries']:,} log entries; minimum "
              f"{m['total']:,} requests = {m['pages']:,} pages + {m['notes']:,} notes + {m['alerts']:,} alerts "
              f"+ {m['step1']} step 1")
    head = (f"{'N':>7} {'latency':>8} {'requests':>9} {'minimum':>8} {'excess':>7} {'wall':>8} {'rate min':>9} "
            f"{'wall/min':>8} {'req/min':>8} {'429s':>5} {'month@10k':>10} {'inc/s':>7} {'DB inc/s':>8} {'calls':>5} "
            f"{'ok':>3}")
    print(head)
    print("-" * len(head))
    for (n, lat), r in results.items():
        floor = r["requests"] / args.rate * 60
        month = r["requests"] / n * 10_000 / (r["requests"] / r["wall"] * 60)
        print(f"{n:>7,} {lat:>6g}ms {r['requests']:>9,} {minima[n]['total']:>8,} "
              f"{(r['requests'] - minima[n]['total']) / minima[n]['total']:>+7.1%} {r['wall']:>7.1f}s "
              f"{floor:>8.1f}s {r['wall'] / floor:>8.3f} {r['requests'] / r['wall'] * 60:>8.0f} "
              f"{r['rate_limited']:>5} {month:>8.1f}m {r['incidents'] / r['wall']:>7.1f} "
              f"{r['incidents'] / max(r['db_ms'] / 1000, 1e-9):>8,.0f} {r['invocations']:>5} "
              f"{'yes' if r['validated'] else 'NO':>3}")
    print(f"(all variants in {time.perf_counter() - t0:.0f} s; 'month@10k' = a 10,000-incident month at this "
          f"achieved rate and request count per incident; 'inc/s' end to end; 'DB inc/s' = incidents over the time spent "
          f"writing to PostgreSQL; 'calls' = step 2 invocations)")


if __name__ == "__main__":
    main()
