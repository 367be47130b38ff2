"""The incident report: one self-contained HTML file, drawn from the views of schema `analytics`
(docs/analytics.md, "The report"), that opens offline.

    python -m tools.report                          # what `make report` does: the local run's database
    DATABASE_URL=postgresql://user:pw@host:5432/db python -m tools.report    # that database
    python -m tools.report --out report.html --weeks 8

Four sections, each a chart with a short table beside it: the weekly incident count by urgency, time to
acknowledge and to resolve (median and p90) over the weeks, the top noisy services and the responders' load,
over the last N weeks with incidents. The charts are matplotlib figures (Agg, no pyplot) saved as SVG with
their text as paths and written into the page: no script, font, stylesheet or image is loaded when it opens.

Without DATABASE_URL it runs the local run (`python -m tools.local_run --no-validate`, throwaway PostgreSQL and
the sample account; options it does not know are passed on, e.g. `--incidents 1000`), which writes the report
before it stops its database. Exit codes: 0 written, 1 the local run's workflow failed, 2 no report (the
database cannot be reached, has no analytics views, or the local run could not set up), 130 interrupted.
"""

from __future__ import annotations

import argparse
import html
import io
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "layer" / "python"):  # the layer package, as tools.local_run does
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from pagerduty_pipeline import analytics  # noqa: E402
from pagerduty_pipeline.migrations import MIGRATIONS  # noqa: E402
from tests.support.lambda_runtime import Database  # noqa: E402

REPORT_NAME = Path("report") / "incident-report.html"  # in the local run's --outdir
DEFAULT_OUT = Path("cdktf.out") / REPORT_NAME  # in the repository
DEFAULT_WEEKS = 12
TOP = 10  # services and responders shown

# The views and the columns the report reads (docs/analytics.md, "Columns").
NEEDED = {
    "account_weekly": ("week_start", "incidents", "high_urgency", "low_urgency", "unknown_urgency",
                       "ack_p50_seconds", "ack_p90_seconds", "resolve_p50_seconds", "resolve_p90_seconds"),
    "noisy_services": ("week_start", "service_id", "service_name", "incidents", "alerts", "resolved_within_5m",
                       "repeated_key_incidents"),
    "responder_weekly": ("week_start", "user_id", "user_name", "acknowledged", "resolved", "notifications",
                         "notifications_off_hours"),
}

# One colour per series, none shared between charts: the test finds each chart in a screenshot by them.
COLORS = {
    "urgency": {"high": "#c0392b", "low": "#2e86c1", "unknown": "#95a5a6"},
    "times": {"ack-p50": "#1e8449", "ack-p90": "#7dcea0", "resolve-p50": "#6c3483", "resolve-p90": "#c39bd3"},
    "noisy": {"incidents": "#d35400", "alerts": "#f5b041"},
    "responders": {"working-hours": "#17a589", "off-hours": "#1b2631"},
}
SECTIONS = tuple(COLORS)

# An attribute or CSS url() that would make the browser fetch something when the page opens.
EXTERNAL = re.compile(r"""(?:\b(?:src|href|srcset|action|poster|data)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:|//)"""
                      r"""|url\(\s*["']?\s*(?:[a-z][a-z0-9+.-]*:|//)|@import)""", re.IGNORECASE)


class ReportError(Exception):
    """The report cannot be drawn from this database; the message says why and what to do."""


# ---------------------------------------------------------------------------------------------
# reading the views
# ---------------------------------------------------------------------------------------------
def analytics_migration() -> tuple[int, str]:
    """The migration that creates the views, found in the layer's list so that the refusal names the right one."""
    return next((version, name) for version, name, statements in MIGRATIONS if statements is analytics.MIGRATION_6)


