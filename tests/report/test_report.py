"""The incident report (`make report`, tools/report.py): drawn from the local run's database, every chart and
table present and filled, nothing loaded from elsewhere, and the charts seen drawn in a real headless Chromium;
a database without the analytics views is refused naming the migration, and one without incidents says so."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pagerduty_pipeline import migrations
from tests.support.postgres import PostgresInstance, throwaway_postgres
from tests.support.synth import ROOT
from tests.support.tools import require
from tools import report

pytestmark = pytest.mark.slow
ANALYTICS_MIGRATION = (6, "analytics views")


# ---------------------------------------------------------------------------------------------
# the page, parsed
# ---------------------------------------------------------------------------------------------
@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node] = field(default_factory=list)
    text: str = ""

    def iter(self, tag: str | None = None) -> Iterator[Node]:
        if tag is None or self.tag == tag:
            yield self
        for child in self.children:
            yield from child.iter(tag)

    def all_text(self) -> str:
        return self.text + "".join(child.all_text() for child in self.children)


class Tree(HTMLParser):
    """The page as a tree of elements (HTML's void elements closed at once, SVG's `<x/>` too)."""

    VOID = {"meta", "br", "img", "link", "input", "hr", "source"}

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].text += data


def sections_of(page: str) -> dict[str, Node]:
    tree = Tree(page).root
    found = [node for node in tree.iter("section")]
    assert [s.attrs.get("id") for s in found] == list(report.SECTIONS)
    return {s.attrs["id"]: s for s in found}


def table_rows(section: Node) -> tuple[list[str], list[list[str]]]:
    (table,) = list(section.iter("table"))
    header = [th.all_text().strip() for th in table.iter("th")]
    rows = [[td.all_text().strip() for td in tr.iter("td")] for tr in next(table.iter("tbody")).iter("tr")]
    return header, rows


def bbox(d: str) -> tuple[float, float]:
    """Width and height of an SVG path's points."""
    numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", d)]
    xs, ys = numbers[0::2], numbers[1::2]
    return max(xs) - min(xs), max(ys) - min(ys)


def marks(section: Node) -> dict[str, Node]:
    """The chart's data marks, by name (`mark-<series>[-<row>]`; tools.report names them)."""
    prefix = f"{section.attrs['id']}-mark-"
    return {g.attrs["id"][len(prefix):]: g for g in section.iter("g") if g.attrs.get("id", "").startswith(prefix)}


def assert_offline(page: str) -> None:
    """Nothing the browser would fetch: no script, stylesheet, image or frame, every reference inside the page."""
    tree = Tree(page).root
    ids = [node.attrs["id"] for node in tree.iter() if "id" in node.attrs]
    assert len(ids) == len(set(ids)), "ids repeat across the charts"
    for node in tree.iter():
        assert node.tag not in ("script", "link", "img", "iframe", "object", "embed", "image"), node.tag
        for name, value in node.attrs.items():
            if name in ("src", "href", "xlink:href", "srcset", "action", "poster", "data"):
                assert value.startswith("#") and value[1:] in ids, f'{node.tag} {name}="{value}"'
        for url in re.findall(r"url\(([^)]*)\)", node.attrs.get("style", "") + node.attrs.get("clip-path", "")):
            assert url.startswith("#") and url[1:] in ids, url
    styles = "".join(node.all_text() for node in tree.iter("style"))
    assert "@import" not in styles and "url(" not in styles
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page)


