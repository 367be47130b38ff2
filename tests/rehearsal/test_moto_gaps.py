"""Each gap of tests/support/moto_gaps.py: moto (pinned) still lacks the behaviour, and the patch supplies it.

A `test_moto_still_lacks_*` failing after a moto upgrade means moto now does it itself: drop that patch
(and its tests) from tests/support/moto_gaps.py. The `test_moto_refuses_*`/`test_moto_stores_*` tests are the
other way round: AWS rules the rehearsal's second act relies on that moto enforces itself; one failing means
moto stopped, and the act could pass for the wrong reason until a patch supplies the rule again.
"""

from __future__ import annotations

import io
import json
import re
import uuid
import zipfile
from importlib.metadata import version

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from tests.support import moto_gaps

REGION = "eu-west-2"
DEFINITION = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})
ROLE = "arn:aws:iam::123456789012:role/rehearsal-role"


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch):
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


def client(service: str):
    return boto3.client(service, region_name=REGION)


def unique(name: str) -> str:
    """An enclosing mock_aws (another suite's session fixture in the same worker) keeps data between tests."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def test_moto_is_the_pinned_version():
    assert version("moto") == moto_gaps.MOTO_VERSION, "moto changed: re-check every gap below, then update MOTO_VERSION"


# -- gap 1: ValidateStateMachineDefinition ---------------------------------------------------------
def validate():
    return client("stepfunctions").validate_state_machine_definition(definition=DEFINITION, type="STANDARD")


@mock_aws
def test_moto_still_lacks_validate_state_machine_definition():
    with pytest.raises(NotImplementedError):
        validate()


@mock_aws
def test_patch_validates_state_machine_definitions():
    with moto_gaps.filled():
        assert validate()["result"] == "OK"


# -- gap 2: ListStateMachineVersions ---------------------------------------------------------------
def state_machine_versions():
    sfn = client("stepfunctions")
    arn = sfn.create_state_machine(name=unique("m"), definition=DEFINITION, roleArn=ROLE)["stateMachineArn"]
    return sfn.list_state_machine_versions(stateMachineArn=arn)


@mock_aws
def test_moto_still_lacks_list_state_machine_versions():
    with pytest.raises(NotImplementedError):
        state_machine_versions()


@mock_aws
def test_patch_lists_no_state_machine_versions():
    with moto_gaps.filled():
        assert state_machine_versions()["stateMachineVersions"] == []


# -- gap 3: Lambda LoggingConfig -------------------------------------------------------------------
LOGGING = {"LogFormat": "JSON", "ApplicationLogLevel": "INFO", "SystemLogLevel": "INFO", "LogGroup": "/custom/f"}


def function_logging_config():
    return function_configuration(LoggingConfig=LOGGING).get("LoggingConfig")


def function_configuration(**settings):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", "def handler(event, context):\n    return event\n")
    iam = client("iam")
    name = unique("f")
    role = iam.create_role(RoleName=f"{name}-role", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                "Principal": {"Service": "lambda.amazonaws.com"}}]}))["Role"]["Arn"]
    lam = client("lambda")
    lam.create_function(FunctionName=name, Runtime="python3.13", Role=role, Handler="handler.handler",
                        Code={"ZipFile": buffer.getvalue()}, **settings)
    return lam.get_function_configuration(FunctionName=name)


@mock_aws
def test_moto_still_drops_lambda_logging_config():
    assert function_logging_config() != LOGGING


@mock_aws
def test_patch_keeps_lambda_logging_config():
    with moto_gaps.filled():
        assert function_logging_config() == LOGGING


# -- gap 9: Lambda DeadLetterConfig ----------------------------------------------------------------
DEAD_LETTERS = {"TargetArn": f"arn:aws:sqs:{REGION}:123456789012:dead-letters"}


@mock_aws
def test_moto_still_drops_lambda_dead_letter_config():
    assert function_configuration(DeadLetterConfig=DEAD_LETTERS).get("DeadLetterConfig") != DEAD_LETTERS


@mock_aws
def test_patch_keeps_lambda_dead_letter_config():
    with moto_gaps.filled():
        assert function_configuration(DeadLetterConfig=DEAD_LETTERS).get("DeadLetterConfig") == DEAD_LETTERS
        assert "DeadLetterConfig" not in function_configuration()  # none asked for, none reported


# -- gap 4: DB parameter Source ---------------------------------------------------------------------
def parameter_sources():
    rds = client("rds")
    name = unique("pg")
    rds.create_db_parameter_group(DBParameterGroupName=name, DBParameterGroupFamily="postgres17",
                                  Description="d")
    rds.modify_db_parameter_group(DBParameterGroupName=name, Parameters=[
        {"ParameterName": "log_statement", "ParameterValue": "ddl", "ApplyMethod": "immediate"}])
    return {p["ParameterName"]: p.get("Source") for p in
            rds.describe_db_parameters(DBParameterGroupName=name)["Parameters"]}


@mock_aws
def test_moto_still_drops_db_parameter_source():
    assert parameter_sources() == {"log_statement": None}


@mock_aws
def test_patch_reports_user_set_db_parameters():
    with moto_gaps.filled():
        assert parameter_sources() == {"log_statement": "user"}


# -- gap 5: RDS Performance Insights on create -----------------------------------------------------
def performance_insights():
    rds = client("rds")
    key = client("kms").create_key()["KeyMetadata"]["Arn"]
    name = unique("db")
    rds.create_db_instance(DBInstanceIdentifier=name, DBInstanceClass="db.t4g.micro", Engine="postgres",
                           AllocatedStorage=20, MasterUsername="pipeline_admin", ManageMasterUserPassword=True,
                           EnablePerformanceInsights=True, PerformanceInsightsKMSKeyId=key,
                           PerformanceInsightsRetentionPeriod=7)
    (instance,) = rds.describe_db_instances(DBInstanceIdentifier=name)["DBInstances"]
    return (instance.get("PerformanceInsightsEnabled"), instance.get("PerformanceInsightsKMSKeyId") == key,
            instance.get("PerformanceInsightsRetentionPeriod"))


@mock_aws
def test_moto_still_ignores_performance_insights_on_create():
    assert performance_insights() != (True, True, 7)


@mock_aws
def test_patch_keeps_performance_insights_on_create():
    with moto_gaps.filled():
        assert performance_insights() == (True, True, 7)


# -- gap 6: descriptions of rules that reference another security group ----------------------------
def referencing_rule_descriptions():
    ec2 = client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    a = ec2.create_security_group(GroupName="a", Description="a", VpcId=vpc)["GroupId"]
    b = ec2.create_security_group(GroupName="b", Description="b", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=a, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432,
        "UserIdGroupPairs": [{"GroupId": b, "Description": "from b"}]}])
    ec2.authorize_security_group_egress(GroupId=b, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432,
        "UserIdGroupPairs": [{"GroupId": a, "Description": "to a"}]}])
    rules = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [a, b]}])
    return sorted(r.get("Description") or "" for r in rules["SecurityGroupRules"]
                  if r.get("ReferencedGroupInfo"))


@mock_aws
def test_moto_still_drops_referencing_rule_descriptions():
    assert referencing_rule_descriptions() == ["", ""]


@mock_aws
def test_patch_keeps_referencing_rule_descriptions():
    with moto_gaps.filled():
        assert referencing_rule_descriptions() == ["from b", "to a"]


# -- gap 7: CreateSecret with the name of a secret scheduled for deletion ---------------------------
def create_secret_over_a_scheduled_one():
    sm = client("secretsmanager")
    name = unique("env/pagerduty-api-token")
    sm.create_secret(Name=name)
    sm.delete_secret(SecretId=name, RecoveryWindowInDays=7)
    with pytest.raises(ClientError) as refused:
        sm.create_secret(Name=name)
    return refused.value.response["Error"]["Code"], refused.value.response["Error"]["Message"]


@mock_aws
def test_moto_still_answers_a_scheduled_secret_name_with_resource_exists():
    assert create_secret_over_a_scheduled_one()[0] == "ResourceExistsException"


@mock_aws
def test_patch_refuses_a_scheduled_secret_name_as_aws_does():
    with moto_gaps.filled():
        assert create_secret_over_a_scheduled_one() == ("InvalidRequestException", moto_gaps.SCHEDULED_FOR_DELETION)


@mock_aws
def test_patch_leaves_other_secret_names_alone():
    sm = client("secretsmanager")
    name = unique("env/pagerduty-api-token")
    with moto_gaps.filled():
        sm.create_secret(Name=name)
        with pytest.raises(ClientError, match="ResourceExistsException"):
            sm.create_secret(Name=name)  # a live secret: AWS's answer too
        sm.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
        sm.create_secret(Name=name)  # deleted without a recovery window: the name is free again


# -- gap 8: one DbiResourceId per DB instance -----------------------------------------------------
def resource_ids_and_lookups():
    rds = client("rds")
    names = [unique("a-postgres"), unique("b-postgres")]
    for name in names:
        create_postgres(rds, name, version="17")
    ids = [rds.describe_db_instances(DBInstanceIdentifier=name)["DBInstances"][0]["DbiResourceId"] for name in names]
    found = [[db["DBInstanceIdentifier"] for db in rds.describe_db_instances(
        Filters=[{"Name": "dbi-resource-id", "Values": [resource_id]}])["DBInstances"]] for resource_id in ids]
    return names, ids, found


@mock_aws
def test_moto_still_gives_every_db_instance_the_same_resource_id():
    _names, ids, _found = resource_ids_and_lookups()
    assert ids[0] == ids[1]


@mock_aws
def test_patch_gives_each_db_instance_its_own_resource_id():
    with moto_gaps.filled():
        names, ids, found = resource_ids_and_lookups()
    assert ids[0] != ids[1] and all(re.fullmatch(r"db-[A-Z0-9]{26}", i) for i in ids)
    assert found == [[names[0]], [names[1]]]  # what the provider's read by resource ID needs


# -- AWS rules the rehearsal's second act relies on, which moto enforces itself (no patch) ----------
# If one of these fails after a moto upgrade, the act could pass for the wrong reason: add a gap patch.
def error_code(call, **kwargs) -> str:
    with pytest.raises(ClientError) as refused:
        call(**kwargs)
    return refused.value.response["Error"]["Code"]


@mock_aws
def test_moto_refuses_a_duplicate_security_group_name_in_a_vpc():
    ec2 = client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    ec2.create_security_group(GroupName="env-lambda-sg", Description="old", VpcId=vpc)
    assert error_code(ec2.create_security_group, GroupName="env-lambda-sg", Description="new",
                      VpcId=vpc) == "InvalidGroup.Duplicate"


@mock_aws
def test_moto_refuses_a_duplicate_db_parameter_group_name():
    rds = client("rds")
    name = unique("env-postgres17")
    rds.create_db_parameter_group(DBParameterGroupName=name, DBParameterGroupFamily="postgres17", Description="old")
    assert error_code(rds.create_db_parameter_group, DBParameterGroupName=name, DBParameterGroupFamily="postgres17",
                      Description="new") == "DBParameterGroupAlreadyExists"


def create_postgres(rds, name: str, version: str = "17.5") -> None:
    rds.create_db_instance(DBInstanceIdentifier=name, DBInstanceClass="db.t4g.micro", Engine="postgres",
                           EngineVersion=version, AllocatedStorage=20, MasterUsername="pipeline_admin",
                           ManageMasterUserPassword=True, AutoMinorVersionUpgrade=True)


@mock_aws
def test_moto_refuses_a_final_snapshot_identifier_that_exists():
    rds = client("rds")
    name = unique("env-postgres")
    create_postgres(rds, name)
    rds.delete_db_instance(DBInstanceIdentifier=name, FinalDBSnapshotIdentifier=f"{name}-final")
    create_postgres(rds, name)
    assert error_code(rds.delete_db_instance, DBInstanceIdentifier=name,
                      FinalDBSnapshotIdentifier=f"{name}-final") == "DBSnapshotAlreadyExists"


@mock_aws
def test_moto_stores_and_returns_a_modified_engine_version():
    rds = client("rds")
    name = unique("env-postgres")
    create_postgres(rds, name)
    modified = rds.modify_db_instance(DBInstanceIdentifier=name, EngineVersion="17.6", ApplyImmediately=True)
    assert modified["DBInstance"]["EngineVersion"] == "17.6"
    assert rds.describe_db_instances(DBInstanceIdentifier=name)["DBInstances"][0]["EngineVersion"] == "17.6"


@mock_aws
def test_moto_reports_a_major_only_engine_version_as_given():
    """AWS picks the default minor version for "17" and reports it (17.x); moto reports "17". Not patched:
    the default minor is not knowable offline, and the provider compares the version by prefix either way."""
    rds = client("rds")
    name = unique("env-postgres")
    create_postgres(rds, name, version="17")
    assert rds.describe_db_instances(DBInstanceIdentifier=name)["DBInstances"][0]["EngineVersion"] == "17"


def test_patches_are_undone_after_the_block():
    from moto.stepfunctions.responses import StepFunctionResponse

    with moto_gaps.filled():
        assert hasattr(StepFunctionResponse, "validate_state_machine_definition")
    assert not hasattr(StepFunctionResponse, "validate_state_machine_definition")
    from moto.secretsmanager.models import SecretsManagerBackend

    assert SecretsManagerBackend.create_secret is moto_gaps._original_create_secret



# -- Delivered by the rehearsal itself, not patched (tools/rehearsal_operations.py) ------------------
def _rule_with_target(target_arn: str) -> str:
    events = client("events")
    rule = unique("execution-ended")
    events.put_rule(Name=rule, EventPattern=json.dumps({"source": ["aws.states"]}))
    events.put_targets(Rule=rule, Targets=[{"Id": "t", "Arn": target_arn}])
    return rule


@mock_aws
def test_moto_still_cannot_deliver_a_rule_to_an_sns_topic():
    """EventBridge publishes to an SNS target; moto raises NotImplementedError (it delivers to log groups, SQS,
    event buses and API destinations only). The rehearsal's `notify` renders the target's input and publishes."""
    topic = client("sns").create_topic(Name=unique("alerts"))["TopicArn"]
    _rule_with_target(topic)
    with pytest.raises(NotImplementedError):
        client("events").put_events(Entries=[{"Source": "aws.states", "DetailType": "x", "Detail": "{}"}])


@mock_aws
def test_moto_still_cannot_deliver_a_rule_to_a_lambda_function():
    """The same for a Lambda target: the rehearsal invokes the error handler with the raw event itself."""
    _rule_with_target(f"arn:aws:lambda:{REGION}:123456789012:function:{unique('handler')}")
    with pytest.raises(NotImplementedError):
        client("events").put_events(Entries=[{"Source": "aws.states", "DetailType": "x", "Detail": "{}"}])


@mock_aws
def test_moto_still_keeps_a_missing_path_in_a_rendered_template():
    """AWS fills a variable whose path matches nothing with nothing; moto's parser leaves `<error>` in the text
    (tests/support/eventbridge.py renders as AWS does: tests/rehearsal/test_eventbridge.py)."""
    from moto.events.utils import EventTemplateParser

    event = {"detail": {"status": "TIMED_OUT"}, "ingestion-time": 0}
    rendered = EventTemplateParser.parse(input_template='"<status>: <error>"',
                                         input_paths_map={"status": "$.detail.status", "error": "$.detail.error"},
                                         event=event)
    assert rendered == "TIMED_OUT: <error>"


@mock_aws
def test_moto_stores_a_schedule_but_never_fires_it():
    """A schedule due every minute starts nothing in moto; the rehearsal's `scheduled` starts the execution as
    the target would (StartExecution with the target's input)."""
    sfn = client("stepfunctions")
    machine = sfn.create_state_machine(name=unique("machine"), definition=DEFINITION, roleArn=ROLE)["stateMachineArn"]
    client("scheduler").create_schedule(
        Name=unique("incremental"), ScheduleExpression="rate(1 minute)", FlexibleTimeWindow={"Mode": "OFF"},
        Target={"Arn": machine, "RoleArn": ROLE, "Input": "{}"})
    assert client("scheduler").list_schedules()["Schedules"]
    assert sfn.list_executions(stateMachineArn=machine)["executions"] == []


@mock_aws
def test_moto_still_lacks_test_event_pattern():
    """TestEventPattern is not implemented (moto answers an empty body, without AWS's Result); the rehearsal calls
    moto's matcher (EventPattern) in-process."""
    answer = client("events").test_event_pattern(EventPattern=json.dumps({"source": ["aws.states"]}),
                                                 Event=json.dumps({"source": "aws.states"}))
    assert "Result" not in answer


@mock_aws(config={"stepfunctions": {"execute_state_machine": True}})
def test_moto_still_names_an_unnamed_execution_none():
    """AWS names an execution started without a name (as EventBridge Scheduler starts them) with a UUID; moto's
    executing interpreter names it "None". The rehearsal gives the UUID itself."""
    sfn = client("stepfunctions")
    machine = sfn.create_state_machine(name=unique("machine"), definition=DEFINITION, roleArn=ROLE)["stateMachineArn"]
    arn = sfn.start_execution(stateMachineArn=machine, input="{}")["executionArn"]
    assert arn.endswith(":None")
