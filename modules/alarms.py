"""The alarms that tell the alerts topic, as a table (alarm_specs) and the resources made from it.

Every alarm's name starts with the environment's name prefix (the topic's policy admits exactly those), and it
tells the topic when it goes into ALARM and when it is OK again. What each means and what to do: README, "Alerts".

Missing data is treated the way each alarm needs:
- counts of things that went wrong (failed or timed-out executions, function errors and throttles, failed checks,
  undelivered messages) are published only when something happens: no data is good news, notBreaching;
- data freshness is published only when a run succeeds: no data for the whole window means no run succeeded,
  breaching;
- the database's metrics are published every minute while the instance runs: a gap is a reboot, a maintenance or
  a failover (reported by RDS events), not a verdict on CPU, memory or storage. "missing" keeps the alarm's state
  through it, instead of paging (breaching) or clearing a real alarm (notBreaching).
"""

from __future__ import annotations

from dataclasses import dataclass

from modules import metrics
from modules.cdk import CloudwatchMetricAlarm, Construct
from modules.settings import Settings

GIB = 1024 ** 3
MIB = 1024 ** 2


@dataclass(frozen=True)
class AlarmSpec:
    suffix: str  # the alarm is named <name prefix>-<suffix>
    description: str
    namespace: str
    metric: str
    dimensions: dict[str, str]
    statistic: str
    comparison: str
    threshold: float
    period: int
    evaluation_periods: int
    treat_missing_data: str


def alarm_specs(settings: Settings, *, state_machine_arn: str, function_names: dict[str, str],
                db_instance_identifier: str, dead_letter_queue_name: str) -> list[AlarmSpec]:
    """Every alarm of the environment; the freshness alarm only while the schedule is on (else it would always
    fire: nothing runs)."""
    config = settings.alarms
    period, periods = config.period_seconds, config.evaluation_periods
    pipeline = {"Pipeline": metrics.pipeline_name(settings)}

    def happened(suffix: str, description: str, namespace: str, metric: str, dimensions: dict[str, str],
                 statistic: str = "Sum") -> AlarmSpec:
        """At least one of something that should not happen."""
        return AlarmSpec(suffix, description, namespace, metric, dimensions, statistic,
                         "GreaterThanOrEqualToThreshold", 1, period, periods, "notBreaching")

    machine = {"StateMachineArn": state_machine_arn}
    specs = [
        happened("executions-failed", "A pipeline execution failed", "AWS/States", "ExecutionsFailed", machine),
        happened("executions-timed-out", "A pipeline execution reached the state machine's timeout", "AWS/States",
                 "ExecutionsTimedOut", machine),
    ]
    for folder, name in function_names.items():
        function = {"FunctionName": name}
        specs += [
            happened(f"{folder}-errors", f"{folder} raised an error (an unhandled exception or a timeout)",
                     "AWS/Lambda", "Errors", function),
            happened(f"{folder}-throttles", f"{folder} was throttled (concurrency)", "AWS/Lambda", "Throttles",
                     function),
        ]
    specs += [
        happened("checks-failed", "A run's blocking data checks failed", metrics.NAMESPACE, metrics.CHECKS_FAILED,
                 pipeline),
        happened("dead-letters", "A scheduled start, an alert or a failure record was not delivered: it is in the "
                 "dead-letter queue", "AWS/SQS", "ApproximateNumberOfMessagesVisible",
                 {"QueueName": dead_letter_queue_name}, statistic="Maximum"),  # messages waiting
    ]
    bound = settings.freshness_max_age_minutes
    if bound is not None:
        specs.append(AlarmSpec(
            "data-freshness", f"No successful run has brought the data (scope {metrics.SCHEDULED_SCOPE}) within "
            f"{bound} minutes of now", metrics.NAMESPACE, metrics.DATA_FRESHNESS,
            {**pipeline, "Scope": metrics.SCHEDULED_SCOPE}, "Minimum", "GreaterThanThreshold", bound * 60,
            bound * 60, 1, "breaching"))
    db = {"DBInstanceIdentifier": db_instance_identifier}
    db_period, db_periods = config.db_period_seconds, config.db_evaluation_periods
    storage_floor = config.db_free_storage_share * settings.database.max_allocated_storage_gb * GIB
    specs += [
        AlarmSpec("db-cpu", f"Database CPU above {config.db_cpu_percent:g} %", "AWS/RDS", "CPUUtilization", db,
                  "Average", "GreaterThanThreshold", config.db_cpu_percent, db_period, db_periods, "missing"),
        AlarmSpec("db-freeable-memory", f"Database freeable memory below {config.db_freeable_memory_mb} MiB",
                  "AWS/RDS", "FreeableMemory", db, "Minimum", "LessThanThreshold",
                  config.db_freeable_memory_mb * MIB, db_period, db_periods, "missing"),
        AlarmSpec("db-free-storage", f"Database free storage below {config.db_free_storage_share:.0%} of the "
                  f"{settings.database.max_allocated_storage_gb} GiB storage autoscaling may grow to", "AWS/RDS",
                  "FreeStorageSpace", db, "Minimum", "LessThanThreshold", round(storage_floor), db_period,
                  db_periods, "missing"),
    ]
    return specs


class Alarms(Construct):
    def __init__(self, scope: Construct, id_: str, settings: Settings, *, topic_arn: str, state_machine_arn: str,
                 function_names: dict[str, str], db_instance_identifier: str, dead_letter_queue_name: str) -> None:
        super().__init__(scope, id_)
        self.specs = alarm_specs(settings, state_machine_arn=state_machine_arn, function_names=function_names,
                                 db_instance_identifier=db_instance_identifier,
                                 dead_letter_queue_name=dead_letter_queue_name)
        self.alarms: dict[str, CloudwatchMetricAlarm] = {}
        for spec in self.specs:
            self.alarms[spec.suffix] = CloudwatchMetricAlarm(
                self, spec.suffix.replace("-", "_"),
                alarm_name=f"{settings.name_prefix}-{spec.suffix}",
                alarm_description=f"{spec.description}. README, \"Alerts\": {spec.suffix}",
                namespace=spec.namespace, metric_name=spec.metric, dimensions=spec.dimensions,
                statistic=spec.statistic, comparison_operator=spec.comparison, threshold=spec.threshold,
                period=spec.period, evaluation_periods=spec.evaluation_periods,
                treat_missing_data=spec.treat_missing_data,
                actions_enabled=True, alarm_actions=[topic_arn], ok_actions=[topic_arn])