def check_analytics(conn: Any) -> None:
    """Refuse, naming the migration, a database whose schema `analytics` lacks a view or column the report reads."""
    found: dict[str, set[str]] = {}
    for view, column in conn.run("SELECT table_name, column_name FROM information_schema.columns "
                                 "WHERE table_schema = 'analytics'"):
        found.setdefault(view, set()).add(column)
    missing = [f"analytics.{view}" + ("" if view not in found else
                                      f" ({', '.join(c for c in columns if c not in found[view])})")
               for view, columns in NEEDED.items() if not set(columns) <= found.get(view, set())]
    if not missing:
        return
    version, name = analytics_migration()
    at = None
    if not conn.run("SELECT to_regclass('pagerduty.schema_migrations') IS NULL")[0][0]:
        at = conn.run("SELECT max(version) FROM pagerduty.schema_migrations")[0][0]
    if at is not None and at >= version:  # the views are there, but not for this login
        raise ReportError(f"the login {conn.run('SELECT current_user')[0][0]} cannot read {', '.join(missing)} (the "
                          f"database is at migration {at}): give it the role pagerduty_reader (README, \"Database "
                          f"access\")")
    where = "it has no pipeline schema" if at is None else f"it is at migration {at}"
    raise ReportError(f"the database has no {', '.join(missing)}: the analytics views come with migration {version} "
                      f"({name}) and {where}. Migrate it by running the pipeline against it (step 1 migrates; "
                      f"`DATABASE_URL=… make run` does) and run the report again")


@dataclass
class Figures:
    """What the report shows, read from the views: one list of rows per section."""

    weeks: list[date]
    weekly: list[dict[str, Any]]  # account_weekly, oldest week first
    services: list[dict[str, Any]]  # the top noisy services, noisiest first
    responders: list[dict[str, Any]]  # the top responders by notifications
    incidents: int = 0
    services_in_all: int = 0
    responders_in_all: int = 0


def _dicts(conn: Any, sql: str, **params: Any) -> list[dict[str, Any]]:
    rows = conn.run(sql, **params)
    names = [c["name"] for c in conn.columns]
    return [dict(zip(names, row)) for row in rows]


def read_figures(conn: Any, weeks: int) -> Figures:
    """The last `weeks` weeks that have incidents, from account_weekly, noisy_services and responder_weekly."""
    check_analytics(conn)
    weekly = _dicts(conn, f"SELECT {', '.join(NEEDED['account_weekly'])} FROM analytics.account_weekly "
                          "WHERE incidents > 0 ORDER BY week_start DESC LIMIT :n", n=weeks)[::-1]
    if not weekly:
        return Figures([], [], [], [])
    first = weekly[0]["week_start"]
    services = _dicts(conn, """
        SELECT max(service_name) AS service_name, sum(incidents)::bigint AS incidents,
               coalesce(sum(alerts), 0)::bigint AS alerts,
               coalesce(sum(resolved_within_5m), 0)::bigint AS resolved_within_5m,
               coalesce(sum(repeated_key_incidents), 0)::bigint AS repeated_key_incidents,
               count(*) OVER () AS services
          FROM analytics.noisy_services WHERE week_start >= :first
         GROUP BY service_id HAVING sum(incidents) > 0
         ORDER BY incidents DESC, alerts DESC, service_name LIMIT :top""", first=first, top=TOP)
    responders = _dicts(conn, """
        SELECT max(user_name) AS user_name, coalesce(sum(notifications), 0)::bigint AS notifications,
               coalesce(sum(notifications_off_hours), 0)::bigint AS notifications_off_hours,
               coalesce(sum(acknowledged), 0)::bigint AS acknowledged, coalesce(sum(resolved), 0)::bigint AS resolved,
               count(*) OVER () AS responders
          FROM analytics.responder_weekly WHERE week_start >= :first
         GROUP BY user_id
         ORDER BY notifications DESC, coalesce(sum(acknowledged), 0) + coalesce(sum(resolved), 0) DESC, user_name
         LIMIT :top""", first=first, top=TOP)
    return Figures([w["week_start"] for w in weekly], weekly, services, responders,
                   incidents=sum(w["incidents"] for w in weekly),
                   services_in_all=services[0]["services"] if services else 0,
                   responders_in_all=responders[0]["responders"] if responders else 0)


