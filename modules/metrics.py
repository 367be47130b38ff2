"""The metrics the steps emit as CloudWatch Embedded Metric Format log lines, as the stack reads them.

The layer writes them (layer/python/pagerduty_pipeline/metrics.py, its CONTRACT); the alarms and the dashboard
read exactly these names, units and dimensions. No API call and no IAM permission: CloudWatch Logs extracts them
from the functions' log groups. Every function is told the namespace (METRICS_NAMESPACE) and the value of the
Pipeline dimension (PIPELINE_NAME, the environment's name prefix).
"""

from __future__ import annotations

from modules.settings import Settings

NAMESPACE = "PagerDutyPipeline"
NAMESPACE_VARIABLE = "METRICS_NAMESPACE"
PIPELINE_VARIABLE = "PIPELINE_NAME"

# by {Pipeline, Step}
STEP_DURATION = "StepDuration"  # Milliseconds
API_REQUESTS = "ApiRequests"  # Count
API_RATE_LIMITED = "ApiRateLimited"  # Count: PagerDuty answered 429
API_RETRIES = "ApiRetries"  # Count
# by {Pipeline, Table}
ROWS_WRITTEN = "RowsWritten"  # Count
# by {Pipeline}
CHECKS_FAILED = "ChecksFailed"  # Count
CHECKS_WARNED = "ChecksWarned"  # Count
# by {Pipeline, Scope}: now - watermark, emitted by lambda_3 when a run succeeds
DATA_FRESHNESS = "DataFreshness"  # Seconds
SCHEDULED_SCOPE = "all"  # the scope of the scheduled `{}` run

STEPS = ("lambda_1", "lambda_2", "lambda_3", "lambda_error_handler")  # the Step dimension's values
API_STEPS = ("lambda_1", "lambda_2")  # the steps that call PagerDuty


def pipeline_name(settings: Settings) -> str:
    """The Pipeline dimension's value: one environment's metrics never mix with another's."""
    return settings.name_prefix


def environment_variables(settings: Settings) -> dict[str, str]:
    """What every function is told, so what it emits lands where the alarms and the dashboard look."""
    return {NAMESPACE_VARIABLE: NAMESPACE, PIPELINE_VARIABLE: pipeline_name(settings)}
