"""Benchmark: load N incidents (~5 log entries each) from the local fake PagerDuty into a throwaway
PostgreSQL with the real pipeline steps, and compare with a naive row-by-row loader.

    .venv/bin/python bench/pipeline_load.py                 # N = 10,000 and 50,000
    .venv/bin/python bench/pipeline_load.py --sizes 2000 --durable

The fake server runs in a separate process (pre-serialized, no rate limit) so that it does not
compete with the loader for the GIL. Prints figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from datetime import datetime, timedelta, timezone

from harness import TOKEN, pipeline_env, start_server  # noqa: E402  (sets the import path and a fake AWS environment)

from moto import mock_aws  # noqa: E402

from pagerduty_pipeline import steps  # noqa: E402
from pagerduty_pipeline.client import PagerDutyClient  # noqa: E402
from pagerduty_pipeline.db import _nodelay  # noqa: E402
from pagerduty_pipeline.loaders import incident_row, log_entry_row  # noqa: E402
from pagerduty_pipeline.migrations import migrate  # noqa: E402
from pagerduty_pipeline.paging import split_window  # noqa: E402
from pagerduty_pipeline.schema import DIMENSION_ENDPOINTS, DIMENSIONS  # noqa: E402
from pagerduty_pipeline.step_load import INCIDENT_INCLUDES  # noqa: E402
from tests.support.pipeline import envelope as _envelope, row_counts  # noqa: E402
from tests.support.postgres import drop_pipeline_schemas, throwaway_postgres  # noqa: E402

UTC = timezone.utc
START = datetime(2024, 3, 1, tzinfo=UTC)


def envelope(inp, name, state):
    return _envelope(inp, name, state, state_machine="bench")


def cpu_seconds(pids, children_of_first: bool = False) -> float:
    """user+system CPU seconds of the given processes (Linux /proc); with children_of_first, also
    the CPU of the first process's exited (reaped) children, e.g. closed PostgreSQL backends."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for k, pid in enumerate(pids):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            if children_of_first and k == 0:
                total += (int(fields[13]) + int(fields[14])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def postgres_pids(datadir: str) -> list[int]:
    with open(os.path.join(datadir, "postmaster.pid")) as fh:
        master = int(fh.readline())
    pids = [master]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == master:
                        pids.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return pids


CPU: dict = {}


def run_pipeline(env: dict, window: dict, name: str, pg=None, server_pid=None) -> dict:
    r1 = steps.start_run(envelope(window, name, "Step1"), env=env)
    assert r1["success"], r1
    if pg is not None:
        pg_pids = postgres_pids(pg.datadir)
        CPU["before"] = (time.process_time(), cpu_seconds(pg_pids, True), cpu_seconds([server_pid]))
    t0 = time.perf_counter()
    state, calls = r1, 0
    while True:
        state = steps.load_incidents(envelope(state, name, "Step2"), env=env)
        calls += 1
        assert state["success"], state
        if state["complete"]:
            break
    elapsed = time.perf_counter() - t0
    if pg is not None:
        b = CPU["before"]
        pg_pids = postgres_pids(pg.datadir)
        CPU["step2"] = (time.process_time() - b[0], cpu_seconds(pg_pids, True) - b[1], cpu_seconds([server_pid]) - b[2])
    r3 = steps.validate_run(envelope(state, name, "Step3"), env=env)
    return {"step1": r1, "step2": state, "step3": r3, "seconds": elapsed, "invocations": calls}


def iter_window(client, path, key, params, window, stats):
    """Naive baseline's fetch: same paging and window splitting as the pipeline."""
    pending = [window]
    while pending:
        since, until = pending.pop(0)
        offset = 0
        while True:
            items, more, total = client.page(path, key, [("since", since), ("until", until),
                                                         ("time_zone", "UTC")] + params, offset, 100,
                                             total=offset == 0)
            if offset == 0 and total is not None and total > 10_000:
                pieces = split_window([since, until], math.ceil(total / 8000))
                pending[:0] = pieces
                break
            yield from items
            if not more:
                break
            offset += len(items)


def naive_load(pg, url: str, window: dict) -> dict:
    """One INSERT per row, autocommit; the same HTTP fetching as the pipeline (no notes/alerts)."""
    conn = pg.connect()
    _nodelay(conn)  # same socket settings as the pipeline's connections
    drop_pipeline_schemas(conn)
    migrate(conn)
    client = PagerDutyClient(TOKEN, url, rate_per_minute=10 ** 9)
    for kind in DIMENSIONS:  # reference data (not timed)
        for o in client.list_all(DIMENSION_ENDPOINTS[kind][0], kind)[0]:
            conn.run(f"INSERT INTO pagerduty.{kind} (id, name, raw) VALUES (:i, :n, CAST(:r AS jsonb)) "
                     "ON CONFLICT DO NOTHING", i=o["id"], n=o.get("name"), r=json.dumps(o))
    stats = {"rows": 0, "incidents": 0, "db": 0.0}
    users = {r[0] for r in conn.run("SELECT id FROM pagerduty.users")}
    t0 = time.perf_counter()

    def ins(sql, **params):
        t = time.perf_counter()
        conn.run(sql, **params)
        stats["db"] += time.perf_counter() - t
        stats["rows"] += 1

    inc_params = [("sort_by", "incident_number:asc")] + [("include[]", i) for i in INCIDENT_INCLUDES]
    for inc in iter_window(client, "/incidents", "incidents", inc_params, [window["since"], window["until"]], stats):
        r = incident_row(inc)
        ins("INSERT INTO pagerduty.incidents (id, incident_number, title, status, urgency, service_id, "
            "escalation_policy_id, priority_id, created_at, updated_at, resolved_at, last_status_change_at, "
            "incident_key, raw) VALUES (:id, :incident_number, :title, :status, :urgency, :service_id, "
            ":escalation_policy_id, :priority_id, CAST(:created_at AS timestamptz), CAST(:updated_at AS timestamptz), "
            "CAST(:resolved_at AS timestamptz), CAST(:last_status_change_at AS timestamptz), :incident_key, "
            "CAST(:raw AS jsonb)) ON CONFLICT (id) DO NOTHING", **{**r, "raw": json.dumps(r["raw"])})
        stats["incidents"] += 1
        for a in inc.get("assignments") or []:
            uid = a["assignee"]["id"]
            if uid not in users:
                ins("INSERT INTO pagerduty.users (id, name, is_stub) VALUES (:i, :n, true) ON CONFLICT DO NOTHING",
                    i=uid, n=a["assignee"].get("summary"))
                users.add(uid)
            ins("INSERT INTO pagerduty.incident_assignments (incident_id, user_id, assigned_at) "
                "VALUES (:i, :u, CAST(:a AS timestamptz)) ON CONFLICT DO NOTHING", i=inc["id"], u=uid, a=a.get("at"))
        for t in inc.get("teams") or []:
            ins("INSERT INTO pagerduty.incident_teams (incident_id, team_id) VALUES (:i, :t) ON CONFLICT DO NOTHING",
                i=inc["id"], t=t["id"])
    for entry in iter_window(client, "/log_entries", "log_entries", [("include[]", "incidents")],
                             [window["since"], window["until"]], stats):
        r = log_entry_row(entry, entry["incident"]["id"])
        ins("INSERT INTO pagerduty.log_entries (id, incident_id, type, created_at, agent_type, agent_id, "
            "channel_type, raw) VALUES (:id, :incident_id, :type, CAST(:created_at AS timestamptz), :agent_type, "
            ":agent_id, :channel_type, CAST(:raw AS jsonb)) ON CONFLICT DO NOTHING", **{**r, "raw": json.dumps(r["raw"])})
    elapsed = time.perf_counter() - t0
    client.close()
    conn.close()
    return {"seconds": elapsed, "db_seconds": stats["db"], "rows": stats["rows"], "incidents": stats["incidents"],
            "requests": client.request_count}


def bench(n: int, durable: bool, baseline: bool, alerts: str = "resolved", in_flight: int = 8) -> None:
    days = 7
    window = {"since": START.strftime("%Y-%m-%dT%H:%M:%SZ"),
              "until": (START + timedelta(days=days + 1)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    t = time.perf_counter()
    proc, url = start_server(n, start=START, days=days)
    print(f"\n=== N = {n:,} incidents (fake server ready in {time.perf_counter() - t:.1f}s, "
          f"PostgreSQL {'durable' if durable else 'fsync=off'}) ===", flush=True)
    try:
        with throwaway_postgres(durable=durable) as pg, mock_aws():
            env = pipeline_env(pg, url, PIPELINE_ALERTS=alerts, PAGERDUTY_MAX_IN_FLIGHT=str(in_flight))
            res = run_pipeline(env, window, f"bench-{n}", pg, proc.pid)
            conn = pg.connect()
            c2 = res["step2"]["counts"]
            rows = sum(row_counts(conn).values())
            with_notes = conn.run("SELECT count(DISTINCT incident_id) FROM pagerduty.notes")[0][0]
            with_alerts = conn.run("SELECT count(DISTINCT incident_id) FROM pagerduty.alerts")[0][0]
            dims = res["step1"]["counts"]["dimensions"]
            min_step1 = sum(max(1, math.ceil(v / 100)) for v in dims.values()) + 1
            min_step2 = (math.ceil(c2["incidents_api_total"] / 100) + math.ceil(c2["log_entries_api_total"] / 100)
                         + with_notes + with_alerts)
            made = res["step1"]["counts"]["api_requests"] + c2["api_requests"]
            minimum = min_step1 + min_step2
            secs = res["seconds"]
            incidents = conn.run("SELECT count(*) FROM pagerduty.incidents")[0][0]
            entries = conn.run("SELECT count(*) FROM pagerduty.log_entries")[0][0]
            print(f"pipeline  : step 2 {secs:6.2f}s for {incidents:,} incidents, {entries:,} log entries, "
                  f"{rows:,} rows in all data tables ({c2['rows_written']:,} row writes)")
            print(f"            {incidents / secs:,.0f} incidents/s, {c2['rows_written'] / secs:,.0f} rows/s end to end "
                  f"(HTTP + JSON + DB); DB time {c2['db_ms'] / 1000:.2f}s → "
                  f"{c2['rows_written'] / max(c2['db_ms'] / 1000, 1e-9):,.0f} rows/s, "
                  f"{incidents / max(c2['db_ms'] / 1000, 1e-9):,.0f} incidents/s in the database")
            print(f"            API requests {made:,} vs page-count minimum {minimum:,} "
                  f"(+{(made - minimum) / minimum * 100:.2f} %; step 2 {c2['api_requests']:,} vs {min_step2:,}; "
                  f"{c2.get('incidents_window_splits', 0)} + {c2.get('log_entries_window_splits', 0)} window splits; "
                  f"{with_notes:,} note + {with_alerts:,} alert fetches included); step 3 success="
                  f"{res['step3']['success']}")
            print(f"            phases: incidents {c2.get('incidents_ms', 0) / 1000:.1f}s, log entries "
                  f"{c2.get('log_entries_ms', 0) / 1000:.1f}s, notes+alerts {c2.get('details_ms', 0) / 1000:.1f}s")
            cpu = CPU["step2"]
            cores = os.cpu_count() or 1
            print(f"            CPU during step 2: loader process {cpu[0]:.1f}s, PostgreSQL {cpu[1]:.1f}s, "
                  f"fake server {cpu[2]:.1f}s (wall {secs:.1f}s, {cores} cores; load {os.getloadavg()[0]:.1f})")
            # what this machine could do at best: all CPU work spread perfectly over every core
            floor = sum(cpu) / cores
            print(f"            CPU-bound ceiling here: {incidents / floor:,.0f} incidents/s (all {sum(cpu):.1f} CPU-s "
                  f"spread over {cores} cores); PostgreSQL alone on one core: {incidents / max(cpu[1], 1e-9):,.0f}/s")
            paged = (c2.get("incidents_ms", 0) + c2.get("log_entries_ms", 0)) / 1000
            details = c2.get("details_ms", 0) / 1000
            print(f"            incidents + log entries phases: {incidents / max(paged, 1e-9):,.0f} incidents/s; "
                  f"notes+alerts phase: {(with_notes + with_alerts) / max(details, 1e-9):,.0f} requests/s")
            conn.close()
            if baseline:
                nv = naive_load(pg, url, window)
                print(f"naive     : {nv['seconds']:6.2f}s for {nv['incidents']:,} incidents, {nv['rows']:,} rows "
                      f"(one INSERT per row, autocommit; no notes/alerts)")
                print(f"            {nv['incidents'] / nv['seconds']:,.0f} incidents/s, "
                      f"{nv['rows'] / nv['seconds']:,.0f} rows/s end to end; DB time {nv['db_seconds']:.2f}s → "
                      f"{nv['rows'] / nv['db_seconds']:,.0f} rows/s in the database")
                print(f"speed-up  : {nv['seconds'] / secs:.1f}x end to end, "
                      f"{(nv['db_seconds'] / nv['rows']) / ((c2['db_ms'] / 1000) / c2['rows_written']):.1f}x per row in "
                      f"the database")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> None:
    # turn SIGTERM into SystemExit so that the throwaway PostgreSQL and the server process are cleaned up
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000])
    ap.add_argument("--durable", action="store_true", help="keep fsync/synchronous_commit on")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--alerts", choices=["all", "resolved", "off"], default="resolved", help="PIPELINE_ALERTS")
    ap.add_argument("--in-flight", type=int, default=8, help="PAGERDUTY_MAX_IN_FLIGHT")
    args = ap.parse_args()
    for n in args.sizes:
        bench(n, args.durable, not args.no_baseline, args.alerts, args.in_flight)


if __name__ == "__main__":
    main()