# ---------------------------------------------------------------------------------------------
# charts
# ---------------------------------------------------------------------------------------------
def _figure(width: float = 7.2, height: float = 3.4, columns: int = 1) -> tuple[Any, Any]:
    """A matplotlib Figure without pyplot (no global state, no GUI backend) and its axes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, columns)
    for ax in (axes if columns > 1 else [axes]):
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(axis="y", color="#e5e7e9", linewidth=0.8)
        ax.set_axisbelow(True)
        ax.tick_params(labelsize=8)
    return fig, axes


def svg_of(fig: Any, prefix: str) -> str:
    """The figure as an inline <svg> element: text as paths (no font needed), no metadata, and every id prefixed
    so that the charts' ids (glyphs, clip paths, marks) stay unique in one page."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": prefix}):
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]  # no XML declaration or DOCTYPE inside HTML
    svg = re.sub(r'(\sid="|href="#|url\(#)', lambda m: m.group(1) + prefix + "-", svg)
    return svg.replace("<svg ", f'<svg role="img" aria-labelledby="{prefix}-title" ', 1)


def _week_labels(weeks: Sequence[date]) -> list[str]:
    return [w.strftime("%d %b") for w in weeks]


def _mark(artists: Any, series: str, indexes: Sequence[int]) -> None:
    """Name each drawn mark `mark-<series>-<row>` in the SVG, tying it to its table row (the test counts them)."""
    for artist, index in zip(artists, indexes):
        artist.set_gid(f"mark-{series}-{index}")


def _legend(fig: Any) -> None:
    """One legend above the plot, in a row: it never covers a mark."""
    fig.legend(loc="outside upper left", ncols=4, frameon=False, fontsize=8)


def chart_urgency(figures: Figures) -> Any:
    fig, ax = _figure()
    x = range(len(figures.weekly))
    bottom = [0] * len(figures.weekly)
    for urgency, color in COLORS["urgency"].items():
        values = [w[f"{urgency}_urgency"] for w in figures.weekly]
        if any(values) or urgency != "unknown":
            _mark(ax.bar(x, values, bottom=bottom, color=color, label=f"{urgency} urgency", width=0.7), urgency, x)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_xticks(list(x), _week_labels(figures.weeks), fontsize=8)
    ax.set_xlabel("week starting (UTC)", fontsize=8)
    ax.set_ylabel("incidents", fontsize=8)
    _legend(fig)
    return fig


def _time_unit(seconds: Sequence[float | None]) -> tuple[str, float]:
    largest = max((s for s in seconds if s is not None), default=0)
    return ("hours", 3600.0) if largest > 3 * 3600 else ("minutes", 60.0)


def chart_times(figures: Figures) -> Any:
    fig, axes = _figure(columns=2)
    x = list(range(len(figures.weekly)))
    for ax, what, title in zip(axes, ("ack", "resolve"), ("time to acknowledge", "time to resolve")):
        columns = [f"{what}_p50_seconds", f"{what}_p90_seconds"]
        unit, per = _time_unit([w[c] for w in figures.weekly for c in columns])
        for column, stat, style in zip(columns, ("p50", "p90"), ("-", "--")):
            values = [float("nan") if w[column] is None else w[column] / per for w in figures.weekly]
            (line,) = ax.plot(x, values, style, marker="o", markersize=6, linewidth=2.2,
                              color=COLORS["times"][f"{what}-{stat}"],
                              label=f"{what} {'median' if stat == 'p50' else stat}")
            line.set_gid(f"mark-{what}-{stat}")
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(unit, fontsize=8)
        ax.set_ylim(bottom=0)
        ax.set_xlim(-0.5, len(x) - 0.5)
        ax.set_xticks(x, _week_labels(figures.weeks), fontsize=8,
                      **({"rotation": 45, "ha": "right", "rotation_mode": "anchor"} if len(x) > 6 else {}))
    _legend(fig)
    return fig


