"""Assertions on the settings that matter in the synthesized stacks; each fails when its setting changes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.synth import load_stack, only, resources, statements_by_sid, synthesize, without_metadata

Stack = dict[str, Any]


def definition(stack: Stack) -> dict[str, Any]:
    return json.loads(only(stack["resource"], "aws_sfn_state_machine")["definition"])


def policy_of(stack: Stack, role_name_suffix: str) -> dict[str, Any]:
    """The inline policy attached to the role whose name ends with role_name_suffix."""
    roles = {key: role for key, role in resources(stack, "aws_iam_role").items()
             if role["name"].endswith(role_name_suffix)}
    (role_key,) = roles
    (policy,) = [policy for policy in resources(stack, "aws_iam_role_policy").values()
                 if policy["role"] == f"${{aws_iam_role.{role_key}.id}}"]
    return json.loads(policy["policy"])


# --- database ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("env", ["dev", "prod"])
def test_database_engine_size_and_access(stacks: dict[str, Stack], env: str) -> None:
    db = only(stacks[env]["resource"], "aws_db_instance")
    # The major version: RDS picks and upgrades the minor (17.5 today), the provider shows no diff for 17.x.
    assert (db["engine"], db["engine_version"], db["instance_class"]) == ("postgres", "17", "db.t4g.micro")
    assert db["auto_minor_version_upgrade"] is True
    assert (db["allocated_storage"], db["max_allocated_storage"], db["storage_type"]) == (20, 30, "gp3")
    assert db["publicly_accessible"] is False
    assert db["iam_database_authentication_enabled"] is True
    assert db["storage_encrypted"] is True and db["kms_key_id"].startswith("${aws_kms_key.")
    assert db["manage_master_user_password"] is True and "password" not in db
    assert db["master_user_secret_kms_key_id"] == db["kms_key_id"]
    assert db["db_name"] == "postgres_db_stepfuncproject"
    assert db["backup_retention_period"] >= 7
    assert db["performance_insights_enabled"] is True
    assert set(db["enabled_cloudwatch_logs_exports"]) >= {"postgresql"}
    assert db["vpc_security_group_ids"] == ["${aws_security_group.network_rds_sg_B7577B55.id}"]


def test_database_protection_is_per_environment(stacks: dict[str, Stack]) -> None:
    dev, prod = (only(stacks[env]["resource"], "aws_db_instance") for env in ("dev", "prod"))
    assert dev["deletion_protection"] is False and dev["skip_final_snapshot"] is True
    assert prod["deletion_protection"] is True and prod["skip_final_snapshot"] is False
    # Unique per created instance (terraform_data's random id), so a rebuilt environment's second teardown
    # does not collide with the first teardown's snapshot.
    (generation_key, generation), = stacks["prod"]["resource"]["terraform_data"].items()
    assert generation["triggers_replace"] == {"identifier": prod["identifier"]}
    assert prod["final_snapshot_identifier"] == (
        f'stepfuncproject-prod-postgres-final-${{substr(replace(terraform_data.{generation_key}.id, "-", ""), 0, 8)}}')
    assert prod["multi_az"] is True and prod["backup_retention_period"] == 14


def test_parameter_group_forces_tls(stacks: dict[str, Stack]) -> None:
    group = only(stacks["dev"]["resource"], "aws_db_parameter_group")
    assert group["family"] == "postgres17"
    assert "name" not in group and group["name_prefix"] == "stepfuncproject-dev-postgres17-"
    assert group["lifecycle"] == {"create_before_destroy": True}
    assert {"name": "rds.force_ssl", "value": "1"} in group["parameter"]


def test_database_sits_in_the_configured_private_subnets(stacks: dict[str, Stack]) -> None:
    subnets = stacks["dev"]["data"]["aws_subnet"]
    assert sorted(subnet["id"] for subnet in subnets.values()) == [
        "subnet-0e2842b86fa358d19", "subnet-0ff5a9d643e0b97c8"]
    assert only(stacks["dev"]["data"], "aws_vpc")["id"] == "vpc-0e01c3c7ae69fd92b"
    group = only(stacks["dev"]["resource"], "aws_db_subnet_group")
    assert sorted(group["subnet_ids"]) == sorted(f"${{data.aws_subnet.{key}.id}}" for key in subnets)


# --- network ----------------------------------------------------------------------------------------------

def test_security_groups_allow_only_postgres_between_functions_and_database(stacks: dict[str, Stack]) -> None:
    stack = stacks["dev"]
    lambda_sg, rds_sg = "${aws_security_group.network_lambda_sg_745A1752.id}", "${aws_security_group.network_rds_sg_B7577B55.id}"
    (ingress,) = resources(stack, "aws_vpc_security_group_ingress_rule").values()
    assert (ingress["security_group_id"], ingress["referenced_security_group_id"]) == (rds_sg, lambda_sg)
    assert (ingress["ip_protocol"], ingress["from_port"], ingress["to_port"]) == ("tcp", 5432, 5432)
    egress = sorted(resources(stack, "aws_vpc_security_group_egress_rule").values(), key=lambda rule: rule["to_port"])
    assert [(rule["security_group_id"], rule["from_port"], rule["to_port"]) for rule in egress] == [
        (lambda_sg, 443, 443), (lambda_sg, 5432, 5432)]
    assert egress[1]["referenced_security_group_id"] == rds_sg and "cidr_ipv4" not in egress[1]
    for group in resources(stack, "aws_security_group").values():
        assert "ingress" not in group and "egress" not in group  # no inline rules that would fight the rule resources


def test_replaceable_resources_take_generated_names(stacks: dict[str, Stack]) -> None:
    """create_before_destroy creates the replacement while the old object still holds its name: a fixed name
    collides (InvalidGroup.Duplicate, DBParameterGroupAlreadyExists), a prefix does not."""
    for env in ("dev", "prod"):
        groups = resources(stacks[env], "aws_security_group").values()
        assert sorted(group["name_prefix"] for group in groups) == [
            f"stepfuncproject-{env}-lambda-", f"stepfuncproject-{env}-rds-"]
        for group in groups:
            assert "name" not in group and group["lifecycle"] == {"create_before_destroy": True}
        rules = [*resources(stacks[env], "aws_vpc_security_group_ingress_rule").values(),
                 *resources(stacks[env], "aws_vpc_security_group_egress_rule").values()]
        assert len(rules) == 3  # replaced with their groups, and created first too: the path never lapses
        assert all(rule["lifecycle"] == {"create_before_destroy": True} for rule in rules)
        secret = only(stacks[env]["resource"], "aws_secretsmanager_secret")
        assert "name" not in secret and secret["name_prefix"] == f"stepfuncproject-{env}/pagerduty-api-token-"
        assert secret["recovery_window_in_days"] == 7


# --- functions --------------------------------------------------------------------------------------------

FUNCTION_FOLDERS = ["lambda_1", "lambda_2", "lambda_3", "lambda_error_handler"]


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_functions_runtime_network_and_environment(stacks: dict[str, Stack], env: str) -> None:
    functions = resources(stacks[env], "aws_lambda_function")
    assert sorted(fn["function_name"] for fn in functions.values()) == [
        f"stepfuncproject-{env}-{folder}" for folder in FUNCTION_FOLDERS]
    for fn in functions.values():
        assert (fn["runtime"], fn["architectures"], fn["timeout"]) == ("python3.13", ["arm64"], 600)
        assert fn["handler"] == "handler.handler"
        assert fn["vpc_config"]["security_group_ids"] == ["${aws_security_group.network_lambda_sg_745A1752.id}"]
        assert len(fn["vpc_config"]["subnet_ids"]) == 2
        variables = fn["environment"]["variables"]
        assert variables["DB_NAME"] == "postgres_db_stepfuncproject"
        assert variables["DB_HOST"].endswith(".address}") and variables["DB_PORT"].endswith(".port}")
        # how each logs in and verifies the server: tests/stack/test_database_access.py
        if fn["function_name"].endswith(("-lambda_3", "-lambda_error_handler")):  # they never call PagerDuty
            assert not any(name.startswith(("PAGERDUTY_", "PIPELINE_ALERTS")) for name in variables)
            continue
        assert variables["PAGERDUTY_TOKEN_SECRET_ARN"] == "${aws_secretsmanager_secret.pagerduty_token_secret_77EACFC4.arn}"
        assert variables["PAGERDUTY_API_URL"] == "https://api.pagerduty.com"
        # the API's pace and alert policy (settings.pagerduty), read by the layer's config
        assert (variables["PAGERDUTY_RATE_LIMIT_PER_MINUTE"], variables["PAGERDUTY_MAX_IN_FLIGHT"],
                variables["PIPELINE_ALERTS"]) == ("900", "8", "resolved")
        assert fn["tracing_config"] == {"mode": "Active"}
        assert fn["logging_config"]["log_format"] == "JSON"
        assert fn["layers"] == ["${aws_lambda_layer_version.functions_layer_D892ED0B.arn}"]
        assert fn["kms_key_arn"].startswith("${aws_kms_key.")
        log_group_ref = fn["logging_config"]["log_group"]
        assert log_group_ref.replace(".name}", "").replace("${", "") in fn["depends_on"]


def test_function_log_groups_exist_with_retention_and_encryption(stacks: dict[str, Stack]) -> None:
    groups = {group["name"]: group for group in resources(stacks["dev"], "aws_cloudwatch_log_group").values()}
    for folder in FUNCTION_FOLDERS:
        group = groups[f"/aws/lambda/stepfuncproject-dev-{folder}"]
        assert group["retention_in_days"] == 365 and group["kms_key_id"].startswith("${aws_kms_key.")


def test_layer_is_built_for_the_runtime_and_architecture(stacks: dict[str, Stack], synth_dir: Path) -> None:
    layer = only(stacks["dev"]["resource"], "aws_lambda_layer_version")
    assert layer["compatible_runtimes"] == ["python3.13"] and layer["compatible_architectures"] == ["arm64"]
    assert (synth_dir / "stacks" / "stepfuncproject-dev" / layer["filename"]).is_file()
    assert len(layer["source_code_hash"]) == 44  # base64 of a SHA-256


@pytest.mark.parametrize("folder", FUNCTION_FOLDERS)
def test_each_function_role_is_least_privilege(stacks: dict[str, Stack], folder: str) -> None:
    stack = stacks["dev"]
    policy = policy_of(stack, f"-{folder}-role")
    actions = {action for statement in policy["Statement"] for action in statement["Action"]}
    assert not any(action.endswith("*") for action in actions)
    by_sid = statements_by_sid(policy)
    assert by_sid["WriteOwnLogs"]["Resource"] == [
        f"${{aws_cloudwatch_log_group.{key}.arn}}:*" for key in resources(stack, "aws_cloudwatch_log_group")
        if key.startswith(f"functions_{folder}_logs")]
    secrets = by_sid["ReadOwnSecrets"]["Resource"] if "ReadOwnSecrets" in by_sid else []
    assert by_sid.get("ReadOwnSecrets", {"Action": ["secretsmanager:GetSecretValue"]})["Action"] == [
        "secretsmanager:GetSecretValue"]
    # only step 1, which migrates, reads the master secret (the others: tests/stack/test_database_access.py)
    assert any(arn.endswith(".master_user_secret[0].secret_arn}") for arn in secrets) is (folder == "lambda_1")
    reads_token = folder in ("lambda_1", "lambda_2")  # the steps that call PagerDuty
    assert ("${aws_secretsmanager_secret.pagerduty_token_secret_77EACFC4.arn}" in secrets) is reads_token
    assert bool(secrets) is (folder in ("lambda_1", "lambda_2"))
    assert all(resource != "*" for resource in by_sid["ManageOwnNetworkInterfaces"]["Resource"])
    for statement in policy["Statement"]:
        if statement["Resource"] == ["*"]:
            assert statement["Sid"] in {"DescribeNetworkInterfaces", "Tracing"}
    states_statements = [statement for statement in policy["Statement"]
                         if any(action.startswith("states:") for action in statement["Action"])]
    if folder == "lambda_1":  # reconciles runs whose execution timed out or was aborted while holding the lock
        assert states_statements == [by_sid["ReadOwnExecutions"]] == [{
            "Sid": "ReadOwnExecutions", "Effect": "Allow", "Action": ["states:DescribeExecution"],
            "Resource": ["arn:${data.aws_partition.partition.partition}:states:eu-west-2:"
                         "${data.aws_caller_identity.caller.account_id}:execution:stepfuncproject-dev-pipeline:*"]}]
    else:
        assert states_statements == [] and "ReadOwnExecutions" not in by_sid


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_step_one_reads_only_its_own_state_machines_executions(stacks: dict[str, Stack], env: str) -> None:
    (machine,) = resources(stacks[env], "aws_sfn_state_machine").values()
    (resource,) = statements_by_sid(policy_of(stacks[env], "-lambda_1-role"))["ReadOwnExecutions"]["Resource"]
    assert resource.endswith(f":execution:{machine['name']}:*") and machine["name"] == f"stepfuncproject-{env}-pipeline"
    assert "aws_sfn_state_machine" not in resource  # built from the name: the machine depends on the functions


def test_no_broad_managed_policies(stacks: dict[str, Stack]) -> None:
    for env in ("dev", "prod"):
        attachments = resources(stacks[env], "aws_iam_role_policy_attachment").values()
        assert [attachment["policy_arn"] for attachment in attachments] == [
            "arn:${data.aws_partition.partition.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"]


# --- workflow ---------------------------------------------------------------------------------------------

def test_state_machine_is_standard_with_logging_and_tracing(stacks: dict[str, Stack]) -> None:
    machine = only(stacks["prod"]["resource"], "aws_sfn_state_machine")
    assert machine["type"] == "STANDARD"
    assert machine["tracing_configuration"] == {"enabled": True}
    assert machine["logging_configuration"]["level"] == "ERROR"
    assert machine["logging_configuration"]["log_destination"].endswith(".arn}:*")
    assert only(stacks["dev"]["resource"], "aws_sfn_state_machine")["logging_configuration"]["level"] == "ALL"


def test_workflow_timeout_and_steps(stacks: dict[str, Stack]) -> None:
    asl = definition(stacks["dev"])
    assert asl["TimeoutSeconds"] == 2700 and asl["StartAt"] == "FetchInitialData"
    steps = {"FetchInitialData": "lambda_1", "FetchIncidents": "lambda_2", "ValidateData": "lambda_3",
             "HandleError": "lambda_error_handler"}
    for state, folder in steps.items():
        task = asl["States"][state]
        assert task["Resource"] == "arn:aws:states:::lambda:invoke"
        assert task["Parameters"]["FunctionName"].startswith(f"${{aws_lambda_function.functions_{folder}_")
        assert task["Parameters"]["Payload"] == {
            "execution_id.$": "$$.Execution.Id",
            "execution_name.$": "$$.Execution.Name",
            "execution_start_time.$": "$$.Execution.StartTime",
            "execution_timeout_seconds": 2700,  # the state machine's TimeoutSeconds, so each step knows the deadline
            "state_name.$": "$$.State.Name",
            "input.$": "$",
        }
        assert task["OutputPath"] == "$.Payload"


@pytest.mark.parametrize("state", ["FetchInitialData", "FetchIncidents", "ValidateData", "HandleError"])
def test_lambda_invoke_retry(stacks: dict[str, Stack], state: str) -> None:
    (retrier,) = definition(stacks["dev"])["States"][state]["Retry"]
    assert (retrier["MaxAttempts"], retrier["IntervalSeconds"], retrier["BackoffRate"]) == (3, 1, 2.0)
    assert retrier["JitterStrategy"] == "FULL"
    assert "Lambda.TooManyRequestsException" in retrier["ErrorEquals"]
    assert "Lambda.ServiceException" in retrier["ErrorEquals"]
    assert "States.ALL" not in retrier["ErrorEquals"]


@pytest.mark.parametrize(("state", "next_state"), [
    ("FetchInitialData", "FetchIncidents"), ("FetchIncidents", "ValidateData"), ("ValidateData", "PipelineSucceeded")])
def test_choice_continues_only_on_success_true(stacks: dict[str, Stack], state: str, next_state: str) -> None:
    states = definition(stacks["dev"])["States"]
    choice = states[f"Check{state}"]
    failed = f"{state}Failed"
    assert choice["Type"] == "Choice"
    assert choice["Choices"][:3] == [
        {"Variable": "$.success", "IsPresent": False, "Next": failed},
        {"Not": {"Variable": "$.success", "IsBoolean": True}, "Next": failed},
        {"Variable": "$.success", "BooleanEquals": False, "Next": failed},
    ]
    assert choice["Default"] == next_state
    assert states[failed]["Parameters"] == {"failed_step": state, "state.$": "$"}
    assert states[failed]["Next"] == "HandleError"
    assert states[state]["Catch"] == [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": failed}]


def test_step_two_loops_while_incomplete(stacks: dict[str, Stack]) -> None:
    choices = definition(stacks["dev"])["States"]["CheckFetchIncidents"]["Choices"]
    assert {"Variable": "$.complete", "BooleanEquals": False, "Next": "FetchIncidents"} in choices


def test_error_handler_leads_to_a_fail_state(stacks: dict[str, Stack]) -> None:
    states = definition(stacks["dev"])["States"]
    assert states["HandleError"]["Next"] == "PipelineFailed"
    assert states["PipelineFailed"] == {**states["PipelineFailed"], "Type": "Fail", "ErrorPath": "$.error",
                                        "CausePath": "$.message"}
    assert states["HandleError"]["Catch"][0]["Next"] == "ErrorHandlerFailed"
    assert states["ErrorHandlerFailed"]["Type"] == "Fail" and states["ErrorHandlerFailed"]["Error"]


def test_state_machine_role_invokes_exactly_the_four_functions(stacks: dict[str, Stack]) -> None:
    by_sid = statements_by_sid(policy_of(stacks["dev"], "-pipeline-role"))
    invoke = by_sid["InvokePipelineFunctions"]
    assert invoke["Action"] == ["lambda:InvokeFunction"]
    assert sorted(invoke["Resource"]) == sorted(
        f"${{aws_lambda_function.{key}.arn}}" for key in resources(stacks["dev"], "aws_lambda_function"))


def test_review_definition_is_the_synthesized_one(stacks: dict[str, Stack], synth_dir: Path) -> None:
    written = json.loads((synth_dir / "stacks" / "stepfuncproject-dev" / "state-machine.asl.json").read_text())
    assert written == definition(stacks["dev"])


# --- HTTP API ---------------------------------------------------------------------------------------------

def test_invoke_route_starts_the_state_machine(stacks: dict[str, Stack]) -> None:
    stack = stacks["dev"]
    route = only(stack["resource"], "aws_apigatewayv2_route")
    integration_key, integration = next(iter(resources(stack, "aws_apigatewayv2_integration").items()))
    assert route["route_key"] == "POST /invoke"
    assert route["target"] == f"integrations/${{aws_apigatewayv2_integration.{integration_key}.id}}"
    assert (integration["integration_type"], integration["integration_subtype"]) == (
        "AWS_PROXY", "StepFunctions-StartExecution")
    assert integration["payload_format_version"] == "1.0"
    assert integration["request_parameters"] == {
        "StateMachineArn": "${aws_sfn_state_machine.workflow_state_machine_8DF65173.arn}", "Input": "$request.body"}
    api_policy = statements_by_sid(policy_of(stack, "-api-start-execution"))
    machine = "${aws_sfn_state_machine.workflow_state_machine_8DF65173.arn}"
    assert api_policy == {  # StartExecution on the machine, and the key for exactly its execution input
        "StartPipelineExecution": {"Sid": "StartPipelineExecution", "Effect": "Allow",
                                   "Action": ["states:StartExecution"], "Resource": [machine]},
        "EncryptPipelineExecutionInput": {
            "Sid": "EncryptPipelineExecutionInput", "Effect": "Allow", "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": ["${aws_kms_key.encryption_key_EEB70057.arn}"],
            "Condition": {"StringEquals": {"kms:EncryptionContext:aws:states:stateMachineArn": machine}}}}
    assert integration["credentials_arn"].startswith("${aws_iam_role.http_api_role_")


def test_stage_auto_deploys_with_access_logs_and_throttling(stacks: dict[str, Stack]) -> None:
    stage = only(stacks["prod"]["resource"], "aws_apigatewayv2_stage")
    assert stage["name"] == "$default" and stage["auto_deploy"] is True
    log_format = json.loads(stage["access_log_settings"]["format"])
    assert log_format["integrationErrorMessage"] == "$context.integrationErrorMessage"
    assert stage["default_route_settings"] == {"throttling_burst_limit": 5, "throttling_rate_limit": 1}


def test_api_uses_iam_authorization_by_default(stacks: dict[str, Stack]) -> None:
    for env in ("dev", "prod"):
        route = only(stacks[env]["resource"], "aws_apigatewayv2_route")
        assert route["authorization_type"] == "AWS_IAM"
        assert "aws_apigatewayv2_authorizer" not in stacks[env]["resource"]


@pytest.fixture(scope="module")
def variant_stacks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Stack]:
    """Environments exercising the non-default switches: JWT, explicit NONE, x86_64, an existing secret."""
    folder = tmp_path_factory.mktemp("variants")
    settings = folder / "environments.json"
    secret = "arn:aws:secretsmanager:eu-west-2:123456789012:secret:pagerduty-token-AbCdEf"
    settings.write_text(json.dumps({
        "jwt": {"api": {"authorization": "JWT", "jwt_issuer": "https://auth.example.com/",
                        "jwt_audience": ["pipeline"]},
                "functions": {"architecture": "x86_64"},
                "pagerduty": {"token_secret_arn": secret, "api_url": "https://api.eu.pagerduty.com"}},
        "open": {"api": {"authorization": "NONE"}, "workflow": {"timeout_seconds": 7200}},
    }))
    outdir = synthesize(folder / "out", "--settings", str(settings))
    return {env: without_metadata(load_stack(outdir, f"stepfuncproject-{env}")) for env in ("jwt", "open")}


def test_jwt_authorization_uses_issuer_and_audience(variant_stacks: dict[str, Stack]) -> None:
    stack = variant_stacks["jwt"]
    authorizer_key, authorizer = next(iter(resources(stack, "aws_apigatewayv2_authorizer").items()))
    assert authorizer["authorizer_type"] == "JWT"
    assert authorizer["jwt_configuration"] == {"issuer": "https://auth.example.com/", "audience": ["pipeline"]}
    route = only(stack["resource"], "aws_apigatewayv2_route")
    assert route["authorization_type"] == "JWT"
    assert route["authorizer_id"] == f"${{aws_apigatewayv2_authorizer.{authorizer_key}.id}}"


def test_open_api_only_when_chosen(variant_stacks: dict[str, Stack]) -> None:
    assert only(variant_stacks["open"]["resource"], "aws_apigatewayv2_route")["authorization_type"] == "NONE"


def test_every_step_is_told_the_configured_execution_timeout(variant_stacks: dict[str, Stack]) -> None:
    asl = definition(variant_stacks["open"])
    assert asl["TimeoutSeconds"] == 7200
    tasks = [state for state in asl["States"].values() if state["Type"] == "Task"]
    assert len(tasks) == 4
    assert {task["Parameters"]["Payload"]["execution_timeout_seconds"] for task in tasks} == {7200}


def test_existing_token_secret_eu_url_and_architecture_switch(variant_stacks: dict[str, Stack]) -> None:
    stack = variant_stacks["jwt"]
    secret = "arn:aws:secretsmanager:eu-west-2:123456789012:secret:pagerduty-token-AbCdEf"
    assert "aws_secretsmanager_secret" not in stack["resource"]
    callers = [fn for fn in resources(stack, "aws_lambda_function").values()
               if fn["function_name"].endswith(("-lambda_1", "-lambda_2"))]
    for fn in callers:
        assert fn["environment"]["variables"]["PAGERDUTY_TOKEN_SECRET_ARN"] == secret
        assert fn["environment"]["variables"]["PAGERDUTY_API_URL"] == "https://api.eu.pagerduty.com"
    for fn in resources(stack, "aws_lambda_function").values():
        assert fn["architectures"] == ["x86_64"]
    assert only(stack["resource"], "aws_lambda_layer_version")["compatible_architectures"] == ["x86_64"]


# --- outputs, provider, backend ---------------------------------------------------------------------------

def test_outputs_are_named_for_users(stacks: dict[str, Stack]) -> None:
    outputs = stacks["dev"]["output"]
    assert outputs["HttpApiEndpoint-stepfuncproject"]["value"].endswith(".api_endpoint}")
    assert outputs["DatabaseEndpoint-stepfuncproject"]["value"].endswith(".address}")
    assert outputs["StateMachineArn-stepfuncproject"]["value"] == "${aws_sfn_state_machine.workflow_state_machine_8DF65173.arn}"
    assert outputs["DatabaseIamUserArnPrefix-stepfuncproject"]["value"] == (
        "arn:${data.aws_partition.partition.partition}:rds-db:eu-west-2:${data.aws_caller_identity.caller.account_id}"
        ":dbuser:${aws_db_instance.database_instance_D7FC2283.resource_id}/")
    assert {"DatabaseSecretArn-stepfuncproject", "PagerDutyTokenSecretArn-stepfuncproject",
            "StateMachineLogGroup-stepfuncproject", "InvokeUrl-stepfuncproject"} <= set(outputs)


def test_backend_is_applied_exactly_from_backend_file(stacks: dict[str, Stack]) -> None:
    from modules.settings import load_backend

    expected = load_backend()
    for env in ("dev", "prod"):
        s3 = stacks[env]["terraform"]["backend"]["s3"]
        assert s3 == {**expected, "key": f"{env}/{expected['key']}"}
        assert s3["use_lockfile"] is True and s3["dynamodb_table"] and s3["encrypt"] is True
        assert list(stacks[env]["terraform"]["backend"]) == ["s3"]


def test_provider_is_pinned_to_the_tested_major_version(stacks: dict[str, Stack]) -> None:
    for stack in stacks.values():
        required = stack["terraform"]["required_providers"]["aws"]
        assert required == {"source": "hashicorp/aws", "version": "~> 5.100"}
    provider = stacks["dev"]["provider"]["aws"][0]
    assert provider["region"] == "eu-west-2"
    assert provider["default_tags"][0]["tags"]["Environment"] == "dev"


def test_every_named_resource_carries_project_and_environment(stacks: dict[str, Stack]) -> None:
    for env in ("dev", "prod"):
        for kind, entries in stacks[env]["resource"].items():
            for entry in entries.values():
                name = (entry.get("name") or entry.get("function_name") or entry.get("identifier")
                        or entry.get("alarm_name") or entry.get("dashboard_name"))
                # a reference names another resource, itself checked here (a lambda permission's function)
                if isinstance(name, str) and not name.startswith("${") and kind != "aws_apigatewayv2_stage":
                    assert f"stepfuncproject-{env}" in name, (kind, name)


def test_no_secret_values_in_the_configuration(synth_dir: Path) -> None:
    for env in ("dev", "prod"):
        text = json.dumps(load_stack(synth_dir, f"stepfuncproject-{env}"))
        assert '"password":' not in text and "secret_string" not in text  # no password attribute (DB_AUTH may say "password")
