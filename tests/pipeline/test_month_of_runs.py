"""A month of daily runs: 20 consecutive daily windows against one PagerDuty account that keeps changing
between the runs (new incidents, acknowledgements, resolutions, notes and alerts on old incidents), with one
day lost to a fault storm and loaded again later. At the end the database must equal the API, and the
recorded coverage must be one gap-free interval.

Daily runs pass only ``until``: the pipeline derives ``since`` from its watermark (minus an overlap)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from pagerduty_pipeline import steps
from tests.pipeline.conftest import START, count, envelope, make_env, make_server, run_pipeline
from tests.pipeline.test_load import grouped
from tests.support.fake_pagerduty import generate_account, iso
from tests.support.pipeline import kept_alerts

DAYS = 20           # daily windows [D0, D1), [D1, D2), ... [D19, D20)
FAIL_DAY = 8        # the run for [D7, D8) fails on a fault storm, is re-run explicitly after day 9's run
NEW_PER_DAY = 12    # new incidents per evolved day (the account starts with 40 on day 1)
OVERLAP = timedelta(hours=1)


def day(k: int) -> datetime:
    return START + timedelta(days=k)


def D(k: int) -> str:  # noqa: N802 - D0, D1, ... as in the description
    return iso(day(k))


def merged(intervals) -> list[list[str]]:
    """Sorted, merged [since, until) intervals as ISO 'Z' strings."""
    spans = sorted((a, b) for a, b in intervals)
    out: list[list[datetime]] = []
    for a, b in spans:
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [[iso(a), iso(b)] for a, b in out]


def ok(out: dict) -> bool:
    return bool(out["step3"] and out["step3"].get("success"))


def last_result(out: dict) -> dict:
    """The result of the step that ended the run."""
    return out["step3"] or (out["step2"][-1] if out["step2"] else out["step1"])


def why(name: str, out: dict) -> str:
    """A failed run in one line: its window, the step that ended it and its error."""
    res = last_result(out)
    step = "step3" if out["step3"] else ("step2" if out["step2"] else "step1")
    return (f"{name} {out['step1'].get('window')}: {step} " +
            str({k: res.get(k) for k in ("success", "error", "message", "failed_checks") if k in res}))


def database_vs_api(db, acc, policy: str = "resolved") -> list[str]:
    """Every difference between the database and the account (alerts as the alert ``policy`` keeps them), as
    readable lines (empty: equal)."""
    problems: list[str] = []
    # no duplicate ids, and as many rows as the API has objects
    n_notes = sum(len(v) for v in acc.notes.values())
    acc_alerts = kept_alerts(acc, policy)
    n_alerts = sum(len(v) for v in acc_alerts.values())
    for table, expected in (("incidents", len(acc.incidents)), ("log_entries", len(acc.log_entries)),
                            ("notes", n_notes), ("alerts", n_alerts)):
        rows, distinct = db.run(f"SELECT count(*), count(DISTINCT id) FROM pagerduty.{table}")[0]
        if rows != distinct:
            problems.append(f"{table}: {rows - distinct} duplicate ids")
        if rows != expected:
            problems.append(f"{table}: {rows} rows in the database, {expected} in the API")

    rows = {r[0]: r[1:] for r in db.run("SELECT id, status, resolved_at, urgency, title FROM pagerduty.incidents")}
    logs = grouped(db.run("SELECT incident_id, id FROM pagerduty.log_entries"))
    notes = grouped(db.run("SELECT incident_id, id FROM pagerduty.notes"))
    alerts = grouped((i, (a, s)) for i, a, s in db.run("SELECT incident_id, id, status FROM pagerduty.alerts"))
    assign = grouped(db.run("SELECT incident_id, user_id FROM pagerduty.incident_assignments"))
    acc_logs = grouped((e["incident"]["id"], e["id"]) for e in acc.log_entries.values())
    bad: dict[str, list[str]] = {}
    for inc_id, inc in acc.incidents.items():
        row = rows.get(inc_id)
        if row is None:
            bad.setdefault("missing incident", []).append(inc_id)
            continue
        status, resolved_at, urgency, title = row
        want_resolved = datetime.fromisoformat(inc["resolved_at"]) if inc["resolved_at"] else None
        checks = {
            "status": status == inc["status"],
            "resolved_at": resolved_at == want_resolved,
            "urgency": urgency == inc["urgency"],
            "title": title == inc["title"],
            "log entry ids": logs.get(inc_id, set()) == acc_logs.get(inc_id, set()),
            "note ids": notes.get(inc_id, set()) == {n["id"] for n in acc.notes.get(inc_id, [])},
            "alert ids and statuses": alerts.get(inc_id, set()) == acc_alerts.get(inc_id, set()),
            "assignees": assign.get(inc_id, set()) == {a["assignee"]["id"] for a in inc["assignments"]},
        }
        for what, equal in checks.items():
            if not equal:
                bad.setdefault(what, []).append(inc_id)
    for what, ids in bad.items():
        problems.append(f"{what} differ for {len(ids)} of {len(acc.incidents)} incidents, e.g. {ids[:5]}")
    return problems


def expected_coverage(upto: int) -> dict:
    """Step 3's coverage once the loaded range is [D0, D<upto>): one merged interval, no gaps."""
    return {"scope": "all", "intervals": [[D(0), D(upto)]], "gaps": [], "watermark": D(upto)}


