"""The EventBridge Scheduler schedule that starts the incremental run (`{}`) unattended, with its own role."""

from __future__ import annotations

from modules.cdk import (
    Construct,
    IamRole,
    IamRolePolicy,
    SchedulerSchedule,
    SchedulerScheduleFlexibleTimeWindow,
    SchedulerScheduleTarget,
    SchedulerScheduleTargetDeadLetterConfig,
    SchedulerScheduleTargetRetryPolicy,
)
from modules.dead_letters import send_to_dead_letters
from modules.iam import assume_role_policy, policy_document, statement
from modules.settings import Settings
from modules.workflow import start_execution_key_use

GROUP = "default"  # every account has it; a group of our own would be one more resource to own
INCREMENTAL_INPUT = "{}"  # the run from the scope's watermark to now (README, "Running it every day")


def schedule_name(settings: Settings) -> str:
    return f"{settings.name_prefix}-incremental-run"


class Schedule(Construct):
    """Always created, ENABLED or DISABLED as settings.schedule says (on in production by default), so turning it
    on is an in-place change. Starts exactly on time (no flexible window): runs do not overlap anyway, a second
    start while one runs fails at once with run_in_progress (step 1's lock).

    Its role may only start this state machine, send to the dead-letter queue, and use the key for exactly the
    schedule's payload, the machine's execution input and the queue's messages."""

    def __init__(self, scope: Construct, id_: str, settings: Settings, *, state_machine_arn: str, kms_key_arn: str,
                 dead_letter_queue_arn: str, account_id: str, partition: str) -> None:
        super().__init__(scope, id_)
        config = settings.schedule
        prefix = settings.name_prefix
        name = schedule_name(settings)
        schedule_arn = f"arn:{partition}:scheduler:{settings.region}:{account_id}:schedule/{GROUP}/{name}"

        role = IamRole(self, "role", name=f"{prefix}-scheduler-start-execution",
                       description=f"Lets the {name} schedule start executions of the pipeline state machine",
                       assume_role_policy=assume_role_policy("scheduler.amazonaws.com", account_id))
        self.policy = IamRolePolicy(self, "policy", name=f"{prefix}-scheduler-start-pipeline", role=role.id,
                                    policy=policy_document(
            statement("StartPipelineExecution", ["states:StartExecution"], [state_machine_arn]),
            start_execution_key_use(kms_key_arn, state_machine_arn),
            # EventBridge Scheduler sends a start that failed after its retries to the dead-letter queue with the
            # execution role.
            *send_to_dead_letters("SendFailedStartsToDeadLetterQueue", dead_letter_queue_arn, kms_key_arn),
            # A schedule with a customer managed key: Scheduler decrypts its payload with the execution role, under
            # the encryption context aws:scheduler:schedule:arn = the schedule (EventBridge Scheduler user guide,
            # "Encryption at rest" and its identity-based policy examples).
            statement("DecryptOwnSchedule", ["kms:Decrypt"], [kms_key_arn],
                      {"StringEquals": {"kms:EncryptionContext:aws:scheduler:schedule:arn": schedule_arn}}),
        ))
        self.schedule = SchedulerSchedule(
            self, "schedule",
            name=name,
            group_name=GROUP,
            description=f"{prefix}: the incremental PagerDuty load ({INCREMENTAL_INPUT}) {config.expression} "
                        f"{config.timezone}",
            schedule_expression=config.expression,
            schedule_expression_timezone=config.timezone,
            state="ENABLED" if config.is_enabled else "DISABLED",
            flexible_time_window=SchedulerScheduleFlexibleTimeWindow(mode="OFF"),
            kms_key_arn=kms_key_arn,
            target=SchedulerScheduleTarget(
                arn=state_machine_arn,
                role_arn=role.arn,
                input=INCREMENTAL_INPUT,
                retry_policy=SchedulerScheduleTargetRetryPolicy(
                    maximum_retry_attempts=config.max_retry_attempts,
                    maximum_event_age_in_seconds=config.max_event_age_seconds),
                dead_letter_config=SchedulerScheduleTargetDeadLetterConfig(arn=dead_letter_queue_arn),
            ),
            depends_on=[self.policy],  # the first firing must find the role able to start the machine
        )
        self.name = name
        self.arn = self.schedule.arn