def _horizontal(rows: list[dict[str, Any]], label: str, series: dict[str, tuple[str, Callable]],
                colors: dict[str, str], stacked: bool) -> Any:
    """Horizontal bars, the first row on top: grouped per row, or stacked."""
    fig, ax = _figure(height=max(2.4, 0.75 + 0.32 * len(rows)))
    y = list(range(len(rows)))
    height = 0.7 if stacked else 0.38
    left = [0] * len(y)
    for n, (key, (name, value)) in enumerate(series.items()):
        values = [value(row) for row in rows]
        offset = [0.0] * len(y) if stacked else [(n - (len(series) - 1) / 2) * height for _ in y]
        bars = ax.barh([p + o for p, o in zip(y, offset)], values, height=height, color=colors[key], label=name,
                       left=left if stacked else None)
        _mark(bars, key, y)
        if stacked:
            left = [a + b for a, b in zip(left, values)]
    ax.set_yticks(y, [_short(row[label]) for row in rows], fontsize=8)
    ax.invert_yaxis()
    ax.grid(axis="y", visible=False)
    ax.grid(axis="x", color="#e5e7e9", linewidth=0.8)
    _legend(fig)
    return fig


def _short(text: str | None, length: int = 28) -> str:
    text = text or "(no name)"
    return text if len(text) <= length else text[:length - 1] + "…"


def chart_noisy(figures: Figures) -> Any:
    fig = _horizontal(figures.services, "service_name", {"incidents": ("incidents", lambda r: r["incidents"]),
                                                         "alerts": ("alerts", lambda r: r["alerts"])},
                      COLORS["noisy"], stacked=False)
    fig.axes[0].set_xlabel("count over the weeks shown", fontsize=8)
    return fig


def chart_responders(figures: Figures) -> Any:
    fig = _horizontal(figures.responders, "user_name", {
        "working-hours": ("in working hours", lambda r: r["notifications"] - r["notifications_off_hours"]),
        "off-hours": ("outside working hours", lambda r: r["notifications_off_hours"])},
        COLORS["responders"], stacked=True)
    fig.axes[0].set_xlabel("notifications over the weeks shown", fontsize=8)
    return fig


# ---------------------------------------------------------------------------------------------
# the page
# ---------------------------------------------------------------------------------------------
def duration(seconds: float | None) -> str:
    """A time as people read it: 45 s, 12 min, 3 h 05 min, 2 d 4 h."""
    if seconds is None:
        return "–"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


@dataclass
class Section:
    key: str
    title: str
    note: str
    header: list[str]
    rows: list[list[str]]
    chart: Callable[[Figures], Any]
    empty: str  # what the section says when there is nothing to draw
    caption: str = ""
    numeric: set[int] = field(default_factory=set)  # right-aligned columns


