"""What every step shares: the envelope the state machine sends, the time budget, the database session and the
shape of a failure."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from . import db_auth, runs
from .client import PagerDutyClient
from .config import Config
from .db import connect, describe_db_error
from .errors import DatabaseError, InputError, PipelineError

log = logging.getLogger("pagerduty_pipeline")


def log_event(event: str, **fields) -> None:
    log.info(json.dumps({"event": event, **fields}, default=str))


@dataclass(frozen=True)
class Envelope:
    """``{"execution_id", "execution_name", "state_name", "execution_start_time", "execution_timeout_seconds",
    "input"}``: who calls, and the execution's deadline (start + the state machine's timeout)."""

    execution_id: str | None
    execution_name: str | None
    state_name: str | None
    deadline: datetime | None
    input: object


def parse_envelope(event) -> Envelope:
    if not isinstance(event, dict) or "input" not in event:
        raise InputError("event must be the state machine envelope {execution_id, execution_name, state_name, "
                         "input}", "invalid_envelope")
    return Envelope(event.get("execution_id"), event.get("execution_name"), event.get("state_name"),
                    _deadline(event), event["input"])


def _deadline(event: dict) -> datetime | None:
    started, timeout = event.get("execution_start_time"), event.get("execution_timeout_seconds")
    if started is None and timeout is None:
        return None  # a local call: no execution around it
    try:
        start = datetime.fromisoformat(str(started))
        if start.tzinfo is None or isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0:
            raise ValueError
    except ValueError:
        raise InputError("execution_start_time must be an ISO 8601 time with a zone and execution_timeout_seconds "
                         f"a positive integer, got {started!r} and {timeout!r}", "invalid_envelope") from None
    return datetime.fromtimestamp(start.timestamp() + timeout, start.tzinfo)


def remaining_ms(context) -> float:
    fn = getattr(context, "get_remaining_time_in_millis", None) if context is not None else None
    return float(fn()) if callable(fn) else math.inf


@dataclass
class Budget:
    """Seconds a step may still spend: the Lambda's remaining time less the margin (then the step hands back its
    cursor), and the execution's remaining time less the reserve kept for step 3 and the error handler (then
    the run ends partial instead of hitting States.Timeout)."""

    context: object
    margin_seconds: float
    deadline: datetime | None
    reserve_seconds: float
    clock: Callable[[], float] = time.time

    def lambda_left(self) -> float:
        return remaining_ms(self.context) / 1000 - self.margin_seconds

    def execution_left(self) -> float:
        if self.deadline is None:
            return math.inf
        return self.deadline.timestamp() - self.clock() - self.reserve_seconds

    def left(self) -> float:
        return min(self.lambda_left(), self.execution_left())

    def out_of_time(self) -> bool:
        return self.left() <= 0

    def execution_bound(self) -> bool:
        """Whether the execution's deadline, not the Lambda's, is what stops the step."""
        return self.execution_left() <= self.lambda_left()


def budget_for(cfg: Config, context, envelope: Envelope, clock: Callable[[], float] = time.time) -> Budget:
    return Budget(context, cfg.time_margin_ms / 1000, envelope.deadline, cfg.execution_reserve_seconds, clock)


def make_client(cfg: Config, token: str, sleep=time.sleep, budget: Budget | None = None) -> PagerDutyClient:
    return PagerDutyClient(token, cfg.pagerduty_api_url, rate_per_minute=cfg.rate_limit_per_minute,
                           max_in_flight=cfg.max_in_flight, sleep=sleep,
                           budget=budget.left if budget is not None else None)


def open_db(cfg: Config, step: str):
    """A connection as the user of ``cfg.db_auth`` (password: DB_SECRET_ARN's secret; iam: DB_USER with a cached
    RDS IAM token). The password or token is passed to the driver only, never logged or put in a message."""
    user, password = db_auth.credentials(cfg)
    return connect(cfg, user, password, application_name=f"pagerduty-pipeline:{step}")


def db_error(exc: BaseException) -> DatabaseError:
    return DatabaseError(f"database error: {describe_db_error(exc)}", "db_error")


def failed(step: str, exc: PipelineError, conn=None, run_id=None, extra: dict | None = None) -> dict:
    """The step's failure result; the run is marked failed when the database still answers."""
    result = dict(extra or {})
    result.update(exc.to_result())
    result["run_id"] = run_id if run_id is not None else result.get("run_id")
    if conn is not None and run_id is not None:
        try:
            runs.mark_failed(conn, run_id, step, exc.code, exc.message)
        except Exception:  # noqa: BLE001 - the DB itself may be the failure; error handler retries
            pass
    log_event("step_failed", step=step, run_id=result["run_id"], error=exc.code, message=exc.message)
    return result
