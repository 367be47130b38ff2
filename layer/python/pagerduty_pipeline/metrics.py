"""CloudWatch metrics of the steps, written as Embedded Metric Format (EMF) log lines on stdout.

Each line is one JSON object that follows AWS's "Specification: Embedded metric format": a root ``_aws`` member
``{"Timestamp": <epoch ms>, "CloudWatchMetrics": [{"Namespace", "Dimensions": [[names]], "Metrics": [{"Name",
"Unit"}]}]}`` and every dimension and metric value as a root member. CloudWatch Logs extracts the metrics from the
function's log group: no PutMetricData call, no permission, no time spent waiting for an API.

Not the ``aws-embedded-metrics`` library: it requires aiohttp, whose compiled wheels would have to be built per
architecture into a layer that otherwise needs pg8000 and pure Python only, and it is asyncio-first (its
``metric_scope`` flushes through an event loop) while the steps are plain synchronous functions. What it would do
for us is a few dozen lines here.

The metric contract (names, units, dimensions; the stack's alarms and dashboard read exactly these, docs/pipeline.md
"Metrics"): ``StepDuration``, ``ApiRequests``, ``ApiRateLimited``, ``ApiRetries`` by Pipeline and Step;
``RowsWritten`` by Pipeline and Table; ``ChecksFailed``, ``ChecksWarned`` by Pipeline; ``DataFreshness`` by
Pipeline and Scope. The namespace is ``METRICS_NAMESPACE`` and the Pipeline dimension ``PIPELINE_NAME``.

Metrics never make a step fail: whatever goes wrong while they are built or written is logged and dropped.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

log = logging.getLogger("pagerduty_pipeline")

NAMESPACE_VARIABLE = "METRICS_NAMESPACE"
PIPELINE_VARIABLE = "PIPELINE_NAME"
DEFAULT_NAMESPACE = "PagerDutyPipeline"
DEFAULT_PIPELINE = "local"

# CloudWatch's standard units (MetricDatum.Unit); the spec allows no other.
UNITS = frozenset({
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes", "Terabytes", "Bits",
    "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count", "Bytes/Second", "Kilobytes/Second",
    "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second",
    "Gigabits/Second", "Terabits/Second", "Count/Second", "None"})
MAX_VALUES = 100  # values of one metric in one document
MAX_DIMENSIONS = 30  # names in one dimension set
MAX_METRICS = 100  # metric definitions in one directive
MAX_NAME = 1024  # characters of a metric or dimension name, and of a dimension value
MAX_NAMESPACE = 255

# The contract: metric -> (unit, dimension names)
STEP_DURATION, API_REQUESTS, API_RATE_LIMITED, API_RETRIES = "StepDuration", "ApiRequests", "ApiRateLimited", \
    "ApiRetries"
ROWS_WRITTEN, CHECKS_FAILED, CHECKS_WARNED, DATA_FRESHNESS = "RowsWritten", "ChecksFailed", "ChecksWarned", \
    "DataFreshness"
CONTRACT: dict[str, tuple[str, tuple[str, ...]]] = {
    STEP_DURATION: ("Milliseconds", ("Pipeline", "Step")),
    API_REQUESTS: ("Count", ("Pipeline", "Step")),
    API_RATE_LIMITED: ("Count", ("Pipeline", "Step")),
    API_RETRIES: ("Count", ("Pipeline", "Step")),
    ROWS_WRITTEN: ("Count", ("Pipeline", "Table")),
    CHECKS_FAILED: ("Count", ("Pipeline",)),
    CHECKS_WARNED: ("Count", ("Pipeline",)),
    DATA_FRESHNESS: ("Seconds", ("Pipeline", "Scope")),
}

Writer = Callable[[str], object]  # takes one whole line, newline included


class EmfError(ValueError):
    """A document that does not follow the EMF specification."""


# ---------------------------------------------------------------------------------------------
# where the lines go
# ---------------------------------------------------------------------------------------------
_stdout_lock = threading.Lock()


def write_stdout(line: str) -> None:
    """One ``write`` of the whole line, then a flush, under a lock: lines of several threads never interleave.

    Relied on, as AWS documents it: Lambda sends the function's stdout to its log group line by line, and the
    Python runtime's JSON log format (``LoggingConfig.LogFormat = JSON``) formats records of the ``logging`` module
    only; what is written to stdout arrives unchanged, so CloudWatch Logs sees the EMF object and extracts it."""
    with _stdout_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


_writer: Writer = write_stdout
_writer_lock = threading.Lock()


def set_writer(write: Writer | None) -> Writer:
    """Send the lines to ``write`` (None: back to stdout); returns the previous destination."""
    global _writer
    with _writer_lock:
        previous, _writer = _writer, (write or write_stdout)
    return previous


@contextmanager
def writing_to(write: Writer) -> Iterator[None]:
    """The lines go to ``write`` inside the block (tests, the local run's Lambda runtime), to stdout again after."""
    previous = set_writer(write)
    try:
        yield
    finally:
        set_writer(previous)


def _write(line: str) -> None:
    with _writer_lock:
        write = _writer
    write(line)


# ---------------------------------------------------------------------------------------------
# one document
# ---------------------------------------------------------------------------------------------
Value = int | float | list[int | float]


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _name_problem(what: str, name: object, limit: int = MAX_NAME) -> str | None:
    if not isinstance(name, str) or not name.strip() or len(name) > limit:
        return f"{what} must be a non-empty string of at most {limit} characters, got {name!r}"[:300]
    return None


def document_problems(doc: object) -> list[str]:
    """What in ``doc`` breaks the EMF specification (empty: a valid document)."""
    if not isinstance(doc, dict):
        return ["an EMF document is a JSON object"]
    meta = doc.get("_aws")
    if not isinstance(meta, dict):
        return ["the root member _aws (an object) is missing"]
    problems = []
    stamp = meta.get("Timestamp")
    if not isinstance(stamp, int) or isinstance(stamp, bool) or stamp < 0:
        problems.append(f"_aws.Timestamp must be milliseconds since the epoch (an integer), got {stamp!r}")
    directives = meta.get("CloudWatchMetrics")
    if not isinstance(directives, list) or not directives:
        return problems + ["_aws.CloudWatchMetrics must be a non-empty array of metric directives"]
    for n, directive in enumerate(directives):
        where = f"_aws.CloudWatchMetrics[{n}]"
        if not isinstance(directive, dict):
            problems.append(f"{where} must be an object")
            continue
        problem = _name_problem(f"{where}.Namespace", directive.get("Namespace"), MAX_NAMESPACE)
        problems += [problem] if problem else []
        dimension_sets = directive.get("Dimensions")
        if not isinstance(dimension_sets, list):
            problems.append(f"{where}.Dimensions must be an array of dimension sets")
            dimension_sets = []
        for dimension_set in dimension_sets:
            if not isinstance(dimension_set, list) or len(dimension_set) > MAX_DIMENSIONS:
                problems.append(f"{where}: a dimension set is an array of at most {MAX_DIMENSIONS} names, "
                                f"got {dimension_set!r}"[:300])
                continue
            for name in dimension_set:
                problem = _name_problem("a dimension name", name)
                if problem:
                    problems.append(f"{where}: {problem}")
                elif _name_problem(f"the value of dimension {name}", doc.get(name)):
                    problems.append(f"{where}: dimension {name} needs a root member with a non-empty string value "
                                    f"of at most {MAX_NAME} characters, got {doc.get(name)!r}"[:300])
        definitions = directive.get("Metrics")
        if not isinstance(definitions, list) or len(definitions) > MAX_METRICS:
            problems.append(f"{where}.Metrics must be an array of at most {MAX_METRICS} metric definitions")
            continue
        for definition in definitions:
            name = definition.get("Name") if isinstance(definition, dict) else None
            problem = _name_problem("a metric Name", name)
            if problem:
                problems.append(f"{where}: {problem}")
                continue
            if "Unit" in definition and definition["Unit"] not in UNITS:
                problems.append(f"{where}: metric {name} has Unit {definition['Unit']!r}, not a CloudWatch unit")
            if definition.get("StorageResolution", 60) not in (1, 60):
                problems.append(f"{where}: metric {name} has StorageResolution {definition['StorageResolution']!r}")
            value = doc.get(name)
            values = value if isinstance(value, list) else [value]
            if not values or len(values) > MAX_VALUES or not all(_is_number(v) for v in values):
                problems.append(f"{where}: metric {name} needs a root member that is a number or an array of 1 to "
                                f"{MAX_VALUES} numbers, got {value!r}"[:300])
    return problems


def document(namespace: str, dimensions: dict[str, str], values: dict[str, tuple[str, Value]], *,
             timestamp_ms: int, properties: dict | None = None) -> dict:
    """One EMF document: the metrics ``values`` (name -> (unit, value)) with one dimension set, ``dimensions``
    (name -> value). ``properties`` are other root members (ids that help to find the run's logs): they may not
    take a dimension's or a metric's name. Raises EmfError when the result would not follow the spec."""
    clashes = set(properties or {}) & (set(dimensions) | set(values) | {"_aws"})
    if clashes:
        raise EmfError(f"properties {sorted(clashes)} would overwrite a dimension or a metric")
    doc = {k: v for k, v in (properties or {}).items() if v is not None}
    doc.update(dimensions)
    doc.update({name: value for name, (_, value) in values.items()})
    doc["_aws"] = {"Timestamp": timestamp_ms, "CloudWatchMetrics": [{
        "Namespace": namespace, "Dimensions": [list(dimensions)],
        "Metrics": [{"Name": name, "Unit": unit} for name, (unit, _) in values.items()]}]}
    problems = document_problems(doc)
    if problems:
        raise EmfError("; ".join(problems))
    return doc


def line_of(doc: dict) -> str:
    """The document as one log line (compact JSON, newline included)."""
    return json.dumps(doc, separators=(",", ":"), allow_nan=False, default=str) + "\n"


# ---------------------------------------------------------------------------------------------
# reading lines back (tests, the local run, the rehearsal)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricRecord:
    """One metric of one EMF document, as CloudWatch would extract it."""

    namespace: str
    name: str
    unit: str | None
    values: tuple[float, ...]
    dimensions: dict[str, str]
    timestamp_ms: int
    properties: dict = field(default_factory=dict, compare=False)

    @property
    def value(self) -> float:
        """The sum of the values (a document carries one value per metric here)."""
        return sum(self.values)


def parse_lines(text: str) -> list[MetricRecord]:
    """Every metric of the EMF documents in ``text`` (one per line; other lines, like logging output, are skipped),
    one record per metric and dimension set. Raises EmfError for a line that has ``_aws`` but breaks the spec."""
    records: list[MetricRecord] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line.startswith("{") or '"_aws"' not in line:
            continue
        try:
            doc = json.loads(line)
        except ValueError as exc:
            raise EmfError(f"line {number} is not JSON: {exc}") from None
        if not isinstance(doc, dict) or "_aws" not in doc:
            continue
        problems = document_problems(doc)
        if problems:
            raise EmfError(f"line {number}: " + "; ".join(problems))
        meta = doc["_aws"]
        for directive in meta["CloudWatchMetrics"]:
            targets = {d["Name"] for d in directive["Metrics"]} | {n for s in directive["Dimensions"] for n in s}
            properties = {k: v for k, v in doc.items() if k != "_aws" and k not in targets}
            for dimension_set in directive["Dimensions"] or [[]]:
                for definition in directive["Metrics"]:
                    value = doc[definition["Name"]]
                    records.append(MetricRecord(
                        directive["Namespace"], definition["Name"], definition.get("Unit"),
                        tuple(value if isinstance(value, list) else [value]),
                        {name: doc[name] for name in dimension_set}, meta["Timestamp"], properties))
    return records


# ---------------------------------------------------------------------------------------------
# what a step measures
# ---------------------------------------------------------------------------------------------
class StepMetrics:
    """What one invocation of a step measured; ``measured`` writes it when the step ends, however it ends.

    Counters are read from the objects that keep them (the PagerDuty client, the loader) when the step ends, so a
    failing step reports what it did until it failed."""

    def __init__(self, step: str, *, calls_api: bool = False) -> None:
        self.step = step
        self.calls_api = calls_api  # Api* are written for it even when no client was made (all 0)
        self._client = None
        self._loader = None
        self.checks: tuple[int, int] | None = None  # (blocking checks failed, checks warned)
        self.freshness: tuple[str, float] | None = None  # (scope, seconds behind)
        self.properties: dict = {}

    def count_api(self, client) -> None:
        """Report the client's ``request_count``, ``rate_limited_count`` and ``retry_count``."""
        self._client = client

    def count_rows(self, loader) -> None:
        """Report the loader's rows per table (``Loader.changed``)."""
        self._loader = loader

    def checked(self, failed: int, warned: int) -> None:
        self.checks = (failed, warned)

    def fresh(self, scope: str, seconds: float) -> None:
        self.freshness = (scope, seconds)

    def note(self, **properties) -> None:
        """Root members that are not metrics (``run_id``, ``execution_id``): where to look in the logs."""
        self.properties.update(properties)

    def documents(self, namespace: str, pipeline: str, duration_ms: float, timestamp_ms: int) -> list[dict]:
        """The EMF documents: one per dimension set (one per table for RowsWritten)."""
        props = {k: v for k, v in self.properties.items() if v is not None}

        def doc(dimensions: dict[str, str], *names_values: tuple[str, Value]) -> dict:
            return document(namespace, {"Pipeline": pipeline, **dimensions},
                            {name: (CONTRACT[name][0], value) for name, value in names_values},
                            timestamp_ms=timestamp_ms, properties=props)

        per_step: list[tuple[str, Value]] = [(STEP_DURATION, round(duration_ms, 3))]
        if self.calls_api or self._client is not None:
            client = self._client
            per_step += [(API_REQUESTS, int(getattr(client, "request_count", 0))),
                         (API_RATE_LIMITED, int(getattr(client, "rate_limited_count", 0))),
                         (API_RETRIES, int(getattr(client, "retry_count", 0)))]
        docs = [doc({"Step": self.step}, *per_step)]
        rows = dict(getattr(self._loader, "changed", None) or {})
        docs += [doc({"Table": table}, (ROWS_WRITTEN, int(n))) for table, n in sorted(rows.items())]
        if self.checks is not None:
            docs.append(doc({}, (CHECKS_FAILED, self.checks[0]), (CHECKS_WARNED, self.checks[1])))
        if self.freshness is not None:
            docs.append(doc({"Scope": self.freshness[0]}, (DATA_FRESHNESS, round(self.freshness[1], 3))))
        return docs


def _setting(env, name: str, default: str) -> str:
    return (env.get(name) or "").strip() or default


def emit(metrics: StepMetrics, duration_seconds: float, env=None, clock: Callable[[], float] = time.time) -> bool:
    """Write the step's documents; whether they were written. Never raises: a failure is logged and dropped."""
    try:
        env = os.environ if env is None else env
        docs = metrics.documents(_setting(env, NAMESPACE_VARIABLE, DEFAULT_NAMESPACE),
                                 _setting(env, PIPELINE_VARIABLE, DEFAULT_PIPELINE), duration_seconds * 1000,
                                 int(clock() * 1000))
        for doc in docs:
            _write(line_of(doc))
        return True
    except Exception as exc:  # noqa: BLE001 - metrics must never fail the step
        try:
            log.warning(json.dumps({"event": "metrics_not_written", "step": metrics.step,
                                    "reason": f"{type(exc).__name__}: {exc}"[:500]}))
        except Exception:  # noqa: BLE001 - not even the log line may escape
            pass
        return False


def measured(step: str, *, calls_api: bool = False):
    """Decorate a step function ``f(event, context=None, *, env=None, ..., metrics: StepMetrics)``: each call gets a
    fresh ``StepMetrics`` and, when it returns or raises, its metrics are written (StepDuration always; the Api*
    counters too when ``calls_api``). The namespace and Pipeline come from the step's ``env`` (the environment by
    default); the execution id and the result's run id go along as properties."""

    def decorate(func):
        @functools.wraps(func)
        def run_step(event, context=None, **kwargs):
            recorder = StepMetrics(step, calls_api=calls_api)
            if isinstance(event, dict) and isinstance(event.get("execution_id"), str):
                recorder.note(execution_id=event["execution_id"])
            started = time.perf_counter()
            result = None
            try:
                result = func(event, context, metrics=recorder, **kwargs)
                return result
            finally:
                if isinstance(result, dict):
                    recorder.properties.setdefault("run_id", result.get("run_id"))
                    recorder.properties.setdefault("success", result.get("success"))
                emit(recorder, time.perf_counter() - started, kwargs.get("env"))

        return run_step

    return decorate
