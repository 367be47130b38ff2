"""Fill the gaps moto (pinned ==5.2.5 in the Pipfile) leaves in the calls the AWS provider makes.

Used by the deploy rehearsal (`python -m tools.rehearsal`), which applies the synthesized stack with
real Terraform into moto's server running in this process. Each patch names the missing behaviour;
tests/rehearsal/test_moto_gaps.py has, per gap, a test that fails once moto itself behaves (so the
patch can be dropped on upgrade) and one that shows the patch gives the AWS behaviour.

Patches are applied only inside `filled()` and undone afterwards. None of them changes what we
deploy: they make the emulator answer the way AWS does.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from unittest import mock

from moto.awslambda.models import LambdaFunction
from moto.core.responses import ActionResult
from moto.ec2.models.security_groups import SecurityGroupRule
from moto.rds.models import DBInstance, DBParameterGroup
from moto.secretsmanager.exceptions import InvalidRequestException
from moto.secretsmanager.models import SecretsManagerBackend
from moto.stepfunctions.responses import StepFunctionResponse

MOTO_VERSION = "5.2.5"


# -- Step Functions ---------------------------------------------------------------------------------
# Gap 1: ValidateStateMachineDefinition is not implemented (moto answers 500 "not yet implemented");
# provider 5.x calls it before CreateStateMachine/UpdateStateMachine and retries the 500 for minutes.
# AWS answers {"result": "OK", "diagnostics": []} for a valid definition.
def _validate_state_machine_definition(self: StepFunctionResponse) -> ActionResult:
    return ActionResult({"result": "OK", "diagnostics": [], "truncated": False})


# Gap 2: ListStateMachineVersions is not implemented; the provider lists versions when it reads the
# state machine (refresh after create, every plan). We never publish versions, so AWS answers [].
def _list_state_machine_versions(self: StepFunctionResponse) -> ActionResult:
    return ActionResult({"stateMachineVersions": []})


# -- Lambda -----------------------------------------------------------------------------------------
# Gap 3: CreateFunction/UpdateFunctionConfiguration drop LoggingConfig (JSON log format, application
# and system log levels, log group): GetFunction answers without it, so every plan wants to set it
# again. AWS stores it and returns it in the function configuration.
_original_lambda_init = LambdaFunction.__init__
_original_lambda_get_configuration = LambdaFunction.get_configuration
_original_lambda_update_configuration = LambdaFunction.update_configuration


def _default_logging_config(function: LambdaFunction) -> dict[str, Any]:
    return {"LogFormat": "Text", "LogGroup": f"/aws/lambda/{function.function_name}"}


# Gap 9 (same methods): they drop DeadLetterConfig too (the error handler's, for the asynchronous invocations of the
# status-change rule), so every plan wants to add it again. AWS stores {"TargetArn": ...} and returns it.
def _lambda_init(self: LambdaFunction, account_id: str, spec: dict[str, Any], *args: Any, **kwargs: Any) -> None:
    _original_lambda_init(self, account_id, spec, *args, **kwargs)
    self._rehearsal_logging_config = dict(spec.get("LoggingConfig") or _default_logging_config(self))
    self._rehearsal_dead_letter_config = dict(spec.get("DeadLetterConfig") or {})


def _lambda_get_configuration(self: LambdaFunction, *args: Any, **kwargs: Any) -> dict[str, Any]:
    config = _original_lambda_get_configuration(self, *args, **kwargs)
    config["LoggingConfig"] = dict(getattr(self, "_rehearsal_logging_config", None)
                                   or _default_logging_config(self))
    dead_letter = getattr(self, "_rehearsal_dead_letter_config", None)
    if dead_letter and dead_letter.get("TargetArn"):
        config["DeadLetterConfig"] = dict(dead_letter)
    return config


def _lambda_update_configuration(self: LambdaFunction, config_updates: dict[str, Any]) -> dict[str, Any]:
    if config_updates.get("LoggingConfig"):
        self._rehearsal_logging_config = dict(config_updates["LoggingConfig"])
    if "DeadLetterConfig" in config_updates:
        self._rehearsal_dead_letter_config = dict(config_updates["DeadLetterConfig"] or {})
    return _original_lambda_update_configuration(self, config_updates)


# -- RDS --------------------------------------------------------------------------------------------
# Gap 4: DescribeDBParameters answers parameters without `Source`, so the provider (which keeps only
# Source=user parameters of a parameter group) sees none of ours and plans to set them again. AWS
# reports parameters set through ModifyDBParameterGroup/CreateDBParameterGroup as Source "user".
_original_parameter_group_update = DBParameterGroup.update_parameters


def _parameter_group_update(self: DBParameterGroup, new_parameters: Any) -> None:
    _original_parameter_group_update(self, new_parameters)
    for parameter in new_parameters:
        stored = self.parameters.get(parameter["ParameterName"])
        if stored is not None and not stored.get("Source"):
            stored["Source"] = "user"


# Gap 5: CreateDBInstance ignores PerformanceInsightsEnabled, PerformanceInsightsKMSKeyId and
# PerformanceInsightsRetentionPeriod (ModifyDBInstance stores them), so DescribeDBInstances reports
# Performance Insights off and every plan wants to turn it on again. AWS keeps what was asked for.
_PERFORMANCE_INSIGHTS = {  # request parameter -> attribute DescribeDBInstances reports
    "enable_performance_insights": "performance_insights_enabled",
    "performance_insights_kms_key_id": "performance_insights_kms_key_id",
    "performance_insights_retention_period": "performance_insights_retention_period",
}
_original_db_instance_init = DBInstance.__init__


def _db_instance_init(self: DBInstance, *args: Any, **kwargs: Any) -> None:
    _original_db_instance_init(self, *args, **kwargs)
    for parameter, attribute in _PERFORMANCE_INSIGHTS.items():
        if kwargs.get(parameter) is not None:
            setattr(self, attribute, kwargs[parameter])
    self.dbi_resource_id = _new_dbi_resource_id()  # gap 8


# Gap 8: every DB instance gets the same DbiResourceId ("db-M5ENSHXFPU6XHZ4G4ZEI5QIO2U"). The provider keeps
# the resource ID as the instance's Terraform ID and reads it back with the `dbi-resource-id` filter, so once
# two instances exist (two environments, or a rebuilt one next to a deleted one) the read finds two and
# fails "couldn't find resource". AWS gives each instance its own ("db-" and 26 upper-case letters/digits).
def _new_dbi_resource_id() -> str:
    return "db-" + base64.b32encode(uuid.uuid4().bytes).decode()[:26]


# -- EC2 --------------------------------------------------------------------------------------------
# Gap 6: a security group rule that references another group (UserIdGroupPairs) keeps its Description
# in the pair, but DescribeSecurityGroupRules reads the description only from the CIDR range, so the
# rule comes back without it and every plan wants to set it again. AWS returns it.
def _rule_description(self: SecurityGroupRule) -> str | None:
    return self.ip_range.get("Description") or (self.source_group or {}).get("Description")


# -- Secrets Manager --------------------------------------------------------------------------------
# Gap 7: CreateSecret with the name of a secret that is scheduled for deletion (DeleteSecret with a recovery
# window) answers ResourceExistsException "already exists". AWS answers InvalidRequestException "You can't
# create this secret because a secret with this name is already scheduled for deletion." The difference
# matters: the provider retries that InvalidRequestException for two minutes (the old secret might be
# going), then fails with AWS's message; on ResourceExistsException it fails at once with another message.
# Both refuse the name: this patch changes the answer, not whether there is one.
SCHEDULED_FOR_DELETION = ("You can't create this secret because a secret with this name is already scheduled "
                          "for deletion.")
_original_create_secret = SecretsManagerBackend.create_secret


def _create_secret(self: SecretsManagerBackend, name: str, *args: Any, **kwargs: Any) -> str:
    existing = self.secrets.get(name)
    if existing is not None and existing.is_deleted():
        raise InvalidRequestException(SCHEDULED_FOR_DELETION)
    return _original_create_secret(self, name, *args, **kwargs)


@contextmanager
def filled() -> Iterator[None]:
    """Apply every gap patch for the duration of the block."""
    with ExitStack() as stack:
        patch = stack.enter_context
        patch(mock.patch.object(StepFunctionResponse, "validate_state_machine_definition",
                                _validate_state_machine_definition, create=True))
        patch(mock.patch.object(StepFunctionResponse, "list_state_machine_versions",
                                _list_state_machine_versions, create=True))
        patch(mock.patch.object(LambdaFunction, "__init__", _lambda_init))
        patch(mock.patch.object(LambdaFunction, "get_configuration", _lambda_get_configuration))
        patch(mock.patch.object(LambdaFunction, "update_configuration", _lambda_update_configuration))
        patch(mock.patch.object(DBParameterGroup, "update_parameters", _parameter_group_update))
        patch(mock.patch.object(DBInstance, "__init__", _db_instance_init))
        patch(mock.patch.object(SecurityGroupRule, "description", property(_rule_description)))
        patch(mock.patch.object(SecretsManagerBackend, "create_secret", _create_secret))
        yield


__all__ = ["MOTO_VERSION", "filled"]
