"""The workflow, run for real on this machine: synthesize, validate, then execute the synthesized state
machine in moto's ASL interpreter with the real Lambda handlers against PostgreSQL and PagerDuty.

    python -m tools.local_run                     # dev stack, throwaway PostgreSQL, sample PagerDuty account
    python -m tools.local_run --all --outdir cdktf.out    # what `make run` does: every environment synthesized
    PAGERDUTY_TOKEN=... [PAGERDUTY_API_URL=...]   # read that account instead of the sample one
    DATABASE_URL=postgresql://user:pw@host:5432/db  # write to that database instead of a throwaway one

Prints the states taken with their timings, each step's result, the rows per table, the data checks, the
CloudWatch metrics the steps emitted (EMF lines, read back with the layer's parser), where it wrote the incident
report (tools/report.py, from the analytics views, before the database stops) and a final `VERDICT:` line.
Exit codes: 0 succeeded, 1 the workflow failed, 2 setup failed, 130 interrupted.
Everything it starts (PostgreSQL, the PagerDuty server, temporary folders) is stopped and removed on the
way out, also on Ctrl-C, SIGTERM or failure. See docs/local-run.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "layer" / "python"):  # the layer package, as in the Lambda runtime
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from pagerduty_pipeline.metrics import CONTRACT, EmfError, MetricRecord, parse_lines  # noqa: E402
from tests.support.fake_pagerduty import FakePagerDuty, generate_account, iso  # noqa: E402
from tests.support.lambda_runtime import Database, LocalWorkflow, SynthesizedWorkflow, WorkflowRun  # noqa: E402
from tests.support.pipeline import DATA_TABLES, row_count  # noqa: E402
from tests.support.postgres import throwaway_postgres  # noqa: E402
from tests.support.synth import run_main  # noqa: E402
from tools.report import (  # noqa: E402
    DEFAULT_OUT as REPORT_OUT, DEFAULT_WEEKS as REPORT_WEEKS, REPORT_NAME, ReportError, write_report,
)
from tools.terraform import terraform_path  # noqa: E402
from tools.validate import validate_stack  # noqa: E402

UTC = timezone.utc
SAMPLE_TOKEN = "local-run-token"
STEP_STATES = {"lambda_1": "FetchInitialData", "lambda_2": "FetchIncidents", "lambda_3": "ValidateData",
               "lambda_error_handler": "HandleError"}
TABLES_FIRST = [*DATA_TABLES, "pipeline_runs", "validation_results", "watermarks"]


class Interrupted(Exception):
    """Ctrl-C or SIGTERM."""


class SetupError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------
class Console:
    """Aligned lines on stdout; while a long step runs, a progress line (rewritten in place on a terminal,
    one line every few seconds otherwise)."""

    def __init__(self, stream=sys.stdout) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._progress_shown = False
        self._last_plain = 0.0

    def line(self, text: str = "") -> None:
        self.clear()
        print(text, file=self.stream, flush=True)

    def section(self, title: str) -> None:
        self.line()
        self.line(title)

    def progress(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K" + text)
            self.stream.flush()
            self._progress_shown = True
        elif time.monotonic() - self._last_plain >= 5:
            self._last_plain = time.monotonic()
            print(text, file=self.stream, flush=True)

    def clear(self) -> None:
        if self._progress_shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._progress_shown = False

    def timed(self, label: str, func, *args, detail=None, **kwargs):
        """Run func in a helper thread while showing progress; print `label ok|FAILED seconds detail`."""
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = func(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                box["error"] = exc

        started = time.monotonic()
        self._last_plain = started
        worker = threading.Thread(target=target, daemon=True)
        worker.start()
        try:
            while worker.is_alive():
                worker.join(0.1)
                self.progress(f"  {label:<40} … {time.monotonic() - started:5.1f} s")
        except Interrupted:
            worker.join(120)  # let it finish registering what it started, so that the ExitStack stops it
            raise
        seconds = time.monotonic() - started
        if "error" in box:
            self.line(f"  {label:<40} {'FAILED':<7} {seconds:6.1f} s")
            raise box["error"]
        text = detail(box["value"]) if callable(detail) else (detail or "")
        self.line(f"  {label:<40} {'ok':<7} {seconds:6.1f} s  {text}".rstrip())
        return box["value"]


def table(console: Console, rows: list[list[str]], header: list[str] | None = None, indent: str = "  ") -> None:
    all_rows = ([header] if header else []) + rows
    widths = [max(len(str(row[i])) for row in all_rows if i < len(row)) for i in range(len(all_rows[0]))]
    for row in all_rows:
        cells = []
        for i, cell in enumerate(row):
            cell = str(cell)
            numeric = cell.replace(",", "").replace(".", "").replace(" s", "").isdigit()
            cells.append(cell.rjust(widths[i]) if numeric and i else cell.ljust(widths[i]))
        console.line((indent + "  ".join(cells)).rstrip())


# ---------------------------------------------------------------------------------------------
# setup steps
# ---------------------------------------------------------------------------------------------
def synthesize(outdir: Path, environments: list[str] | None) -> list[Path]:
    args = ["--outdir", str(outdir)]
    for env in environments or []:
        args += ["--environment", env]
    # the user's STEPFUNC_STOCK_IMPORT applies, and a synth may take as long as it takes
    completed = run_main(*args, stock_import=None, timeout=None)
    if completed.returncode != 0:
        raise SetupError(f"synth failed ({completed.returncode}):\n{completed.stdout}{completed.stderr}")
    return sorted(p for p in (outdir / "stacks").iterdir() if (p / "cdk.tf.json").is_file())


def validate(folder: Path, terraform: str, scratch: Path) -> None:
    problems = validate_stack(folder, terraform, scratch)
    if problems:
        raise SetupError(f"{folder.name} is not valid:\n" + "\n".join(problems))


def sample_account(n_incidents: int, seed: int):
    """A few hundred incidents over the last week (whole hours), as a realistic account would have."""
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(days=7)
    return generate_account(n_incidents, seed, start, end), start, end


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def summarize(folder: str, result: Any) -> str:
    if not isinstance(result, dict):
        return json.dumps(result)[:100]
    if result.get("success") is not True and folder != "lambda_error_handler":
        return f"{result.get('error', 'no success')}: {result.get('message', '')}"[:160]
    counts = result.get("counts") or {}
    if folder == "lambda_1":
        window = result.get("window") or {}
        dims = counts.get("dimensions") or {}
        return (f"run {result.get('run_id')}, window {window.get('since')} → {window.get('until')}, "
                f"{result.get('expected_incidents')} incidents expected, {sum(dims.values())} reference objects")
    if folder == "lambda_2":
        how = ("partial (deadline near)" if result.get("partial") else "complete") if result.get("complete") \
            else "continues"
        return (f"{how}: {counts.get('chunks_loaded', 0)} chunks, {counts.get('incidents_written', 0):,} incidents, "
                f"{counts.get('log_entries_api_total', 0):,} log entries, {counts.get('notes', 0)} notes, "
                f"{counts.get('alerts', 0)} alerts, {counts.get('api_requests', 0)} API requests")
    if folder == "lambda_3":
        checks = result.get("checks") or {}
        cover = result.get("coverage") or {}
        return (f"{sum(checks.values())}/{len(checks)} checks passed, watermark {result.get('watermark')}, "
                f"{len(cover.get('gaps') or [])} coverage gaps")
    return (f"{result.get('failed_step')} failed: {result.get('error')}: {result.get('message')} "
            f"(recorded: {result.get('recorded')})")[:200]


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() or abs(value) >= 100 else f"{value:,.1f}"


def metric_rows(records: list[MetricRecord]) -> list[list[str]]:
    """One row per metric and dimension values (Pipeline left out: one per run): counts summed over the
    invocations, other units listed one value per invocation. In the contract's order."""
    groups: dict[tuple, list[MetricRecord]] = {}
    for record in records:
        dims = ", ".join(f"{k}={v}" for k, v in record.dimensions.items() if k != "Pipeline")
        groups.setdefault((record.name, dims, record.unit or ""), []).append(record)
    order = list(CONTRACT)
    rows = []
    for (name, dims, unit), group in sorted(groups.items(), key=lambda item: (
            order.index(item[0][0]) if item[0][0] in order else len(order), item[0])):
        if unit == "Count":
            value = _number(sum(r.value for r in group))
        else:
            value = ", ".join(_number(v) for r in group for v in r.values)
        rows.append([name, dims or "-", unit, value])
    return rows