def sections(figures: Figures) -> list[Section]:
    weeks = [w.isoformat() for w in figures.weeks]
    return [
        Section("urgency", "Incidents per week, by urgency",
                "Incidents by the ISO week (UTC) they were created in; merged ones included.",
                ["week", "high", "low", "unknown", "all"],
                [[week, f"{w['high_urgency']:,}", f"{w['low_urgency']:,}", f"{w['unknown_urgency']:,}",
                  f"{w['incidents']:,}"] for week, w in zip(weeks, figures.weekly)],
                chart_urgency, "No incidents in these weeks.", numeric={1, 2, 3, 4}),
        Section("times", "Time to acknowledge and to resolve",
                "Median and 90th percentile from creation to the first acknowledgement (acknowledged incidents) "
                "and to the final resolution (resolved incidents); merged incidents left out.",
                ["week", "ack median", "ack p90", "resolve median", "resolve p90"],
                [[week, *(duration(w[c]) for c in ("ack_p50_seconds", "ack_p90_seconds", "resolve_p50_seconds",
                                                   "resolve_p90_seconds"))]
                 for week, w in zip(weeks, figures.weekly)],
                chart_times, "No incident was acknowledged or resolved in these weeks.", numeric={1, 2, 3, 4}),
        Section("noisy", "Noisiest services",
                f"The {TOP} services with the most incidents over the weeks shown; flapping = resolved within "
                "5 minutes, repeats = an incident key the service had before.",
                ["service", "incidents", "alerts", "alerts / incident", "flapping", "repeats"],
                [[s["service_name"] or "(no name)", f"{s['incidents']:,}", f"{s['alerts']:,}",
                  f"{s['alerts'] / s['incidents']:.1f}", f"{s['resolved_within_5m']:,}",
                  f"{s['repeated_key_incidents']:,}"] for s in figures.services],
                chart_noisy, "No service had incidents in these weeks.",
                caption=(f"top {len(figures.services)} of {figures.services_in_all} services"
                         if figures.services_in_all > len(figures.services) else ""), numeric={1, 2, 3, 4, 5}),
        Section("responders", "Responder load",
                "Notifications sent to each person (outside working hours in their own time zone), and the "
                "incidents they acknowledged and resolved, over the weeks shown.",
                ["responder", "notified", "off hours", "acknowledged", "resolved"],
                [[r["user_name"] or "(no name)", f"{r['notifications']:,}", f"{r['notifications_off_hours']:,}",
                  f"{r['acknowledged']:,}", f"{r['resolved']:,}"] for r in figures.responders],
                chart_responders, "Nobody was notified or acknowledged or resolved an incident in these weeks.",
                caption=(f"top {len(figures.responders)} of {figures.responders_in_all} responders"
                         if figures.responders_in_all > len(figures.responders) else ""), numeric={1, 2, 3, 4}),
    ]


def _has_data(section: Section, figures: Figures) -> bool:
    if section.key == "times":
        return any(w[c] is not None for w in figures.weekly for c in ("ack_p50_seconds", "resolve_p50_seconds"))
    return bool(section.rows)


def _table(section: Section) -> str:
    head = "".join(f'<th{" class=num" if i in section.numeric else ""}>{html.escape(h)}</th>'
                   for i, h in enumerate(section.header))
    body = "".join("<tr>" + "".join(f'<td{" class=num" if i in section.numeric else ""}>{html.escape(c)}</td>'
                                    for i, c in enumerate(row)) + "</tr>\n" for row in section.rows)
    caption = f"<caption>{html.escape(section.caption)}</caption>" if section.caption else ""
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>"


STYLE = """
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #1c2833;
       margin: 24px auto; max-width: 1360px; padding: 0 16px; background: #fff; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 0 0 2px; }
.meta, .note, footer, caption { color: #566573; font-size: 13px; }
section { border-top: 1px solid #d5d8dc; padding: 16px 0 8px; }
.row { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
figure { margin: 0; flex: 1 1 720px; max-width: 760px; }
figure svg { width: 100%; height: auto; display: block; }
table { border-collapse: collapse; font-size: 13px; flex: 0 1 auto; }
caption { caption-side: bottom; text-align: left; padding-top: 4px; }
th, td { padding: 3px 10px; border-bottom: 1px solid #eaeded; text-align: left; white-space: nowrap; }
th { border-bottom: 2px solid #aab7b8; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.empty { padding: 24px; background: #f8f9f9; color: #566573; }
"""


