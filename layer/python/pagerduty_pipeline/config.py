"""Environment parsing. Every problem names the variable."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from .analytics import WorkingHours
from .errors import ConfigError

DEFAULT_API_URL = "https://api.pagerduty.com"
SSL_MODES = ("disable", "require", "verify-full")
ALERT_POLICIES = ("all", "resolved", "off")
DB_AUTH_MODES = ("password", "iam")


@dataclass(frozen=True)
class Config:
    db_host: str
    db_port: int
    db_name: str
    db_secret_arn: str
    db_ssl: str
    db_ssl_root_cert: str | None
    pagerduty_token_secret_arn: str
    pagerduty_api_url: str
    rate_limit_per_minute: float
    time_margin_ms: int
    execution_reserve_seconds: int = 300
    chunk_hours: int = 24
    max_in_flight: int = 8
    alerts: str = "resolved"
    # password: user and password from the JSON secret of DB_SECRET_ARN (its username must equal DB_USER when
    # that is set); iam: user DB_USER, password an RDS IAM auth token signed for aws_region (db_auth.py)
    db_auth: str = "password"
    db_user: str = ""
    aws_region: str = ""
    working_hours: WorkingHours | None = None  # step 1 writes it into analytics.working_hours; None: left as is


def _required(env, name: str) -> str:
    value = env.get(name)
    if value is None or not value.strip():
        raise ConfigError(f"environment variable {name} is required", variable=name)
    return value.strip()


def load_config(env=None, *, need_pagerduty: bool = True) -> Config:
    """Read the pipeline environment (``os.environ`` by default)."""
    env = os.environ if env is None else env
    db_host = _required(env, "DB_HOST")
    db_name = _required(env, "DB_NAME")
    db_auth = (env.get("DB_AUTH") or "").strip().lower() or "password"
    if db_auth not in DB_AUTH_MODES:
        raise ConfigError(f"DB_AUTH must be one of {', '.join(DB_AUTH_MODES)}, got {db_auth!r}", variable="DB_AUTH")
    db_user = (env.get("DB_USER") or "").strip()
    aws_region = (env.get("AWS_REGION") or "").strip() or (env.get("AWS_DEFAULT_REGION") or "").strip()
    if db_auth == "password":
        db_secret_arn = _required(env, "DB_SECRET_ARN")
    else:  # iam: the function may not read the secret, and must not need it
        db_secret_arn = (env.get("DB_SECRET_ARN") or "").strip()
        if not db_user:
            raise ConfigError("DB_AUTH=iam needs DB_USER (the database user the IAM token logs in as)",
                              variable="DB_USER")
        if not aws_region:
            raise ConfigError("DB_AUTH=iam needs AWS_REGION (or AWS_DEFAULT_REGION): the region the IAM "
                              "database auth token is signed for", variable="AWS_REGION")
    raw_port = (env.get("DB_PORT") or "5432").strip()
    try:
        db_port = int(raw_port)
        if not 0 < db_port < 65536:
            raise ValueError
    except ValueError:
        raise ConfigError(f"DB_PORT must be a TCP port number, got {raw_port!r}", variable="DB_PORT") from None
    root_cert = (env.get("DB_SSL_ROOT_CERT") or "").strip() or None
    db_ssl = (env.get("DB_SSL") or "").strip().lower() or ("verify-full" if root_cert else "require")
    if db_ssl not in SSL_MODES:
        raise ConfigError(f"DB_SSL must be one of {', '.join(SSL_MODES)}, got {db_ssl!r}", variable="DB_SSL")
    if db_auth == "iam" and db_ssl == "disable":
        raise ConfigError("DB_SSL=disable cannot be used with DB_AUTH=iam: RDS accepts IAM auth tokens only over "
                          "TLS (use require or verify-full)", variable="DB_SSL")
    if db_ssl == "verify-full":
        if not root_cert:
            raise ConfigError("DB_SSL=verify-full needs DB_SSL_ROOT_CERT (a CA bundle file)",
                              variable="DB_SSL_ROOT_CERT")
        if not os.path.isfile(root_cert):
            raise ConfigError(f"DB_SSL_ROOT_CERT file not found: {root_cert}", variable="DB_SSL_ROOT_CERT")
    token_arn = _required(env, "PAGERDUTY_TOKEN_SECRET_ARN") if need_pagerduty else \
        (env.get("PAGERDUTY_TOKEN_SECRET_ARN") or "")
    api_url = (env.get("PAGERDUTY_API_URL") or DEFAULT_API_URL).strip().rstrip("/")
    parts = urlsplit(api_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"PAGERDUTY_API_URL must be an http(s) URL, got {api_url!r}", variable="PAGERDUTY_API_URL")
    try:
        rpm = float(env.get("PAGERDUTY_RATE_LIMIT_PER_MINUTE") or 900)
        if rpm <= 0:
            raise ValueError
    except ValueError:
        raise ConfigError("PAGERDUTY_RATE_LIMIT_PER_MINUTE must be a positive number",
                          variable="PAGERDUTY_RATE_LIMIT_PER_MINUTE") from None
    try:
        margin = int(env.get("PIPELINE_TIME_MARGIN_MS") or 60_000)
        if margin < 0:
            raise ValueError
    except ValueError:
        raise ConfigError("PIPELINE_TIME_MARGIN_MS must be a non-negative integer",
                          variable="PIPELINE_TIME_MARGIN_MS") from None
    reserve = _whole_number(env, "PIPELINE_EXECUTION_RESERVE_SECONDS", 300, minimum=0)
    chunk = _whole_number(env, "PIPELINE_CHUNK_HOURS", 24, minimum=1)
    in_flight = _whole_number(env, "PAGERDUTY_MAX_IN_FLIGHT", 8, minimum=1, maximum=32)
    alerts = (env.get("PIPELINE_ALERTS") or "resolved").strip().lower()
    if alerts not in ALERT_POLICIES:
        raise ConfigError(f"PIPELINE_ALERTS must be one of {', '.join(ALERT_POLICIES)}, got {alerts!r}",
                          variable="PIPELINE_ALERTS")
    try:
        hours = WorkingHours.from_env(env.get("ANALYTICS_WORKING_HOURS")) if env.get("ANALYTICS_WORKING_HOURS") else None
    except ValueError as exc:
        raise ConfigError(str(exc), variable="ANALYTICS_WORKING_HOURS") from None
    return Config(db_host, db_port, db_name, db_secret_arn, db_ssl, root_cert, token_arn, api_url, rpm, margin,
                  reserve, chunk, in_flight, alerts, db_auth, db_user, aws_region, hours)


def _whole_number(env, name: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
    raw = (env.get(name) or "").strip() or str(default)
    try:
        value = int(raw)
        if value < minimum or (maximum is not None and value > maximum):
            raise ValueError
    except ValueError:
        bounds = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise ConfigError(f"{name} must be a whole number {bounds}, got {raw!r}", variable=name) from None
    return value