def coverage_problems(runs: list[tuple[str, dict, int]]) -> list[str]:
    """Step 3's coverage of every successful run against the range loaded so far."""
    problems: list[str] = []
    missing = [name for name, out, _ in runs if not isinstance(out["step3"].get("coverage"), dict)]
    if missing:
        problems.append(f"step 3's result has no 'coverage' in {len(missing)} of {len(runs)} runs "
                        f"({', '.join(missing[:3])}, ...; its keys: {sorted(runs[0][1]['step3'])})")
    for name, out, upto in runs:
        cov = out["step3"].get("coverage")
        if isinstance(cov, dict):
            got = {k: cov.get(k) for k in expected_coverage(upto)}
            if got != expected_coverage(upto):
                problems.append(f"{name}: coverage {got}, expected {expected_coverage(upto)}")
    return problems


def test_a_month_of_daily_runs(pg, secrets_arns, db):
    acc = generate_account(40, 17, START, day(1))
    rnd = random.Random(20240301)
    runs: list[tuple[str, dict, int]] = []  # (execution name, result, D index the loaded range reaches)
    with make_server(account=acc) as server:
        env = make_env(pg, secrets_arns, server)
        out = run_pipeline(env, {"since": D(0), "until": D(1)}, name="day-01")
        assert ok(out), why("day-01", out)
        runs.append(("day-01", out, 1))
        for k in range(2, DAYS + 1):
            acc.evolve(day(k - 1), day(k), rnd, new_incidents=NEW_PER_DAY)
            assert acc.status_log_mismatches() == []
            name = f"day-{k:02d}"
            if k == FAIL_DAY:
                # a fault storm: every request of this run fails with 500, whatever the path
                server.inject(500, count=1000)
                before = len(server.requests)
                out = run_pipeline(env, {"until": D(k)}, name=name)
                storm = server.requests[before:]
                server.clear_faults()
                assert storm and all(r.status == 500 for r in storm)
                failed = last_result(out)
                assert failed["success"] is False, failed
                assert out["step3"] is None
                # the state machine's Catch hands the failure to the error handler
                step = "Step1" if not out["step2"] else "Step2"
                handled = steps.handle_error(envelope({"failed_step": step, "state": failed}, name, "HandleError"),
                                             env=env)
                assert handled["success"] is False
                assert db.run("SELECT status FROM pagerduty.pipeline_runs WHERE execution_name = :n",
                              n=name) == [["failed"]]
                continue
            out = run_pipeline(env, {"until": D(k)}, name=name)
            assert ok(out), why(name, out)
            # since = the watermark minus the one-hour overlap (after the failed day: the last good run's until)
            since = day(k - 1 if k != FAIL_DAY + 1 else FAIL_DAY - 1) - OVERLAP
            assert out["step1"]["window"] == {"since": iso(since), "until": D(k)}, name
            runs.append((name, out, k))
            if k == FAIL_DAY + 1:
                name = f"day-{FAIL_DAY:02d}-rerun"
                out = run_pipeline(env, {"since": D(FAIL_DAY - 1), "until": D(FAIL_DAY)}, name=name)
                assert ok(out), why(name, out)
                runs.append((name, out, k))  # the loaded range stays [D0, D9): the watermark never goes back

        assert len(runs) == DAYS  # 19 successful daily runs + the re-run
        assert len({r[0] for r in runs}) == DAYS
        assert count(db, "pipeline_runs") == DAYS + 1
        assert count(db, "pipeline_runs", "status = 'succeeded'") == DAYS

    # the database equals the API, incident by incident
    problems = database_vs_api(db, acc)
    # coverage: every successful run reports the merged range loaded so far; the last one [D0, D20), no gaps,
    # watermark D20
    assert runs[-1][0] == f"day-{DAYS:02d}" and runs[-1][2] == DAYS  # so the final run is held to [D0, D20)
    problems += coverage_problems(runs)
    try:
        rows = db.run("SELECT since, until, run_id FROM pagerduty.coverage WHERE scope = 'all'")
    except Exception as exc:  # noqa: BLE001 - the table is part of what is tested
        problems.append(f"pagerduty.coverage cannot be read: {exc}")
        try:
            db.run("ROLLBACK")  # leave no aborted transaction behind
        except Exception:  # noqa: BLE001 - none was open
            pass
    else:
        if merged((r[0], r[1]) for r in rows) != [[D(0), D(DAYS)]]:
            problems.append(f"pagerduty.coverage merges to {merged((r[0], r[1]) for r in rows)}, "
                            f"expected [[{D(0)}, {D(DAYS)}]]")
        failed_run = db.run("SELECT run_id FROM pagerduty.pipeline_runs WHERE execution_name = :n",
                            n=f"day-{FAIL_DAY:02d}")[0][0]
        if any(r[2] == failed_run for r in rows):
            problems.append("pagerduty.coverage has a window of the failed run")
    assert not problems, "\n".join(problems)