def report_metrics(console: Console, run: WorkflowRun) -> None:
    """The metrics CloudWatch would extract from the functions' EMF lines (the alarms' and dashboard's input)."""
    console.section("Metrics emitted (CloudWatch EMF)")
    try:
        records = parse_lines("".join(line for call in run.invocations for line in call.metric_lines))
    except EmfError as exc:
        console.line(f"  a line breaks the EMF specification: {exc}")
        return
    if not records:
        console.line("  (no metric lines)")
        return
    where = sorted({(r.namespace, r.dimensions.get("Pipeline", "-")) for r in records})
    console.line("  " + "; ".join(f"namespace {ns}, Pipeline={pipeline}" for ns, pipeline in where)
                 + " (Count: summed over the invocations; others: one value per invocation)")
    table(console, metric_rows(records), ["metric", "dimensions", "unit", "value"])


def report(console: Console, workflow: LocalWorkflow, run: WorkflowRun, db: Database) -> None:
    console.section(f"States taken (execution {run.execution_arn.rsplit(':', 1)[-1]})")
    table(console, [[s.name, s.type, f"{s.entered:.2f} s", f"{s.seconds:.2f} s"] for s in run.states],
          ["state", "type", "at", "took"])
    console.section("Step results")
    state_of = {fn.function_name: STEP_STATES.get(folder, folder)
                for folder, fn in workflow.workflow.functions.items()}
    folder_of = {fn.function_name: folder for folder, fn in workflow.workflow.functions.items()}
    rows = []
    for n, call in enumerate(run.invocations, start=1):
        verdict = "error" if call.error else ("success" if isinstance(call.result, dict)
                                              and call.result.get("success") is True else "failed")
        text = f"{call.error}" if call.error else summarize(folder_of.get(call.function, ""), call.result)
        rows.append([str(n), state_of.get(call.function, call.function), verdict, text])
    for name, error in workflow.lambdas.service_errors:
        rows.append(["-", state_of.get(name, name), "retried", f"Lambda service error {error}"])
    table(console, rows or [["-", "-", "-", "no function was invoked"]], ["#", "state", "result", "summary"])
    report_metrics(console, run)
    try:
        conn = db.connect()
    except Exception as exc:  # noqa: BLE001 - the report must not hide the verdict
        console.section(f"Database not reachable for the report: {exc}")
        return
    try:
        tables = [r[0] for r in conn.run("SELECT tablename FROM pg_tables WHERE schemaname = 'pagerduty'")]
        ordered = [t for t in TABLES_FIRST if t in tables] + sorted(set(tables) - set(TABLES_FIRST))
        console.section(f"Rows per table ({db.dbname} on {db.host}:{db.port}, schema pagerduty)")
        if ordered:
            table(console, [[t, f"{row_count(conn, t):,}"] for t in ordered],
                  ["table", "rows"])
        else:
            console.line("  (no pagerduty schema)")
        runs = conn.run("SELECT run_id FROM pagerduty.pipeline_runs WHERE execution_id = :e",
                        e=run.execution_arn) if "pipeline_runs" in tables else []
        if runs and "validation_results" in tables:
            checks = conn.run("SELECT check_name, severity, passed, failures, details "
                              "FROM pagerduty.validation_results WHERE run_id = :r ORDER BY blocking DESC, check_name",
                              r=runs[0][0])
            console.section(f"Validation results (run {runs[0][0]})")
            if checks:
                table(console, [[name, severity or "error", "passed" if passed else
                                 ("FAILED" if severity != "warn" else "warned"), str(failures or 0),
                                 json.dumps({k: v for k, v in (details or {}).items() if k != "compares"})[:60]]
                                for name, severity, passed, failures, details in checks],
                      ["check", "severity", "result", "failures", "details"])
            else:
                console.line("  (no checks ran)")
    finally:
        conn.close()


