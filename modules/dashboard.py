"""One CloudWatch dashboard per environment: how the runs go, what they load, how PagerDuty answers, how fresh the
data is, and the health of the functions and the database.

The body is built as plain data (dashboard_body, testable without AWS) and written with json.dumps; ARNs and names
of resources are Terraform references inside the JSON text, which Terraform fills in at apply. The Table dimension
of RowsWritten has one value per table the steps write, so that graph is a SEARCH expression: a new table shows up
without a change here.
"""

from __future__ import annotations

import json
from typing import Any

from modules import metrics
from modules.alarms import AlarmSpec
from modules.cdk import CloudwatchDashboard, Construct
from modules.settings import Settings

Widget = dict[str, Any]
PERIOD = 300
WIDTH = 24  # CloudWatch's dashboard grid


def dashboard_name(settings: Settings) -> str:
    return f"{settings.name_prefix}-pipeline"


def dashboard_url(settings: Settings) -> str:
    region = settings.region
    return (f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
            f"#dashboards/dashboard/{dashboard_name(settings)}")


def _graph(title: str, region: str, lines: list[list[Any] | dict[str, Any]], *, stat: str = "Sum",
           period: int = PERIOD, width: int = 8, label: str | None = None,
           limits: tuple[tuple[str, float], ...] = ()) -> Widget:
    properties: dict[str, Any] = {"title": title, "region": region, "view": "timeSeries", "stacked": False,
                                  "stat": stat, "period": period, "metrics": lines}
    if label:
        properties["yAxis"] = {"left": {"label": label, "showUnits": False}}
    if limits:
        properties["annotations"] = {"horizontal": [{"label": text, "value": value} for text, value in limits]}
    return {"type": "metric", "width": width, "height": 6, "properties": properties}


def _search(expression_id: str, namespace: str, dimensions: tuple[str, ...], metric: str, filters: dict[str, str],
            stat: str, period: int) -> dict[str, Any]:
    """A SEARCH expression over every metric of that name with exactly these dimension names."""
    schema = ",".join((namespace, *dimensions))
    terms = " ".join([f'MetricName="{metric}"', *(f'{name}="{value}"' for name, value in filters.items())])
    return {"expression": f"SEARCH('{{{schema}}} {terms}', '{stat}', {period})", "id": expression_id,
            "label": ""}


def _laid_out(widgets: list[Widget]) -> list[Widget]:
    """Left to right, a new row when the next one does not fit."""
    x = y = row_height = 0
    placed = []
    for widget in widgets:
        if x + widget["width"] > WIDTH:
            x, y, row_height = 0, y + row_height, 0
        placed.append({**widget, "x": x, "y": y})
        x += widget["width"]
        row_height = max(row_height, widget["height"])
    return placed