def render(figures: Figures, source: str, generated: datetime | None = None) -> str:
    """The whole page; raises ReportError if anything in it would load from elsewhere."""
    import matplotlib

    generated = generated or datetime.now(timezone.utc)
    if figures.weeks:
        last = figures.weeks[-1] + timedelta(days=6)
        span = (f"{len(figures.weeks)} week{'s' if len(figures.weeks) != 1 else ''} with incidents, "
                f"{figures.weeks[0].isoformat()} to {last.isoformat()} (ISO weeks, UTC) · "
                f"{figures.incidents:,} incidents")
    else:
        span = "no incidents in this database yet: nothing to draw"
    parts = ["<h1>Incident report</h1>",
             f'<p class="meta">{html.escape(source)} · {html.escape(span)} · generated '
             f'{generated.strftime("%Y-%m-%d %H:%M UTC")}</p>']
    for section in sections(figures):
        if _has_data(section, figures):
            body = (f'<div class="row"><figure>{svg_of(section.chart(figures), section.key)}</figure>'
                    f"{_table(section)}</div>")
        else:
            body = f'<p class="empty">{html.escape(section.empty if figures.weeks else "No incidents yet.")}</p>'
        parts.append(f'<section id="{section.key}"><h2 id="{section.key}-title">{html.escape(section.title)}</h2>'
                     f'<p class="note">{html.escape(section.note)}</p>{body}</section>')
    parts.append(f"<footer>Figures from the views of schema analytics (docs/analytics.md). Drawn with matplotlib "
                 f"{matplotlib.__version__} as inline SVG: the page loads nothing and opens offline.</footer>")
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>Incident report</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(parts) + "\n</body></html>\n")
    loads = EXTERNAL.search(page)
    if loads:
        raise ReportError(f"the report would load from elsewhere ({loads.group(0)!r}); it must open offline")
    return page


def write_report(db: Database, out: Path, weeks: int = DEFAULT_WEEKS) -> str:
    """Read db's analytics views, draw them and write `out` (atomically: a reader never sees half a page);
    returns a one-line summary."""
    import matplotlib

    matplotlib.use("Agg")  # no display is ever needed, nor wanted
    conn = db.connect()
    try:
        figures = read_figures(conn, weeks)
    finally:
        conn.close()
    page = render(figures, f"database {db.dbname} on {db.host}:{db.port}")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    partial.write_text(page, encoding="utf-8")
    partial.replace(out)
    if not figures.weeks:
        return "no incidents: the sections say so"
    return (f"{len(figures.weeks)} week{'s' if len(figures.weeks) != 1 else ''}, {figures.incidents:,} incidents, "
            f"{len(page) // 1024:,} KiB")


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--out", type=Path, help=f"the HTML file to write ({DEFAULT_OUT} in the repository)")
    parser.add_argument("--weeks", type=int, default=DEFAULT_WEEKS,
                        help=f"the last N weeks with incidents ({DEFAULT_WEEKS})")
    args, rest = parser.parse_known_args(argv)
    if args.weeks < 1:
        parser.error("--weeks must be at least 1")
    if rest and os.environ.get("DATABASE_URL", "").strip():
        parser.error(f"unrecognized arguments: {' '.join(rest)} (only the local run takes more options)")
    return args, rest


def from_local_run(out: Path, weeks: int, local_run_args: list[str]) -> int:
    """Run the local run (its PostgreSQL is thrown away when it stops, so it writes the report itself)."""
    command = [sys.executable, "-m", "tools.local_run", "--no-validate", "--report", str(out),
               "--report-weeks", str(weeks), *local_run_args]
    print("No DATABASE_URL: the report is drawn from the local run's database (python -m tools.local_run "
          "--no-validate; docs/local-run.md), written before the run stops it.\n", flush=True)
    started = time.time()
    process = subprocess.Popen(command, cwd=ROOT)
    try:
        code = process.wait()
    except KeyboardInterrupt:  # the local run got the Ctrl-C too: let it clean up
        process.wait()
        return 130
    if code != 0:
        return code
    if not out.is_file() or out.stat().st_mtime < started - 1:
        print("error: the local run succeeded but wrote no report (see its output above)", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    args, rest = parse_args(sys.argv[1:] if argv is None else argv)
    out = (args.out or ROOT / DEFAULT_OUT).resolve()
    url = os.environ.get("DATABASE_URL", "").strip()
    if not url:
        return from_local_run(out, args.weeks, rest)
    try:
        db = Database.from_url(url)
        summary = write_report(db, out, args.weeks)
    except ValueError as exc:
        print(f"error: DATABASE_URL: {exc}", file=sys.stderr)
        return 2
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - e.g. the database is not reachable: a line, not a traceback
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(f"Incident report ({summary})")
    print(f"Report: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