def incident_report(console: Console, db: Database, path: Path, weeks: int) -> None:
    """The report of the analytics views (tools/report.py), written while the database is still up; a failure
    is told, not raised: the workflow's verdict stands."""
    console.section(f"Incident report (analytics views, last {weeks} weeks with incidents)")
    try:
        console.timed("write the report", write_report, db, path, weeks, detail=lambda summary: summary)
    except Exception as exc:  # noqa: BLE001 - the report must not hide the verdict
        console.line(f"  {exc}" if isinstance(exc, ReportError) else f"  {type(exc).__name__}: {exc}")
        console.line("Report: not written")
        return
    console.line(f"Report: {path}")


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("-e", "--environment", default="dev", help="the environment whose stack runs (dev)")
    parser.add_argument("--all", action="store_true", help="synthesize and validate every environment")
    parser.add_argument("--outdir", type=Path, help="synthesize here (kept) instead of a temporary folder")
    parser.add_argument("--no-validate", action="store_true", help="skip terraform validate/asl-validator/statelint")
    parser.add_argument("--incidents", type=int, default=300, help="incidents in the sample account (300)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the sample account (7)")
    parser.add_argument("--body", help="the POST /invoke request body (default: the sample account's week; "
                                       "with PAGERDUTY_TOKEN: {} = since the watermark, or the last 24 h)")
    parser.add_argument("--report", type=Path, help=f"write the incident report here ({REPORT_OUT} in the "
                                                    "repository, or report/ in --outdir)")
    parser.add_argument("--report-weeks", type=int, default=REPORT_WEEKS,
                        help=f"the report's last N weeks with incidents ({REPORT_WEEKS})")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, console: Console, stack: ExitStack) -> int:
    started = time.monotonic()
    token = os.environ.get("PAGERDUTY_TOKEN", "").strip()
    database_url = os.environ.get("DATABASE_URL", "").strip()
    stack_name = f"stepfuncproject-{args.environment}"
    console.line(f"Local run of {stack_name}: "
                 f"{'PagerDuty account of PAGERDUTY_TOKEN' if token else 'sample PagerDuty account'}, "
                 f"{'the database of DATABASE_URL' if database_url else 'throwaway PostgreSQL'}")
    work = Path(tempfile.mkdtemp(prefix="local-run-"))
    stack.callback(shutil.rmtree, work, True)
    outdir = args.outdir.resolve() if args.outdir else work / "cdktf.out"

    console.section("Setup")
    stacks = console.timed("synthesize (python main.py)", synthesize, outdir,
                           None if args.all else [args.environment],
                           detail=lambda found: ", ".join(p.name for p in found))
    folder = outdir / "stacks" / stack_name
    if folder not in stacks:
        raise SetupError(f"no stack {stack_name} was synthesized (environments: {[p.name for p in stacks]})")
    if not args.no_validate:
        terraform = terraform_path()
        if terraform is None:
            raise SetupError("terraform not found on PATH (Terraform >= 1.10 is required; or use --no-validate)")
        scratch = work / "terraform"
        scratch.mkdir()
        for each in stacks:
            has_asl = (each / "state-machine.asl.json").is_file()
            console.timed(f"validate {each.name}", validate, each, terraform, scratch,
                          detail="terraform validate" + (" + asl-validator + statelint" if has_asl else ""))
    workflow = SynthesizedWorkflow.load(folder)
    dbname = workflow.functions["lambda_1"].environment.get("DB_NAME", "pagerduty")

    if database_url:
        try:
            db = Database.from_url(database_url)
        except ValueError as exc:
            raise SetupError(f"DATABASE_URL: {exc}") from None
        console.timed(f"database {db.host}:{db.port}/{db.dbname}", lambda: db.connect().close(),
                      detail=f"DB_SSL={db.ssl}")
    else:
        pg = console.timed("start a throwaway PostgreSQL", lambda: stack.enter_context(throwaway_postgres(
            dbname=dbname)), detail=lambda pg: f"{pg.host}:{pg.port}/{pg.dbname}")
        db = Database.of(pg)

    extra_env: dict[str, str] = {}
    if token:
        pagerduty = {"token": token}
        if os.environ.get("PAGERDUTY_API_URL", "").strip():
            pagerduty["url"] = os.environ["PAGERDUTY_API_URL"].strip()
        body = args.body or "{}"
        console.line(f"  {'PagerDuty':<40} {pagerduty.get('url') or workflow.functions['lambda_1'].environment.get('PAGERDUTY_API_URL')}")
    else:
        account, since, until = console.timed(
            "generate the sample account", sample_account, args.incidents, args.seed,
            detail=lambda r: (f"{len(r[0].services)} services, {len(r[0].teams)} teams, {len(r[0].users)} users, "
                              f"{len(r[0].incidents)} incidents, {len(r[0].log_entries):,} log entries, "
                              f"{sum(map(len, r[0].notes.values()))} notes, "
                              f"{sum(map(len, r[0].alerts.values()))} alerts"))
        server = stack.enter_context(FakePagerDuty(account, token=SAMPLE_TOKEN, rate_limit=1_000_000))
        console.line(f"  {'local PagerDuty server':<40} {'ok':<7} {'':>8}  {server.url}")
        pagerduty = {"token": SAMPLE_TOKEN, "url": server.url}
        extra_env["PAGERDUTY_RATE_LIMIT_PER_MINUTE"] = "1000000"
        body = args.body or json.dumps({"since": iso(since), "until": iso(until)})

    local = console.timed("state machine + 4 functions (moto)", lambda: stack.enter_context(
        LocalWorkflow(workflow, db=db, pagerduty=pagerduty, extra_env=extra_env)),
        detail=lambda wf: wf.state_machine_arn.rsplit(":", 1)[-1])

    console.section("Execution")
    console.line(f"  POST /invoke  {body}")
    execution_started = time.monotonic()

    def progress(state: str | None, elapsed: float) -> None:
        console.progress(f"  running {state or '…':<30} {elapsed:6.1f} s")

    outcome = local.execute(body, on_progress=progress, timeout=1800)
    console.clear()
    console.line(f"  {outcome.status} after {time.monotonic() - execution_started:.1f} s")
    report(console, local, outcome, db)
    if outcome.status == "SUCCEEDED":
        path = args.report or (outdir / REPORT_NAME if args.outdir else ROOT / REPORT_OUT)
        incident_report(console, db, path.resolve(), args.report_weeks)
    console.line()
    total = time.monotonic() - started
    if outcome.status == "SUCCEEDED":
        console.line(f"VERDICT: SUCCEEDED  ({len(outcome.states)} states, {total:.1f} s in all)")
        return 0
    console.line(f"VERDICT: {outcome.status}  {outcome.error}: {outcome.cause}  ({total:.1f} s in all)")
    return 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    console = Console()

    def interrupt(signum: int, _frame: Any) -> None:
        raise Interrupted(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    # the functions' JSON logs go to a buffer, printed only when the run did not succeed
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(f"{record.levelname} {record.name}: {record.getMessage()}")
    handler.setLevel(logging.WARNING)
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    code = 2
    try:
        with ExitStack() as stack:
            try:
                code = run(args, console, stack)
            finally:
                console.clear()
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # cleaning up: no second interruption
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                if code != 0 and records:
                    console.section("Log (warnings and errors)")
                    for line in records[-20:]:
                        console.line(f"  {line[:300]}")
    except Interrupted as exc:
        console.line(f"\nVERDICT: INTERRUPTED ({exc}); everything started was stopped and removed")
        code = 130
    except SetupError as exc:
        console.line(f"\n{exc}\nVERDICT: SETUP FAILED")
        code = 2
    except Exception as exc:  # noqa: BLE001 - a readable verdict instead of a traceback
        console.line(f"\nerror: {type(exc).__name__}: {exc}\nVERDICT: SETUP FAILED")
        code = 2
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # moto's execution threads may still be winding down; everything we started is stopped


if __name__ == "__main__":
    main()