def dashboard_body(settings: Settings, *, state_machine_arn: str, function_names: dict[str, str],
                   db_instance_identifier: str, dead_letter_queue_name: str, alarm_arns: list[str],
                   alarm_specs: list[AlarmSpec]) -> dict[str, Any]:
    region = settings.region
    pipeline = metrics.pipeline_name(settings)
    ns = metrics.NAMESPACE
    machine = ["StateMachineArn", state_machine_arn]
    db = ["DBInstanceIdentifier", db_instance_identifier]
    thresholds = {spec.suffix: spec.threshold for spec in alarm_specs}

    def limit(suffix: str, text: str) -> tuple[tuple[str, float], ...]:
        """The alarm's threshold as a line on the graph, when that alarm exists."""
        return ((text, thresholds[suffix]),) if suffix in thresholds else ()

    header = {"type": "text", "width": WIDTH, "height": 2, "properties": {"markdown": (
        f"## {pipeline}: PagerDuty incidents into PostgreSQL\n"
        f"Schedule `{settings.schedule.expression}` ({settings.schedule.timezone}), "
        f"{'enabled' if settings.schedule.is_enabled else 'disabled'}. Every alarm tells the alerts topic; "
        "what each means and what to do: README, section Alerts.")}}
    alarm_status = {"type": "alarm", "width": WIDTH, "height": 3,
                    "properties": {"title": "Alarms", "alarms": alarm_arns}}
    widgets = [
        header,
        alarm_status,
        _graph("Executions", region, [
            ["AWS/States", name, *machine, {"label": label}] for name, label in (
                ("ExecutionsStarted", "started"), ("ExecutionsSucceeded", "succeeded"),
                ("ExecutionsFailed", "failed"), ("ExecutionsTimedOut", "timed out"),
                ("ExecutionsAborted", "aborted"))]),
        _graph("Execution time", region, [
            ["AWS/States", "ExecutionTime", *machine, {"stat": "Average", "label": "average"}],
            ["AWS/States", "ExecutionTime", *machine, {"stat": "Maximum", "label": "longest"}],
        ], stat="Average", label="ms"),
        _graph("Step duration", region, [
            [ns, metrics.STEP_DURATION, "Pipeline", pipeline, "Step", step, {"label": step}]
            for step in metrics.STEPS], stat="Maximum", label="ms"),
        _graph("Rows written by table", region, [
            _search("rows", ns, ("Pipeline", "Table"), metrics.ROWS_WRITTEN, {"Pipeline": pipeline}, "Sum", 3600)],
            period=3600, width=12),
        _graph("PagerDuty API: requests, 429s, retries", region, [
            [ns, metric, "Pipeline", pipeline, "Step", step, {"label": f"{label} ({step})"}]
            for metric, label in ((metrics.API_REQUESTS, "requests"), (metrics.API_RATE_LIMITED, "429"),
                                  (metrics.API_RETRIES, "retries"))
            for step in metrics.API_STEPS], width=12),
        _graph(f"Data freshness (scope {metrics.SCHEDULED_SCOPE})", region, [
            [ns, metrics.DATA_FRESHNESS, "Pipeline", pipeline, "Scope", metrics.SCHEDULED_SCOPE,
             {"label": "now - watermark"}]], stat="Maximum", label="seconds",
            limits=limit("data-freshness", "alarm")),
        _graph("Data checks", region, [
            [ns, metrics.CHECKS_FAILED, "Pipeline", pipeline, {"label": "failed"}],
            [ns, metrics.CHECKS_WARNED, "Pipeline", pipeline, {"label": "warned"}]]),
        _graph("Function errors and throttles", region, [
            ["AWS/Lambda", metric, "FunctionName", name, {"label": f"{folder} {metric.lower()}"}]
            for folder, name in function_names.items() for metric in ("Errors", "Throttles")]),
        _graph("Database CPU", region, [["AWS/RDS", "CPUUtilization", *db, {"label": "CPU"}]], stat="Average",
               label="%", limits=limit("db-cpu", "alarm")),
        _graph("Database freeable memory", region, [
            ["AWS/RDS", "FreeableMemory", *db, {"label": "freeable memory"}]], stat="Minimum", label="bytes",
            limits=limit("db-freeable-memory", "alarm")),
        _graph("Database free storage", region, [
            ["AWS/RDS", "FreeStorageSpace", *db, {"label": "free storage"}]], stat="Minimum", label="bytes",
            limits=limit("db-free-storage", "alarm")),
        _graph("Undelivered (dead-letter queue)", region, [
            ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", dead_letter_queue_name,
             {"label": "messages waiting"}]], stat="Maximum", width=WIDTH),
    ]
    return {"widgets": _laid_out(widgets)}


class Dashboard(Construct):
    def __init__(self, scope: Construct, id_: str, settings: Settings, *, state_machine_arn: str,
                 function_names: dict[str, str], db_instance_identifier: str, dead_letter_queue_name: str,
                 alarm_arns: list[str], alarm_specs: list[AlarmSpec]) -> None:
        super().__init__(scope, id_)
        self.body = dashboard_body(settings, state_machine_arn=state_machine_arn, function_names=function_names,
                                   db_instance_identifier=db_instance_identifier,
                                   dead_letter_queue_name=dead_letter_queue_name, alarm_arns=alarm_arns,
                                   alarm_specs=alarm_specs)
        self.dashboard = CloudwatchDashboard(self, "dashboard", dashboard_name=dashboard_name(settings),
                                             dashboard_body=json.dumps(self.body))
        self.name = dashboard_name(settings)
        self.url = dashboard_url(settings)
