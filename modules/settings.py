"""Typed deployment settings: embedded defaults plus per-environment overrides from one reviewed file.

Everything the stack needs is validated here, before any construct exists, so a bad value stops the
synth with the field and the rule named and nothing written.
"""

from __future__ import annotations

import json
import re
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ROOT = Path(__file__).resolve().parent.parent
ENVIRONMENTS_FILE = ROOT / "config" / "environments.json"

VPC_ID = r"^vpc-(?:[0-9a-f]{8}|[0-9a-f]{17})$"
SUBNET_ID = r"^subnet-(?:[0-9a-f]{8}|[0-9a-f]{17})$"
SECRET_ARN = r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+$"
# CloudWatch Logs accepts only these retention periods (days).
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192,
                      2557, 2922, 3288, 3653)

# What EC2 accepts in a security group description (and RDS in a parameter group's), up to 255 characters.
DESCRIPTION = r"^[A-Za-z0-9 ._\-:/()#,@\[\]+=&;{}!$*]{1,255}$"

SubnetId = Annotated[str, Field(pattern=SUBNET_ID)]

# EventBridge Scheduler's expressions: rate(value unit), cron(6 fields), at(yyyy-mm-ddThh:mm:ss). A rate of 1 takes
# the singular unit and a larger one the plural, as EventBridge writes them.
SCHEDULE_RATE = re.compile(r"^rate\((?P<value>[1-9]\d*) (?P<unit>minutes?|hours?|days?)\)$")
SCHEDULE_CRON = re.compile(r"^cron\((?P<fields>\S+( \S+){5})\)$")
SCHEDULE_AT = re.compile(r"^at\(\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d\)$")
_MINUTES = {"minute": 1, "hour": 60, "day": 1440}
# An IANA time zone name as Scheduler takes it ("UTC", "Europe/London", "America/Argentina/Buenos_Aires").
TIMEZONE = r"^(UTC|[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){1,2})$"
EMAIL = r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
HTTPS_URL = r"^https://[A-Za-z0-9.-]+(:\d{1,5})?(/[^\s]*)?$"
CLOCK = r"^([01]\d|2[0-3]):[0-5]\d$"  # a time of day, HH:MM
ALARM_WINDOW_SECONDS = 86_400  # CloudWatch: an alarm's period x evaluation periods may not exceed one day


PRODUCTION_ENVIRONMENTS = frozenset({"prod", "production", "prd"})  # names that never deploy weaker settings