# ---------------------------------------------------------------------------------------------
# from the local run's database
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`python -m tools.report` without DATABASE_URL (what `make report` runs): the local run, without
    validation, loads the sample account into its throwaway PostgreSQL and writes the report before it stops."""
    out = tmp_path_factory.mktemp("report") / "r.html"
    environ = {k: v for k, v in os.environ.items() if k not in ("PAGERDUTY_TOKEN", "PAGERDUTY_API_URL",
                                                               "DATABASE_URL")}
    completed = subprocess.run([sys.executable, "-m", "tools.report", "--out", str(out)], cwd=ROOT, env=environ,
                               capture_output=True, text=True, timeout=300)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert f"Report: {out}" in output.splitlines(), output
    assert "--no-validate" in output and "VERDICT: SUCCEEDED" in output
    return out, out.read_text(encoding="utf-8")


def test_every_chart_and_table_is_drawn(rendered):
    _, page = rendered
    sections = sections_of(page)
    for key, section in sections.items():
        assert len(list(section.iter("svg"))) == 1, key
        header, rows = table_rows(section)
        assert rows, f"{key}: the table has no rows"
        assert all(len(row) == len(header) and all(row) for row in rows), (key, rows)
        drawn = marks(section)
        assert drawn, f"{key}: the chart has no data marks"
        if key == "times":  # a line per figure, a point on it per week that has the time
            for column, name in enumerate(("ack-p50", "ack-p90", "resolve-p50", "resolve-p90"), start=1):
                points = list(drawn[name].iter("use"))
                assert len(points) == sum(row[column] != "–" for row in rows) > 0, name
                (line,) = [p for p in drawn[name].iter("path") if "clip-path" in p.attrs]
                assert report.COLORS[key][name] in line.attrs["style"]
            continue
        for index, row in enumerate(rows):  # every row of the table is a bar (or a part of one) with an area
            if key == "responders" and row[1] == "0":
                continue  # acknowledged or resolved without being notified: no bar
            bars = [g for name, g in drawn.items() if name.endswith(f"-{index}")]
            areas = [bbox(path.attrs["d"]) for g in bars for path in g.iter("path")]
            assert any(w > 1 and h > 1 for w, h in areas), f"{key}: row {index} is not drawn: {areas}"
        for series, color in report.COLORS[key].items():
            paths = [p for name, g in drawn.items() if name.startswith(f"{series}-") for p in g.iter("path")]
            assert not paths or all(color in p.attrs["style"] for p in paths), series
    urgency = table_rows(sections["urgency"])[1]
    assert sum(int(row[-1].replace(",", "")) for row in urgency) == 300  # the sample account's incidents
    assert "300 incidents" in page


def test_the_report_loads_nothing_from_elsewhere(rendered):
    _, page = rendered
    assert_offline(page)
    assert "matplotlib" in page


def chromium() -> str:
    return require("chromium", shutil.which("chromium") or shutil.which("chromium-browser"),
                   "run `make browser` (installs Debian's chromium package)")


def test_a_browser_shows_the_charts(rendered, tmp_path):
    """A real headless Chromium opens the file, offline (no name resolves), and draws every chart: each series'
    colour covers many pixels, and the charts come down the page in their order."""
    from PIL import Image

    browser = chromium()
    path, page = rendered
    drawn = {key: {name for name in marks(section)} for key, section in sections_of(page).items()}
    screenshot = tmp_path / "incident-report.png"
    completed = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--host-resolver-rules=MAP * ~NOTFOUND",
         f"--screenshot={screenshot}", "--window-size=1400,2400", path.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0 and screenshot.is_file(), completed.stderr[-2000:]
    image = Image.open(screenshot).convert("RGB")
    assert image.size == (1400, 2400)
    pixels = image.load()
    found: dict[str, list[tuple[int, int]]] = {}
    colors = {color: (key, series) for key, by_series in report.COLORS.items() for series, color in by_series.items()}
    wanted = {tuple(int(color[i:i + 2], 16) for i in (1, 3, 5)): color for color in colors}
    for y in range(0, image.height, 2):
        for x in range(0, image.width, 2):
            color = wanted.get(pixels[x, y])
            if color:
                found.setdefault(color, []).append((x, y))
    middles = {}
    for color, (key, series) in colors.items():
        if not any(name == series or name.startswith(f"{series}-") for name in drawn[key]):
            continue  # a series with nothing to draw (the sample has no incident of unknown urgency)
        assert len(found.get(color, [])) >= 50, f"{key} {series} ({color}): {len(found.get(color, []))} pixels"
        middles.setdefault(key, []).append(sorted(y for _, y in found[color])[len(found[color]) // 2])
    order = [min(middles[key]) for key in report.SECTIONS]
    assert order == sorted(order), order
    print(f"screenshot: {screenshot}")


# ---------------------------------------------------------------------------------------------
# databases the report cannot, or has nothing to, draw
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresInstance]:
    with throwaway_postgres() as instance:
        yield instance


def database(pg: PostgresInstance, name: str, migrated_to: int | None) -> PostgresInstance:
    """A new database of the instance, migrated up to `migrated_to` (None: not at all)."""
    admin = pg.admin_connect(database="postgres")
    try:
        admin.run(f'CREATE DATABASE "{name}" OWNER "{pg.user}"')
    finally:
        admin.close()
    instance = dataclasses.replace(pg, dbname=name)
    if migrated_to is not None:
        conn = instance.connect()
        try:
            all_migrations = migrations.MIGRATIONS
            migrations.MIGRATIONS = [m for m in all_migrations if m[0] <= migrated_to]
            try:
                migrations.migrate(conn)
            finally:
                migrations.MIGRATIONS = all_migrations
        finally:
            conn.close()
    return instance


def report_of(instance: PostgresInstance, out: Path, monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.setenv("DATABASE_URL", instance.url)
    code = report.main(["--out", str(out)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("migrated_to, state", [(None, "it has no pipeline schema"), (5, "it is at migration 5")])
def test_a_database_without_the_analytics_views_is_refused(pg, tmp_path, monkeypatch, capsys, migrated_to, state):
    assert report.analytics_migration() == ANALYTICS_MIGRATION
    code, output = report_of(database(pg, f"before_{migrated_to}", migrated_to), tmp_path / "r.html",
                             monkeypatch, capsys)
    assert code == 2, output
    assert "has no analytics.account_weekly" in output
    assert "the analytics views come with migration 6 (analytics views)" in output and state in output, output
    assert "Traceback" not in output and not (tmp_path / "r.html").exists()


def test_a_database_without_incidents_gives_a_report_saying_so(pg, tmp_path, monkeypatch, capsys):
    code, output = report_of(database(pg, "no_incidents", max(m[0] for m in migrations.MIGRATIONS)),
                             tmp_path / "r.html", monkeypatch, capsys)
    assert code == 0, output
    assert f"Report: {tmp_path / 'r.html'}" in output
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "no incidents in this database yet" in page
    for key, section in sections_of(page).items():
        assert not list(section.iter("svg")) and not list(section.iter("table")), key
        (empty,) = [p for p in section.iter("p") if p.attrs.get("class") == "empty"]
        assert empty.all_text() == "No incidents yet.", key
    assert_offline(page)
