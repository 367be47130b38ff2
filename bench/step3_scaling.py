"""Benchmark: step 3 (data checks) time against the size of the stored history.

    .venv/bin/python bench/step3_scaling.py                       # history of 10,000 and 200,000 incidents
    .venv/bin/python bench/step3_scaling.py --sizes 10000,50000 --repeats 5

One day (1,500 incidents, ~5 log entries each) is loaded from the local fake PagerDuty into a throwaway
PostgreSQL (fsync off) with the real steps 1 and 2. The history is then padded with SQL alone: copies of
the day's incidents and of their child rows (log entries, assignments, teams, notes, alerts; every table with
a foreign key to incidents) under new ids ('H<k>-…'), with every timestamp shifted k whole days into the past,
before the run's window (reference data is shared). For each history size, fresh executions run steps 1 and 2
for the same day again (everything already stored) and step 3 is timed (median of --repeats); then each check
query is timed on its own, and EXPLAIN (ANALYZE, BUFFERS) summarises the plan of each at the largest size.
Prints figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone

from harness import pipeline_env, start_server  # noqa: E402  (sets the import path and a fake AWS environment)

from moto import mock_aws  # noqa: E402

from pagerduty_pipeline import runs, steps  # noqa: E402
from pagerduty_pipeline.checks import CHECKS, Scope  # noqa: E402
from tests.support.pipeline import envelope as _envelope  # noqa: E402
from tests.support.postgres import throwaway_postgres  # noqa: E402

UTC = timezone.utc
START = datetime(2024, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)


# -- the pipeline ---------------------------------------------------------------------------------------------
def envelope(inp, name, state):
    return _envelope(inp, name, state, state_machine="bench-step3")


def steps_1_2(env: dict, window: dict, name: str) -> dict:
    r1 = steps.start_run(envelope(window, name, "Step1"), env=env)
    if not r1["success"]:
        raise RuntimeError(f"step 1 failed: {r1}")
    state = r1
    while True:
        state = steps.load_incidents(envelope(state, name, "Step2"), env=env)
        if not state["success"]:
            raise RuntimeError(f"step 2 failed: {state}")
        if state["complete"]:
            return state


def step_3(env: dict, state: dict, name: str) -> tuple[float, dict]:
    t0 = time.perf_counter()
    r3 = steps.validate_run(envelope(state, name, "Step3"), env=env)
    return time.perf_counter() - t0, r3


# -- padding the history with SQL -------------------------------------------------------------------------------
def columns(conn, table: str) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in conn.run(
        """SELECT column_name, data_type FROM information_schema.columns
            WHERE table_schema = 'pagerduty' AND table_name = :t AND is_generated = 'NEVER'
              AND coalesce(identity_generation, '') <> 'ALWAYS'
            ORDER BY ordinal_position""", t=table)]


def child_tables(conn) -> list[str]:
    """Tables with a foreign key to pagerduty.incidents (their incident_id follows the copy)."""
    return [r[0] for r in conn.run(
        """SELECT DISTINCT c.conrelid::regclass::text FROM pg_constraint c
            WHERE c.contype = 'f' AND c.confrelid = 'pagerduty.incidents'::regclass ORDER BY 1""")]


def copy_select(conn, table: str, key: str) -> tuple[str, str]:
    """Column list and SELECT list copying `table` (alias t) through pad_map m joined on t.<key> = m.src."""
    cols, exprs = [], []
    for name, dtype in columns(conn, table):
        cols.append(name)
        if table == "incidents" and name == "id":
            exprs.append("m.dst")
        elif table == "incidents" and name == "incident_number":
            exprs.append("t.incident_number + m.num_offset")
        elif name == "incident_id" and key == "incident_id":
            exprs.append("m.dst")
        elif name == "id":
            exprs.append("m.prefix || t.id")
        elif dtype == "timestamp with time zone":
            exprs.append(f"t.{name} - m.shift")
        else:
            exprs.append(f"t.{name}")
    return ", ".join(cols), ", ".join(exprs)


class History:
    """The day's incidents as loaded (the template) and the copies made so far."""

    def __init__(self, admin, since: datetime, until: datetime):
        self.c = admin
        self.c.run("SET session_replication_role = replica")  # no FK triggers for the bulk copies
        self.c.run("SET maintenance_work_mem = '256MB'")
        self.c.run("""CREATE TEMP TABLE pad_src AS
                      SELECT id, row_number() OVER (ORDER BY id) AS rn FROM pagerduty.incidents""")
        self.template = self.c.run("SELECT count(*) FROM pad_src")[0][0]
        self.stride = (self.c.run("SELECT coalesce(max(incident_number), 0) FROM pagerduty.incidents")[0][0] or 0) + 1
        self.children = child_tables(self.c)
        # latest data timestamp of the template rows: copy k is shifted base + k - 1 whole days back, all before
        # since (columns the loader stamps at load time, e.g. note_fetched_at, are shifted too but not data)
        latest = None
        for table in ["incidents"] + [t.split(".")[-1] for t in self.children]:
            for name, dtype in columns(self.c, table):
                if dtype == "timestamp with time zone":
                    top = self.c.run(f"SELECT max({name}) FROM pagerduty.{table}")[0][0]
                    if top is not None and top < datetime.now(UTC) - timedelta(hours=1):
                        latest = top if latest is None else max(latest, top)
        self.base_days = max(1, int((latest - since) / DAY) + 1) if latest else 1
        self.since, self.until = since, until
        self.copies = 0  # incidents copied so far

    def pad_to(self, n: int) -> dict:
        """Copy template incidents (with their child rows) until n incidents are stored."""
        need = n - self.template
        if need <= self.copies:
            return {"seconds": 0.0, "added": 0}
        t0 = time.perf_counter()
        c = self.c
        c.run("DROP TABLE IF EXISTS pad_map")
        c.run("""CREATE TEMP TABLE pad_map AS
                 SELECT s.id AS src, 'H' || k || '-' || s.id AS dst, 'H' || k || '-' AS prefix,
                        make_interval(days => CAST(:base AS int) + k - 1) AS shift,
                        k * CAST(:stride AS bigint) AS num_offset
                   FROM generate_series(CAST(:k0 AS int), CAST(:k1 AS int)) AS k
                   CROSS JOIN pad_src s
                  WHERE (k - 1) * CAST(:tpl AS bigint) + s.rn > CAST(:done AS bigint)
                    AND (k - 1) * CAST(:tpl AS bigint) + s.rn <= CAST(:need AS bigint)""",
              base=self.base_days, stride=self.stride, k0=self.copies // self.template + 1,
              k1=-(-need // self.template), tpl=self.template, done=self.copies, need=need)
        c.run("CREATE INDEX ON pad_map (src)")
        c.run("ANALYZE pad_map")
        rows = {}
        c.run("BEGIN")
        cols, exprs = copy_select(c, "incidents", "id")
        c.run(f"INSERT INTO pagerduty.incidents ({cols}) SELECT {exprs} "
              f"FROM pad_map m JOIN pagerduty.incidents t ON t.id = m.src")
        rows["incidents"] = c.row_count
        for table in self.children:
            short = table.split(".")[-1]
            cols, exprs = copy_select(c, short, "incident_id")
            c.run(f"INSERT INTO pagerduty.{short} ({cols}) SELECT {exprs} "
                  f"FROM pad_map m JOIN pagerduty.{short} t ON t.incident_id = m.src")
            rows[short] = c.row_count
        c.run("COMMIT")
        insert_s = time.perf_counter() - t0
        c.run("RESET session_replication_role")
        for table in ["incidents"] + [t.split(".")[-1] for t in self.children]:
            c.run(f"VACUUM (ANALYZE) pagerduty.{table}")
        c.run("SET session_replication_role = replica")
        self.copies = need
        return {"seconds": time.perf_counter() - t0, "insert_seconds": insert_s, "rows": rows}


# -- timing the checks one by one, and their plans ---------------------------------------------------------------
class Recorder:
    """A pg8000 connection stand-in that remembers the statements a check runs."""

    def __init__(self, conn):
        self.conn, self.statements = conn, []

    def run(self, sql, **params):
        self.statements.append((sql, params))
        return self.conn.run(sql, **params)


def scope_of_run(conn, run_id: int, filters: dict) -> Scope:
    windows = runs.loaded_windows(conn, run_id)
    return Scope(windows[0]["since"], windows[-1]["until"], filters, sum(w["incidents"] for w in windows),
                 sum(w["log_entries"] for w in windows), sum(w["filtered_out"] for w in windows))


def time_checks(conn, scope: Scope, repeats: int) -> dict:
    out = {}
    for check in CHECKS:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            check.evaluate(conn, scope)
            times.append(time.perf_counter() - t0)
        out[check.name] = statistics.median(times)
    return out


def plan_summary(conn, check, scope: Scope, text_out=None) -> str:
    """One line: execution time, buffers, JIT time and each scan node (relation, index, rows kept / removed)."""
    rec = Recorder(conn)
    check.evaluate(rec, scope)
    pieces, total_ms, jit_ms, hit, read = [], 0.0, 0.0, 0, 0
    for sql, params in rec.statements:
        plan = conn.run("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, **params)[0][0]
        if isinstance(plan, str):
            plan = json.loads(plan)
        top = plan[0]
        if text_out is not None:
            text_out.write(f"===== {check.name}\n{sql}\n{json.dumps(params, default=str)}\n")
            text_out.write("\n".join(r[0] for r in conn.run("EXPLAIN (ANALYZE, BUFFERS) " + sql, **params)) + "\n\n")
        total_ms += top["Execution Time"]
        jit_ms += (top.get("JIT") or {}).get("Timing", {}).get("Total", 0.0)
        hit += top["Plan"].get("Shared Hit Blocks", 0)
        read += top["Plan"].get("Shared Read Blocks", 0)

        def walk(node):
            rel = node.get("Relation Name")
            if rel:
                how = node["Node Type"].replace(" Scan", "").replace("Index Only", "IdxOnly").replace("Index", "Idx")
                idx = node.get("Index Name")
                loops = node.get("Actual Loops", 1)
                kept = node.get("Actual Rows", 0) * loops
                removed = node.get("Rows Removed by Filter", 0) * loops
                what = "never run" if loops == 0 else f"{kept:,.0f}" + (f"/-{removed:,.0f}" if removed else "")
                pieces.append(f"{how} {rel}{'(' + idx + ')' if idx else ''} {what}")
            for child in node.get("Plans", []):
                walk(child)
        walk(top["Plan"])
    return (f"{total_ms:7.1f} ms{f' (JIT {jit_ms:.0f} ms)' if jit_ms else ''}, buffers {hit + read:,} "
            f"({read:,} not in shared_buffers) | " + "; ".join(pieces))


# -- main ----------------------------------------------------------------------------------------------------------
def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up PostgreSQL and the server on SIGTERM
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,200000", help="stored incidents to measure at (comma-separated)")
    ap.add_argument("--day-incidents", type=int, default=1500, help="incidents in the run's one-day window")
    ap.add_argument("--repeats", type=int, default=3, help="step 3 runs per size (the median is printed)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--plans", metavar="FILE", help="also write each check's SQL and full plan at the largest size")
    args = ap.parse_args()
    sizes = sorted(int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip())
    began = time.perf_counter()
    cores = os.cpu_count() or 1
    window = {"since": START.strftime("%Y-%m-%dT%H:%M:%SZ"), "until": (START + DAY).strftime("%Y-%m-%dT%H:%M:%SZ")}
    proc, url = start_server(args.day_incidents, start=START, days=1, seed=args.seed)
    try:
        # a larger max_wal_size only spares the padding checkpoints; step 3 reads, it writes little
        with throwaway_postgres(extra_settings={"max_wal_size": "4GB"}) as pg, mock_aws():
            env = pipeline_env(pg, url)
            t0 = time.perf_counter()
            state = steps_1_2(env, window, "initial")
            first3, r3 = step_3(env, state, "initial")
            if not r3.get("success"):
                raise RuntimeError(f"step 3 of the initial load failed: {r3}")
            conn = pg.connect()
            version = conn.run("SHOW server_version")[0][0]
            print(f"step 3 scaling: run window {window['since']} .. {window['until']} "
                  f"({args.day_incidents:,} incidents generated), {cores} cores, PostgreSQL {version} (fsync off); "
                  f"initial load {time.perf_counter() - t0:.1f}s (its step 3 {first3:.2f}s)", flush=True)
            admin = pg.admin_connect()
            history = History(admin, START, START + DAY)
            print(f"template: {history.template:,} incidents; copies go {history.base_days}+ days before the window; "
                  f"child tables: {', '.join(t.split('.')[-1] for t in history.children)}", flush=True)
            results, per_check, plans = [], {}, {}
            for n in [history.template] + [s for s in sizes if s > history.template]:
                pad = history.pad_to(n)
                if pad.get("rows"):
                    print(f"  padded to {n:,}: {pad['seconds']:.1f}s ({pad['insert_seconds']:.1f}s inserts) "
                          + ", ".join(f"{k} +{v:,}" for k, v in pad["rows"].items()), flush=True)
                times, checks_passed, steps12 = [], [], []
                for r in range(args.repeats):
                    name = f"step3-{n}-{r}"
                    t = time.perf_counter()
                    state = steps_1_2(env, window, name)
                    steps12.append(time.perf_counter() - t)
                    secs, r3 = step_3(env, state, name)
                    times.append(secs)
                    got = r3.get("checks") or {}
                    checks_passed.append(f"{sum(1 for v in got.values() if v)}/{len(got)}"
                                         + ("" if r3.get("success") else f" ({r3.get('error')})"))
                stored = conn.run("SELECT count(*) FROM pagerduty.incidents")[0][0]
                entries = conn.run("SELECT count(*) FROM pagerduty.log_entries")[0][0]
                in_window = conn.run("SELECT count(*) FROM pagerduty.incidents WHERE created_at >= :a AND created_at < :b",
                                     a=START, b=START + DAY)[0][0]
                scope = scope_of_run(conn, state["run_id"], state.get("filters") or {})
                per_check[n] = time_checks(conn, scope, args.repeats)
                results.append({"n": stored, "entries": entries, "window": in_window,
                                "step3": statistics.median(times), "all": times,
                                "passed": checks_passed[-1] if len(set(checks_passed)) == 1
                                else "/".join(checks_passed), "steps12": statistics.median(steps12)})
                print(f"  measured at {stored:,} stored incidents: step 3 runs {', '.join(f'{x:.3f}' for x in times)}s "
                      f"(steps 1+2 median {statistics.median(steps12):.1f}s)", flush=True)
                if n == max([history.template] + sizes):
                    with open(args.plans, "w") if args.plans else contextlib.nullcontext() as out:
                        plans = {c.name: plan_summary(conn, c, scope, out) for c in CHECKS}
            conn.close()
            admin.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    print(f"\nStep 3 time vs stored history ({cores} cores, load {os.getloadavg()[0]:.1f}; "
          f"median of {args.repeats} step 3 runs, each after fresh steps 1+2 for the same day)")
    head = ("stored incidents (history)", "incidents in run's window", "log entries stored",
            f"step 3 s (median of {args.repeats})", "checks passed")
    print(" | ".join(head))
    for r in results:
        cells = (f"{r['n']:,}", f"{r['window']:,}", f"{r['entries']:,}", f"{r['step3']:.3f}", r["passed"])
        print(" | ".join(c.rjust(len(h)) for c, h in zip(cells, head)))
    print("\nPer check, ms (median of each query run alone, same run's scope):")
    names = [c.name for c in CHECKS]
    width = max(len(x) for x in names)
    keys = list(per_check)
    ref = keys[1] if len(keys) > 2 else keys[0]  # the smallest requested size (the day alone is keys[0])
    print("check".ljust(width) + "".join(f"{r['n']:>12,}" for r in results)
          + f"   growth {keys[-1]:,} / {ref:,}")
    growing = []
    for name in names:
        ms = [per_check[n][name] * 1000 for n in keys]
        ratio = per_check[keys[-1]][name] / max(per_check[ref][name], 1e-9)
        print(name.ljust(width) + "".join(f"{m:12.1f}" for m in ms) + f"   x{ratio:.1f}")
        if ratio > 3 and per_check[keys[-1]][name] > 0.05:
            growing.append(f"{name} (x{ratio:.0f}, {per_check[keys[-1]][name]:.2f}s)")
    print("grows with history: " + (", ".join(growing) if growing else "none (every check within x3 or under 50 ms)"))
    if plans:
        print(f"\nEXPLAIN (ANALYZE, BUFFERS) at {results[-1]['n']:,} stored incidents "
              "(scan nodes: relation(index) rows kept/-removed by filter):")
        for name in sorted(plans, key=lambda k: -per_check[max(per_check)][k]):
            print(f"  {name.ljust(width)} {plans[name]}")
    print(f"\nscript wall time {time.perf_counter() - began:.0f}s")


if __name__ == "__main__":
    main()