class SettingsError(ValueError):
    """Settings that cannot be synthesized; the message names each field and rule."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class NetworkSettings(_Strict):
    vpc_id: str = Field("vpc-0e01c3c7ae69fd92b", pattern=VPC_ID)
    private_subnet_ids: tuple[SubnetId, ...] = ("subnet-0e2842b86fa358d19", "subnet-0ff5a9d643e0b97c8")
    # Where the functions may open HTTPS (PagerDuty, AWS APIs through NAT). Narrow it when the
    # subnets reach AWS through VPC endpoints and PagerDuty through a proxy.
    https_egress_cidrs: tuple[str, ...] = ("0.0.0.0/0",)
    # A security group's description cannot change in place: a new one replaces the group (names come from a
    # prefix, so the replacement is created before the old group goes). None: the built-in text.
    lambda_sg_description: str | None = Field(None, pattern=DESCRIPTION)
    rds_sg_description: str | None = Field(None, pattern=DESCRIPTION)

    @field_validator("private_subnet_ids")
    @classmethod
    def _two_distinct_subnets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) < 2:
            raise ValueError(f"at least two private subnets (in two availability zones) are required, got {len(value)}")
        if len(set(value)) != len(value):
            raise ValueError("subnet IDs must be distinct")
        return value

    @field_validator("https_egress_cidrs")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one CIDR is required (the functions must reach PagerDuty and AWS APIs)")
        for cidr in value:
            if not re.fullmatch(r"(\d{1,3}\.){3}\d{1,3}/\d{1,2}", cidr):
                raise ValueError(f"{cidr!r} is not an IPv4 CIDR such as 10.0.0.0/16")
        return value


class DatabaseSettings(_Strict):
    # The major version only (the default) lets RDS choose the minor version and upgrade it in the maintenance
    # window: the provider treats "17" as matching 17.5, 17.6, ... so plans never try to go back. A pinned
    # minor ("17.5") is allowed, but plans fail once RDS upgrades it and new instances fail once AWS retires it.
    engine_version: str = Field("17", pattern=r"^17(\.\d+)?$")
    instance_class: str = Field("db.t4g.micro", pattern=r"^db\.[a-z0-9]+\.[a-z0-9]+$")
    allocated_storage_gb: int = Field(20, ge=20, le=65536)
    max_allocated_storage_gb: int = Field(30, ge=20, le=65536)
    storage_type: Literal["gp3", "gp2", "io1", "io2"] = "gp3"
    database_name: str = Field("postgres_db_stepfuncproject", pattern=r"^[a-z][a-z0-9_]{0,62}$")
    master_username: str = Field("pipeline_admin", pattern=r"^[a-z][a-z0-9_]{0,15}$")
    port: int = Field(5432, ge=1150, le=65535)
    multi_az: bool = False
    backup_retention_days: int = Field(7, ge=7, le=35)
    performance_insights_retention_days: int = 7
    deletion_protection: bool = True
    final_snapshot: bool = True
    # iam-db-auth-error: why a function's IAM token was refused (wrong user, policy, or clock), not in postgresql's
    log_exports: tuple[Literal["postgresql", "upgrade", "iam-db-auth-error"], ...] = (
        "postgresql", "upgrade", "iam-db-auth-error")
    # How the functions check the server: verify-full checks its certificate against the RDS CA bundle
    # (modules/ca_bundle.py) and its host name; require only encrypts, which anything on the network path can
    # answer. require is for a first dev deploy before `make rds-ca`; a production environment refuses it.
    tls: Literal["verify-full", "require"] = "verify-full"
    log_min_duration_statement_ms: int = Field(1000, ge=-1)
    monitoring_interval_seconds: Literal[0, 1, 5, 10, 15, 30, 60] = 60
    parameter_group_description: str | None = Field(None, pattern=DESCRIPTION)  # a change replaces the group

    @field_validator("master_username")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in {"postgres", "rdsadmin", "admin", "root"}:
            raise ValueError(f"{value!r} is reserved by RDS PostgreSQL")
        return value

    @field_validator("performance_insights_retention_days")
    @classmethod
    def _pi_retention(cls, value: int) -> int:
        if value != 7 and (value % 31 or not 31 <= value <= 713) and value != 731:
            raise ValueError("must be 7, a multiple of 31 up to 713, or 731 days")
        return value

    @model_validator(mode="after")
    def _storage_can_grow(self) -> DatabaseSettings:
        if self.max_allocated_storage_gb < self.allocated_storage_gb:
            raise ValueError(
                f"max_allocated_storage_gb ({self.max_allocated_storage_gb}) must be at least "
                f"allocated_storage_gb ({self.allocated_storage_gb})")
        return self


class FunctionSettings(_Strict):
    runtime: Literal["python3.13"] = "python3.13"
    architecture: Literal["arm64", "x86_64"] = "arm64"
    timeout_seconds: int = Field(600, ge=60, le=900)
    memory_mb: int = Field(512, ge=128, le=10240)
    log_level: Literal["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"] = "INFO"
    reserved_concurrency: int | None = Field(None, ge=1, le=1000)


class RetrySettings(_Strict):
    max_attempts: int = Field(3, ge=0, le=10)
    interval_seconds: int = Field(1, ge=1, le=300)
    backoff_rate: float = Field(2.0, ge=1.0, le=10.0)
    jitter: Literal["FULL", "NONE"] = "FULL"


class WorkflowSettings(_Strict):
    timeout_seconds: int = Field(2700, ge=60, le=31_536_000)
    log_level: Literal["ALL", "ERROR", "FATAL", "OFF"] = "ERROR"
    # Step payloads carry run ids, windows and counts (no incident data); the log group is KMS-encrypted.
    include_execution_data: bool = True
    retry: RetrySettings = RetrySettings()


def rate_minutes(expression: str) -> int | None:
    """The interval of a rate() schedule expression in minutes; None for cron() and at()."""
    match = SCHEDULE_RATE.match(expression)
    return int(match["value"]) * _MINUTES[match["unit"].rstrip("s")] if match else None


class ScheduleSettings(_Strict):
    """The EventBridge Scheduler schedule that starts the incremental run (input `{}`)."""

    # None: on in production environments (PRODUCTION_ENVIRONMENTS), off elsewhere (Settings decides). The schedule
    # exists either way, so turning it on later is an in-place change of its state.
    enabled: bool | None = None
    expression: str = "rate(1 hour)"
    timezone: str = Field("UTC", pattern=TIMEZONE)
    # Retries of a start that failed (throttled, the state machine unavailable), then the dead-letter queue.
    max_retry_attempts: int = Field(3, ge=0, le=185)
    max_event_age_seconds: int = Field(3600, ge=60, le=86_400)

    @property
    def is_enabled(self) -> bool:
        return self.enabled is True

    @field_validator("expression")
    @classmethod
    def _expression(cls, value: str) -> str:
        match = SCHEDULE_RATE.match(value)
        if match:
            plural = match["unit"].endswith("s")
            if (match["value"] == "1") == plural:
                raise ValueError(f"{value!r}: EventBridge writes a rate of 1 with the singular unit (rate(1 hour)) "
                                 "and larger ones with the plural (rate(2 hours))")
            return value
        cron = SCHEDULE_CRON.match(value)
        if cron:
            day_of_month, day_of_week = cron["fields"].split(" ")[2], cron["fields"].split(" ")[4]
            if "?" not in (day_of_month, day_of_week):
                raise ValueError(f"{value!r}: one of day-of-month and day-of-week must be '?'")
            return value
        if SCHEDULE_AT.match(value):
            return value
        raise ValueError(f"{value!r} is not an EventBridge Scheduler expression: rate(<n> minutes|hours|days), "
                         "cron(<minutes> <hours> <day-of-month> <month> <day-of-week> <year>) or "
                         "at(yyyy-mm-ddThh:mm:ss)")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        # Checked against the IANA database where the machine has one; without it, the name's shape only.
        if value != "UTC" and zoneinfo.available_timezones() and value not in zoneinfo.available_timezones():
            raise ValueError(f"{value!r} is not an IANA time zone name (e.g. UTC, Europe/London)")
        return value


class AnalyticsSettings(_Strict):
    """The working hours of the analytics views (docs/analytics.md): a notification outside them, in the notified
    user's own time zone, counts as off-hours. Step 1 writes them into analytics.working_hours on every run."""

    working_days: tuple[Annotated[int, Field(ge=1, le=7)], ...] = Field((1, 2, 3, 4, 5), min_length=1)  # ISO, 1 = Mon
    day_starts: str = Field("09:00", pattern=CLOCK)
    day_ends: str = Field("17:00", pattern=CLOCK)
    default_time_zone: str = Field("UTC", pattern=TIMEZONE)  # for users without a valid time zone

    @model_validator(mode="after")
    def _day_is_a_span(self) -> AnalyticsSettings:
        if self.day_starts >= self.day_ends:
            raise ValueError(f"day_starts ({self.day_starts}) must be earlier than day_ends ({self.day_ends})")
        if len(set(self.working_days)) != len(self.working_days):
            raise ValueError(f"working_days lists a day twice: {list(self.working_days)}")
        return self

    @field_validator("default_time_zone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        return ScheduleSettings._known_timezone(value)

    def environment_value(self) -> str:
        """The ANALYTICS_WORKING_HOURS value step 1 reads (pagerduty_pipeline.analytics.WorkingHours)."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


class NotificationSettings(_Strict):
    """Who the alerts topic tells. Each subscriber confirms first (README, "Alerts")."""

    emails: tuple[Annotated[str, Field(pattern=EMAIL, max_length=254)], ...] = ()
    https_endpoints: tuple[Annotated[str, Field(pattern=HTTPS_URL, max_length=2048)], ...] = ()

    @field_validator("emails", "https_endpoints")
    @classmethod
    def _distinct(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len({item.lower() for item in value}) != len(value):
            raise ValueError("each subscription may appear only once")
        return value


AlarmPeriod = Annotated[int, Field(le=ALARM_WINDOW_SECONDS)]


class AlarmSettings(_Strict):
    """Thresholds and periods of the alarms (modules/alarms.py); every alarm tells the alerts topic."""

    # Executions failed/timed out, function errors and throttles, failed checks, undelivered messages.
    period_seconds: AlarmPeriod = 300
    evaluation_periods: int = Field(1, ge=1, le=1440)
    # Data older than this (minutes) raises the freshness alarm. None: twice the interval of a rate() schedule;
    # a cron() or at() schedule needs it set. Only alarmed while the schedule is enabled.
    freshness_max_age_minutes: int | None = Field(None, ge=2, le=ALARM_WINDOW_SECONDS // 60)
    db_period_seconds: AlarmPeriod = 300
    db_evaluation_periods: int = Field(3, ge=1, le=1440)
    db_cpu_percent: float = Field(80.0, gt=0, le=100)
    # A db.t4g.micro has 1 GiB; PostgreSQL and the OS need most of it.
    db_freeable_memory_mb: int = Field(128, ge=1, le=1_048_576)
    # Of database.max_allocated_storage_gb: storage autoscaling stops there.
    db_free_storage_share: float = Field(0.10, gt=0, lt=1)

    @field_validator("period_seconds", "db_period_seconds")
    @classmethod
    def _per_minute(cls, value: int) -> int:
        # CloudWatch also takes 10, 20 and 30 seconds, but only for high-resolution metrics; every metric alarmed
        # on here is published per minute, so a shorter period would only ever see missing data.
        if value < 60 or value % 60:
            raise ValueError(f"{value} s: the alarmed metrics are per-minute, so the period must be a multiple of 60 s")
        return value

    @model_validator(mode="after")
    def _within_a_day(self) -> AlarmSettings:
        for period, periods in (("period_seconds", "evaluation_periods"),
                                ("db_period_seconds", "db_evaluation_periods")):
            window = getattr(self, period) * getattr(self, periods)
            if window > ALARM_WINDOW_SECONDS:
                raise ValueError(f"{period} x {periods} = {window} s: CloudWatch evaluates at most one day "
                                 f"({ALARM_WINDOW_SECONDS} s)")
        return self


class ApiSettings(_Strict):
    # AWS_IAM by default; NONE exposes the endpoint to anyone and must be written out explicitly.
    authorization: Literal["AWS_IAM", "JWT", "NONE"] = "AWS_IAM"
    jwt_issuer: str | None = Field(None, pattern=r"^https://[^\s]+$")
    jwt_audience: tuple[str, ...] = ()
    throttling_burst_limit: int = Field(10, ge=1, le=5000)
    throttling_rate_limit: float = Field(5.0, gt=0, le=10000)

    @model_validator(mode="after")
    def _jwt_complete(self) -> ApiSettings:
        if self.authorization == "JWT" and (not self.jwt_issuer or not self.jwt_audience):
            raise ValueError("authorization JWT needs jwt_issuer (an https URL) and at least one jwt_audience")
        if self.authorization != "JWT" and (self.jwt_issuer or self.jwt_audience):
            raise ValueError(f"jwt_issuer/jwt_audience are only used with authorization JWT, not {self.authorization}")
        return self


class PagerDutySettings(_Strict):
    api_url: Literal["https://api.pagerduty.com", "https://api.eu.pagerduty.com"] = "https://api.pagerduty.com"
    # Reference an existing secret; when unset the stack creates an empty one for the operator to fill.
    token_secret_arn: str | None = Field(None, pattern=SECRET_ARN)
    # The pipeline's share of the key's 960 requests a minute (the key is shared by every user of it: lower this
    # to leave room for other integrations), and how many requests it keeps in flight (at 300 ms an answer,
    # 900/min needs 5 in flight).
    rate_limit_per_minute: int = Field(900, ge=60, le=960)
    max_in_flight: int = Field(8, ge=1, le=32)
    # When alerts are fetched: "resolved" once an incident is resolved (its alerts can no longer change) and
    # again only if its alert_counts change; "all" whenever alert_counts change; "off" never.
    alerts: Literal["all", "resolved", "off"] = "resolved"
    # Days a deleted token secret can be restored (0: deleted at once). Its name has a unique suffix, so an
    # environment rebuilt within the window does not collide with the secret still scheduled for deletion.
    token_recovery_window_days: int = Field(7, ge=0, le=30)

    @field_validator("token_recovery_window_days")
    @classmethod
    def _recovery_window(cls, value: int) -> int:
        if 0 < value < 7:
            raise ValueError("Secrets Manager accepts 0 (delete at once) or 7 to 30 days")
        return value


class Settings(_Strict):
    project: str = Field("stepfuncproject", pattern=r"^[a-z][a-z0-9]{2,23}$")
    environment: str = Field(pattern=r"^[a-z][a-z0-9]{1,9}$")
    region: str = Field("eu-west-2", pattern=r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
    log_retention_days: int = 365
    tags: dict[str, str] = {}
    network: NetworkSettings = NetworkSettings()
    database: DatabaseSettings = DatabaseSettings()
    functions: FunctionSettings = FunctionSettings()
    workflow: WorkflowSettings = WorkflowSettings()
    api: ApiSettings = ApiSettings()
    pagerduty: PagerDutySettings = PagerDutySettings()
    schedule: ScheduleSettings = ScheduleSettings()
    notifications: NotificationSettings = NotificationSettings()
    alarms: AlarmSettings = AlarmSettings()
    analytics: AnalyticsSettings = AnalyticsSettings()

    @model_validator(mode="before")
    @classmethod
    def _schedule_on_in_production(cls, data: Any) -> Any:
        """schedule.enabled unset: on for the production environments, off for the others."""
        if not isinstance(data, dict):
            return data
        schedule = data.get("schedule", {})
        if isinstance(schedule, dict) and schedule.get("enabled") is None:
            data = {**data, "schedule": {**schedule,
                                         "enabled": data.get("environment") in PRODUCTION_ENVIRONMENTS}}
        return data

    @model_validator(mode="after")
    def _freshness_bound(self) -> Settings:
        if not self.schedule.is_enabled:
            return self
        interval = rate_minutes(self.schedule.expression)
        explicit = self.alarms.freshness_max_age_minutes
        if explicit is None and interval is None:
            raise ValueError(f"alarms.freshness_max_age_minutes is required when the schedule is enabled and its "
                             f"expression ({self.schedule.expression}) is not rate(...): how old may the data get?")
        if explicit is None and 2 * interval > ALARM_WINDOW_SECONDS // 60:
            raise ValueError(f"twice the schedule's interval ({2 * interval} minutes) is longer than the one day "
                             "CloudWatch can evaluate: set alarms.freshness_max_age_minutes (at most 1440)")
        if explicit is not None and interval is not None and explicit <= interval:
            raise ValueError(f"alarms.freshness_max_age_minutes ({explicit}) must be longer than the schedule's "
                             f"interval ({interval} minutes), or the alarm fires between every two runs")
        return self

    @model_validator(mode="after")
    def _schedule_outlasts_a_run(self) -> Settings:
        # Runs never overlap (step 1's lock): a start while the last run may still be going fails at once with
        # run_in_progress, which the status-change rule and the executions-failed alarm would report every time.
        interval = rate_minutes(self.schedule.expression)
        if self.schedule.is_enabled and interval is not None and interval * 60 < self.workflow.timeout_seconds:
            raise ValueError(f"schedule.expression {self.schedule.expression} starts a run every {interval} minutes, "
                             f"but a run may last workflow.timeout_seconds ({self.workflow.timeout_seconds} s): a "
                             "start would find the last run still going, fail with run_in_progress and raise the "
                             "alarm. Schedule at most every "
                             f"{-(-self.workflow.timeout_seconds // 60)} minutes, or lower workflow.timeout_seconds")
        return self

    @property
    def freshness_max_age_minutes(self) -> int | None:
        """The freshness alarm's bound, or None when no alarm is made (the schedule is off)."""
        if not self.schedule.is_enabled:
            return None
        return self.alarms.freshness_max_age_minutes or 2 * (rate_minutes(self.schedule.expression) or 0)

    @model_validator(mode="after")
    def _production_verifies_tls(self) -> Settings:
        if self.environment in PRODUCTION_ENVIRONMENTS and self.database.tls != "verify-full":
            raise ValueError(f"database.tls = {self.database.tls!r} would deploy {self.environment} without checking "
                             "the database's certificate: production environments use 'verify-full' (with the RDS "
                             "CA bundle, `make rds-ca`)")
        return self

    @field_validator("log_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        if value not in LOG_RETENTION_DAYS:
            raise ValueError(f"CloudWatch Logs accepts only {', '.join(map(str, LOG_RETENTION_DAYS))} days")
        return value

    @property
    def name_prefix(self) -> str:
        """Prefix of every resource name, so environments never collide in one account."""
        return f"{self.project}-{self.environment}"

    @property
    def stack_name(self) -> str:
        return self.name_prefix


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(error: ValidationError, where: str) -> str:
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown setting (check the spelling against modules/settings.py)"
        elif item["type"] == "string_pattern_mismatch":
            message = f"{item['input']!r} does not match {item['ctx']['pattern']}"
        lines.append(f"  {where}{'.' + field if field else ''}: {message}")  # no field: a rule across several
    return "\n".join(lines)


def read_environments(path: Path = ENVIRONMENTS_FILE) -> dict[str, dict[str, Any]]:
    """The per-environment overrides, keyed by environment name."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SettingsError(f"{path}: settings file not found") from exc
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or not document:
        raise SettingsError(f"{path}: must be an object mapping environment names to their overrides")
    for name, overrides in document.items():
        if not isinstance(overrides, dict):
            raise SettingsError(f"{path}: environment {name!r} must map to an object of overrides")
    return document


def settings_for(environment: str, overrides: dict[str, Any], source: str = "settings") -> Settings:
    """Validate one environment's overrides on top of the embedded defaults."""
    try:
        return Settings.model_validate(_deep_merge(overrides, {"environment": environment}))
    except ValidationError as exc:
        raise SettingsError(f"{source}: environment {environment!r} is invalid:\n{_describe(exc, environment)}") from None


def load_settings(path: Path = ENVIRONMENTS_FILE, only: list[str] | None = None) -> list[Settings]:
    """Every environment in the file (or those named), all validated before any is used."""
    environments = read_environments(path)
    names = list(environments) if not only else only
    unknown = [name for name in names if name not in environments]
    if unknown:
        raise SettingsError(f"{path}: no environment named {', '.join(unknown)} (have: {', '.join(environments)})")
    problems, loaded = [], []
    for name in names:
        try:
            loaded.append(settings_for(name, environments[name], source=path.name))
        except SettingsError as exc:
            problems.append(str(exc))
    if problems:
        raise SettingsError("\n".join(problems))
    return loaded


BACKEND_FILE = ROOT / "backend.tf.json"


class S3BackendSettings(_Strict):
    """backend.tf.json's `terraform.backend.s3` block; the app applies it to every main stack as written,
    prefixing the state key with the environment name."""

    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    key: str = Field(pattern=r"^[A-Za-z0-9!_.*'()/-]+\.tfstate$")
    region: str = Field(pattern=r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
    encrypt: Literal[True]
    dynamodb_table: str = Field(pattern=r"^[A-Za-z0-9_.-]{3,255}$")
    use_lockfile: bool
    # The state key's alias (created by the bootstrap stack). Without it Terraform asks S3 for SSE-S3 (AES256)
    # on every write, overriding the bucket's KMS default.
    kms_key_id: str = Field(pattern=r"^(arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:)?alias/[A-Za-z0-9/_-]{1,250}$")


def key_alias(kms_key_id: str) -> str:
    """The alias name (``alias/...``) backend.tf.json's kms_key_id names, given as a name or an alias ARN."""
    return "alias/" + kms_key_id.split(":alias/", 1)[-1].removeprefix("alias/")


def load_backend(path: Path = BACKEND_FILE) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        block = document["terraform"]["backend"]["s3"]
    except FileNotFoundError as exc:
        raise SettingsError(f"{path}: backend file not found") from exc
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{path}: not valid JSON: {exc}") from exc
    except (KeyError, TypeError) as exc:
        raise SettingsError(f'{path}: expected {{"terraform": {{"backend": {{"s3": {{...}}}}}}}}') from exc
    try:
        return S3BackendSettings.model_validate(block).model_dump(exclude_none=True)
    except ValidationError as exc:
        raise SettingsError(f"{path}: the S3 backend is invalid:\n{_describe(exc, 'terraform.backend.s3')}") from None
