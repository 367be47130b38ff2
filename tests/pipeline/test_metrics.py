"""CloudWatch metrics (EMF log lines): every line follows the spec (checked by tests/support/emf.py, not by the
emitter's own check), and the real steps, against the real PostgreSQL and the local PagerDuty server, report what
really happened: rows in the tables, requests the server saw, 429s, checks, freshness; also when a step fails. A
failure to write metrics never fails a step."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import threading
import time
from datetime import datetime
from unittest import mock

import pytest

from pagerduty_pipeline import metrics, steps
from pagerduty_pipeline.metrics import CONTRACT, EmfError, MetricRecord, StepMetrics
from tests.pipeline.conftest import DATA_TABLES, count, envelope, run_pipeline
from tests.pipeline.test_checks import CORRUPTIONS, loaded
from tests.pipeline.test_load import WEEK
from tests.support.emf import violations

METRICS_ENV = {"METRICS_NAMESPACE": "PagerDutyPipelineTest", "PIPELINE_NAME": "test-pipeline"}


@contextlib.contextmanager
def captured():
    """The lines the steps write inside the block (instead of stdout)."""
    lines: list[str] = []
    with metrics.writing_to(lines.append):
        yield lines


def records(lines: list[str]) -> list[MetricRecord]:
    """Each line checked against the spec and the contract, then read back."""
    for line in lines:
        assert line.endswith("\n") and line.count("\n") == 1, line
        assert violations(line) == [], line
    out = metrics.parse_lines("".join(lines))
    for r in out:
        unit, dimensions = CONTRACT[r.name]
        assert r.unit == unit and tuple(r.dimensions) == dimensions, r
    return out


def values(recs: list[MetricRecord], name: str, **dimensions: str) -> list[float]:
    return [v for r in recs if r.name == name and all(r.dimensions.get(k) == d for k, d in dimensions.items())
            for v in r.values]


def rows_by_table(recs: list[MetricRecord]) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in recs:
        if r.name == "RowsWritten":
            out[r.dimensions["Table"]] = out.get(r.dimensions["Table"], 0) + r.value
    return out


# -- the format ----------------------------------------------------------------------------------------------------

def full_step() -> StepMetrics:
    class Client:
        request_count, rate_limited_count, retry_count = 12, 2, 3

    class Loader:
        changed = {"incidents": 40, "log_entries": 0}

    m = StepMetrics("lambda_3", calls_api=True)
    m.count_api(Client())
    m.count_rows(Loader())
    m.checked(1, 2)
    m.fresh("service_ids=P1;urgencies=high", 93.5)
    m.note(run_id=7, execution_id="arn:aws:states:eu-west-2:1:execution:sm:x")
    return m


def test_a_steps_documents_follow_the_spec_and_the_contract():
    docs = full_step().documents("PagerDutyPipeline", "prod", 1234.5678, 1_764_669_600_000)
    lines = [metrics.line_of(d) for d in docs]
    recs = records(lines)
    assert {(r.name, tuple(sorted(r.dimensions.items())), r.values) for r in recs} == {
        ("StepDuration", (("Pipeline", "prod"), ("Step", "lambda_3")), (1234.568,)),
        ("ApiRequests", (("Pipeline", "prod"), ("Step", "lambda_3")), (12,)),
        ("ApiRateLimited", (("Pipeline", "prod"), ("Step", "lambda_3")), (2,)),
        ("ApiRetries", (("Pipeline", "prod"), ("Step", "lambda_3")), (3,)),
        ("RowsWritten", (("Pipeline", "prod"), ("Table", "incidents")), (40,)),
        ("RowsWritten", (("Pipeline", "prod"), ("Table", "log_entries")), (0,)),
        ("ChecksFailed", (("Pipeline", "prod"),), (1,)),
        ("ChecksWarned", (("Pipeline", "prod"),), (2,)),
        ("DataFreshness", (("Pipeline", "prod"), ("Scope", "service_ids=P1;urgencies=high")), (93.5,)),
    }
    assert {r.namespace for r in recs} == {"PagerDutyPipeline"} and {r.timestamp_ms for r in recs} == {
        1_764_669_600_000}
    first = json.loads(lines[0])  # the ids are root members beside the metrics, not dimensions
    assert first["run_id"] == 7 and first["execution_id"].endswith(":x")
    assert first["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Pipeline", "Step"]]
    assert all(r.properties["run_id"] == 7 for r in recs)


def test_a_step_without_api_or_rows_writes_its_duration_only():
    docs = StepMetrics("lambda_error_handler").documents("N", "p", 5, 1)
    assert [d["_aws"]["CloudWatchMetrics"][0]["Metrics"] for d in docs] == [[{"Name": "StepDuration",
                                                                              "Unit": "Milliseconds"}]]
    # a step that calls the API reports 0s before it made a client
    docs = StepMetrics("lambda_1", calls_api=True).documents("N", "p", 5, 1)
    assert {m["Name"]: docs[0][m["Name"]] for m in docs[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"]} == {
        "StepDuration": 5, "ApiRequests": 0, "ApiRateLimited": 0, "ApiRetries": 0}


@pytest.mark.parametrize("dimensions, values, properties, problem", [
    ({"Pipeline": "p"}, {"M": ("Furlongs", 1)}, None, "not a CloudWatch unit"),
    ({"Pipeline": "p"}, {"M": ("Count", list(range(101)))}, None, "array of 1 to 100 numbers"),
    ({"Pipeline": "p"}, {"M": ("Count", [])}, None, "array of 1 to 100 numbers"),
    ({"Pipeline": "p"}, {"M": ("Count", float("nan"))}, None, "number"),
    ({"Pipeline": "p"}, {"M": ("Count", True)}, None, "number"),
    ({"Pipeline": "p"}, {"M": ("Count", "3")}, None, "number"),
    ({"Pipeline": "p"}, {"": ("Count", 1)}, None, "metric Name"),
    ({"Pipeline": "p"}, {"M" * 1025: ("Count", 1)}, None, "metric Name"),
    ({f"D{i}": "v" for i in range(31)}, {"M": ("Count", 1)}, None, "at most 30"),
    ({"Pipeline": 3}, {"M": ("Count", 1)}, None, "dimension Pipeline"),
    ({"Pipeline": ""}, {"M": ("Count", 1)}, None, "dimension Pipeline"),
    ({"Pipeline": "p"}, {"M": ("Count", 1)}, {"Pipeline": "other"}, "would overwrite"),
    ({"Pipeline": "p"}, {"M": ("Count", 1)}, {"M": 2}, "would overwrite"),
])
def test_a_document_that_would_break_the_spec_is_refused(dimensions, values, properties, problem):
    with pytest.raises(EmfError) as exc:
        metrics.document("N", dimensions, values, timestamp_ms=1, properties=properties)
    assert problem in str(exc.value)


def test_the_limits_themselves_are_allowed():
    doc = metrics.document("N" * 255, {f"D{i}": "v" * 1024 for i in range(30)},
                           {f"M{i}": ("Count", list(range(100))) for i in range(100)}, timestamp_ms=1)
    assert violations(metrics.line_of(doc)) == []
    assert len(metrics.parse_lines(metrics.line_of(doc))) == 100


def test_the_test_validator_finds_what_the_spec_forbids():
    good = metrics.line_of(metrics.document("N", {"Pipeline": "p"}, {"M": ("Count", 1)}, timestamp_ms=5))
    assert violations(good) == []
    doc = json.loads(good)
    for breakage, expected in [
        (lambda d: d.pop("_aws"), "no _aws"),
        (lambda d: d["_aws"].update(Timestamp=1.5), "Timestamp"),
        (lambda d: d["_aws"].update(Timestamp="2026-12-02"), "Timestamp"),
        (lambda d: d.pop("Pipeline"), "dimension Pipeline"),
        (lambda d: d.pop("M"), "value None"),
        (lambda d: d.update(M=[1] * 101), "101 values"),
        (lambda d: d["_aws"]["CloudWatchMetrics"][0]["Metrics"][0].update(Unit="Hours"), "Unit"),
        (lambda d: d["_aws"]["CloudWatchMetrics"][0]["Dimensions"].append([f"D{i}" for i in range(31)]), "30"),
    ]:
        broken = json.loads(good)
        breakage(broken)
        found = violations(json.dumps(broken))
        assert any(expected in v for v in found), (expected, found)
        if "_aws" in broken:  # and the layer's reader refuses it as well
            with pytest.raises(EmfError):
                metrics.parse_lines(json.dumps(broken))
    assert doc["_aws"]["Timestamp"] == 5


def test_parse_lines_skips_log_lines_and_reads_every_document():
    text = "".join([
        "INFO something happened\n",
        json.dumps({"event": "step_succeeded"}) + "\n",
        metrics.line_of(metrics.document("N", {"Pipeline": "p", "Step": "lambda_2"}, {
            "StepDuration": ("Milliseconds", 10), "ApiRequests": ("Count", [3, 4])}, timestamp_ms=9,
            properties={"run_id": 1})),
        "\n",
    ])
    recs = metrics.parse_lines(text)
    assert [(r.name, r.unit, r.values, r.dimensions, r.properties) for r in recs] == [
        ("StepDuration", "Milliseconds", (10,), {"Pipeline": "p", "Step": "lambda_2"}, {"run_id": 1}),
        ("ApiRequests", "Count", (3, 4), {"Pipeline": "p", "Step": "lambda_2"}, {"run_id": 1})]
    assert recs[1].value == 7
    with pytest.raises(EmfError, match="line 1 is not JSON"):
        metrics.parse_lines('{"_aws": \n')


# -- stdout ----------------------------------------------------------------------------------------------------------

def test_lines_go_to_stdout_whole_one_write_and_a_flush_each_also_from_many_threads():
    events: list[tuple] = []

    class Stdout:
        def write(self, text: str) -> int:
            events.append(("write", text))
            time.sleep(0)  # let another thread in, if the lock did not keep it out
            return len(text)

        def flush(self) -> None:
            time.sleep(0)
            events.append(("flush",))

    def emit_many(n: int) -> None:
        for i in range(50):
            m = StepMetrics(f"lambda_{n}", calls_api=True)
            m.note(run_id=i)
            assert metrics.emit(m, 0.01, METRICS_ENV)

    with mock.patch.object(sys, "stdout", Stdout()):
        threads = [threading.Thread(target=emit_many, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(events) == 2 * 8 * 50
    for k in range(0, len(events), 2):
        (kind, line), (after,) = events[k], events[k + 1]
        assert kind == "write" and after == "flush" and line.endswith("\n") and line.count("\n") == 1
        assert violations(line) == []


def test_the_default_destination_is_stdout(capsys):
    m = StepMetrics("lambda_3")
    assert metrics.emit(m, 0.002, {})
    out = capsys.readouterr().out
    (rec,) = metrics.parse_lines(out)
    assert (rec.namespace, rec.name, rec.dimensions, rec.values) == (
        "PagerDutyPipeline", "StepDuration", {"Pipeline": "local", "Step": "lambda_3"}, (2.0,))


# -- metrics never fail a step ---------------------------------------------------------------------------------------

def test_a_failing_destination_or_a_bad_namespace_is_logged_and_the_step_goes_on(env, db, server, caplog):
    caplog.set_level(logging.WARNING, logger="pagerduty_pipeline")

    def broken(line: str) -> None:
        raise OSError("stdout is gone")

    with metrics.writing_to(broken):
        out = run_pipeline({**env, **METRICS_ENV}, WEEK, name="no-metrics")
    assert out["step3"]["success"], out["step3"]
    assert caplog.text.count("metrics_not_written") == 3 and "stdout is gone" in caplog.text
    caplog.clear()
    with captured() as lines:
        r = steps.validate_run(envelope({"run_id": 1, "window": {}}, name="x"),
                               env={**env, "METRICS_NAMESPACE": "N" * 300})
    assert r["success"] is False and r["error"] == "incomplete_load" and lines == []
    assert "metrics_not_written" in caplog.text and "Namespace" in caplog.text


def test_an_exception_in_a_step_still_writes_its_duration(env, db, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("pagerduty_pipeline.step_validate.runs.set_step", explode)  # a bug, not a PipelineError
    with captured() as lines, pytest.raises(RuntimeError, match="a bug"):
        steps.validate_run(envelope({"run_id": 1, "window": {}, "complete": True}, name="bug"), env=env)
    (rec,) = records(lines)
    assert rec.name == "StepDuration" and rec.dimensions["Step"] == "lambda_3"


# -- the real steps --------------------------------------------------------------------------------------------------

def test_a_first_load_reports_its_rows_requests_checks_and_freshness(env, db, server):
    env = {**env, **METRICS_ENV}
    with captured() as lines:
        out = run_pipeline(env, WEEK, name="first")
    finished = time.time()
    assert out["step3"]["success"], out["step3"]
    recs = records(lines)
    assert {r.namespace for r in recs} == {"PagerDutyPipelineTest"}
    assert {r.dimensions["Pipeline"] for r in recs} == {"test-pipeline"}
    # one StepDuration per invocation
    assert len(values(recs, "StepDuration", Step="lambda_1")) == 1
    assert len(values(recs, "StepDuration", Step="lambda_2")) == len(out["step2"])
    assert len(values(recs, "StepDuration", Step="lambda_3")) == 1
    assert all(v > 0 for v in values(recs, "StepDuration"))
    # every row in the data tables, as the steps wrote them
    in_db = {t: count(db, t) for t in DATA_TABLES}
    assert in_db["incidents"] == len(server.account.incidents) and in_db["notes"] > 0 and in_db["alerts"] > 0
    assert {t: n for t, n in rows_by_table(recs).items() if n} == {t: n for t, n in in_db.items() if n}
    # every request the server saw, counted by the steps that made them
    assert sum(values(recs, "ApiRequests")) == server.request_count() > 0
    assert values(recs, "ApiRequests", Step="lambda_1") == [out["step1"]["counts"]["api_requests"]]
    assert sum(values(recs, "ApiRateLimited")) == 0 and sum(values(recs, "ApiRetries")) == 0
    assert not values(recs, "ApiRequests", Step="lambda_3")
    # the checks, and how far behind the scope's data is
    assert values(recs, "ChecksFailed") == [0]
    assert values(recs, "ChecksWarned") == [len(out["step3"]["warnings"])]
    watermark = datetime.fromisoformat(out["step3"]["watermark"]).timestamp()
    (freshness,) = values(recs, "DataFreshness", Scope="all")
    assert finished - watermark - 60 <= freshness <= finished - watermark
    # the ids that lead to the run's logs
    run_id = out["step1"]["run_id"]
    assert {r.properties.get("run_id") for r in recs} == {run_id}
    assert {r.properties.get("execution_id") for r in recs} == {envelope({}, name="first")["execution_id"]}


def test_rows_written_are_the_rows_the_database_changed_not_the_rows_sent(env, db, server):
    assert run_pipeline(env, WEEK, name="once")["step3"]["success"]
    with captured() as lines:
        out = run_pipeline(env, WEEK, name="twice")
    assert out["step3"]["success"], out["step3"]
    rows = rows_by_table(records(lines))
    # the same window again: the listings and log entries are sent again and skipped as unchanged (notes and alerts
    # are not fetched again) ...
    assert {t: rows[t] for t in ("teams", "users", "escalation_policies", "priorities", "services", "log_entries")
            } == dict.fromkeys(("teams", "users", "escalation_policies", "priorities", "services", "log_entries"), 0)
    assert rows.get("notes", 0) == rows.get("alerts", 0) == 0
    # ... and an incident as new as the stored one replaces it (with its assignments and teams), by design
    assert rows["incidents"] == count(db, "incidents")
    assert rows["incident_teams"] == count(db, "incident_teams")


def test_a_429_is_counted_with_its_retry(env, db, server):
    server.inject(429, count=1, path="/incidents")
    with captured() as lines:
        out = run_pipeline(env, WEEK, name="limited")
    assert out["step3"]["success"], out["step3"]
    recs = records(lines)
    assert [r.status for r in server.requests].count(429) == 1
    assert sum(values(recs, "ApiRateLimited")) == 1
    assert sum(values(recs, "ApiRetries")) == 1
    assert sum(values(recs, "ApiRequests")) == server.request_count()


def test_failing_steps_report_their_duration_and_requests(env, db, server):
    with captured() as lines:
        refused = steps.start_run(envelope({"since": "yesterday"}, name="refused"), env=env)
    assert refused["success"] is False and refused["error"] == "invalid_date", refused
    recs = records(lines)
    assert [(r.name, r.value) for r in recs if r.name != "StepDuration"] == [
        ("ApiRequests", 0), ("ApiRateLimited", 0), ("ApiRetries", 0)]  # no client made: 0s, as the alarms expect
    assert len(values(recs, "StepDuration", Step="lambda_1")) == 1
    assert {r.properties.get("success") for r in recs} == {False}

    server.inject(401, count=100, path="/log_entries")
    with captured() as lines:
        out = run_pipeline(env, WEEK, name="unauthorized")
    failed = out["step2"][-1]
    assert failed["success"] is False and failed["error"] == "pagerduty_unauthorized", failed
    recs = records(lines)
    assert len(values(recs, "StepDuration", Step="lambda_2")) == 1
    assert values(recs, "ApiRequests", Step="lambda_2") == [server.request_count() - out["step1"]["counts"][
        "api_requests"]]
    assert not values(recs, "StepDuration", Step="lambda_3")


def test_a_failing_check_is_counted_before_the_step_returns(env, db, server):
    check = "status_matches_latest_log_entry"
    r2 = loaded(env, "bad-data")
    for sql in CORRUPTIONS[check]:
        db.run(sql)
    with captured() as lines:
        r3 = steps.validate_run(envelope(r2, name="bad-data"), env=env)
    assert r3["success"] is False and r3["error"] == "validation_failed" and r3["failed_checks"] == [check]
    recs = records(lines)
    assert values(recs, "ChecksFailed") == [1]
    assert values(recs, "ChecksWarned") == [len(r3["warnings"])]
    assert not values(recs, "DataFreshness")  # no watermark moved
    assert len(values(recs, "StepDuration", Step="lambda_3")) == 1


def test_the_error_handler_reports_its_duration(env, db, server):
    with captured() as lines:
        out = steps.handle_error(envelope({"failed_step": "Step2", "state": {"success": False}}, name="nothing"),
                                 env=env)
    assert out["recorded"] is False
    (rec,) = records(lines)
    assert (rec.name, rec.dimensions["Step"]) == ("StepDuration", "lambda_error_handler")


def test_a_capture_ends_with_its_block():
    buffer = io.StringIO()
    with metrics.writing_to(buffer.write):
        metrics.emit(StepMetrics("lambda_1"), 0.001, {})
    assert metrics.set_writer(None) is metrics.write_stdout  # back to stdout
    assert len(metrics.parse_lines(buffer.getvalue())) == 1
