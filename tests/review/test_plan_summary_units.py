"""Edge cases of review.plan_summary on small hand-made plan documents (no terraform needed)."""

from __future__ import annotations

import pytest

from review import plan_summary as ps


def rc(address, actions, before=None, after=None, **extra):
    change = {"actions": actions, "before": before, "after": after,
              "after_unknown": extra.pop("after_unknown", {}),
              "before_sensitive": extra.pop("before_sensitive", False),
              "after_sensitive": extra.pop("after_sensitive", False)}
    if "replace_paths" in extra:
        change["replace_paths"] = extra.pop("replace_paths")
    if "importing" in extra:
        change["importing"] = extra.pop("importing")
    rtype, name = address.split(".")[0], address.split(".")[1].split("[")[0]
    return {"address": address, "mode": "managed", "type": rtype, "name": name, "change": change, **extra}


def plan(*changes, **extra):
    return {"format_version": "1.2", "terraform_version": "1.x", "resource_changes": list(changes), **extra}


def test_classify():
    assert ps.classify(["delete", "create"]) == "replace"
    assert ps.classify(["create", "delete"]) == "replace"
    assert ps.classify(["no-op"]) == "no-op"
    assert ps.classify(["forget"]) == "forget"
    assert ps.classify([]) == "no-op"


def test_deposed_import_forget_and_unknown_reason():
    md = ps.render_markdown(plan(
        rc("aws_instance.web", ["delete"], {"id": "i-1"}, None, deposed="abcd1234"),
        rc("aws_s3_bucket.logs", ["no-op"], {"id": "b"}, {"id": "b"}, importing={"id": "b"}),
        rc("aws_s3_bucket.old", ["forget"], {"id": "o"}, None, action_reason="some_future_reason"),
    ))
    assert "delete `aws_instance.web` (deposed object `abcd1234`)" in md
    assert "- `aws_s3_bucket.logs` (imported)" in md
    assert "- forget `aws_s3_bucket.old` — some future reason (`some_future_reason`)" in md
    assert "| create | update | replace | delete | read | no-op | forget |" in md


def test_sensitive_whole_object_nested_list_and_doc():
    md = ps.render_markdown(plan(rc(
        "aws_ssm_parameter.p", ["update"],
        {"value": "old-secret-value", "tags": {"a": "1"}, "list": ["x", "hidden-1"], "doc": '{"k": "v"}'},
        {"value": "new-secret-value", "tags": {"a": "2"}, "list": ["x", "hidden-2"], "doc": '{"k": "w"}'},
        before_sensitive={"value": True, "list": [False, True], "doc": True},
        after_sensitive={"value": True, "list": [False, True], "doc": True},
    )))
    assert "old-secret" not in md and "new-secret" not in md and "hidden-" not in md and '"w"' not in md
    assert "~ value = (sensitive) -> (sensitive)" in md
    assert '~ list = ["x", "(sensitive)"] -> ["x", "(sensitive)"]' in md
    assert '~ tags.a = "1" -> "2"' in md
    assert "| update | `aws_ssm_parameter.p` | Secret |" in md


def test_sensitive_variable_value_masked_everywhere():
    p = plan(rc("terraform_data.x", ["update"], {"input": "a"}, {"input": "pw=SuperSecret99"}),
             variables={"pw": {"value": "SuperSecret99"}},
             configuration={"root_module": {"variables": {"pw": {"sensitive": True}}}})
    md = ps.render_markdown(p)
    assert "SuperSecret99" not in md
    assert '~ input = "a" -> (sensitive)' in md


def test_outputs_sensitive_unknown_and_escaping():
    p = plan(output_changes={
        "secret": {"actions": ["create"], "before": None, "after": "x", "after_unknown": False,
                   "before_sensitive": False, "after_sensitive": True},
        "pipe": {"actions": ["update"], "before": "a|b", "after": "a`b", "after_unknown": False,
                 "before_sensitive": False, "after_sensitive": False},
        "later": {"actions": ["update"], "before": 1, "after": None, "after_unknown": True,
                  "before_sensitive": False, "after_sensitive": False},
        "same": {"actions": ["no-op"], "before": 1, "after": 1, "after_unknown": False,
                 "before_sensitive": False, "after_sensitive": False},
    })
    md = ps.render_markdown(p)
    assert "| `secret` | create |  | `(sensitive)` |" in md
    assert '| `pipe` | update | `"a\\|b"` | `` "a`b" `` |' in md
    assert "| `later` | update | `1` | `(known after apply)` |" in md
    assert "`same`" not in md


def test_route_without_auth_change_is_not_security():
    md = ps.render_markdown(plan(rc("aws_apigatewayv2_route.r", ["update"],
                                    {"target": "a", "authorization_type": "NONE"},
                                    {"target": "b", "authorization_type": "NONE"})))
    assert "Security-sensitive" not in md
    md = ps.render_markdown(plan(rc("aws_apigatewayv2_route.r", ["update"],
                                    {"authorization_type": "JWT"}, {"authorization_type": "NONE"})))
    assert "| update | `aws_apigatewayv2_route.r` | API authorization |" in md


def test_db_instance_replacement_first_and_flagged():
    md = ps.render_markdown(plan(
        rc("aws_db_instance.main", ["delete", "create"], {"engine_version": "15"}, {"engine_version": "16"},
           replace_paths=[["engine_version"]], action_reason="replace_because_cannot_update"),
        rc("aws_lambda_function.a", ["create"], None, {"function_name": "a"}),
    ))
    assert md.index("replace `aws_db_instance.main`") < md.index("Creates (1)")
    assert "- Security-sensitive: **Database**" in md
    assert '~ engine_version = "15" -> "16"   # forces replacement' in md


def test_errored_plan_and_drift_delete():
    md = ps.render_markdown(plan(errored=True, resource_drift=[
        rc("aws_s3_bucket.gone", ["delete"], {"id": "g"}, None)]))
    assert "this plan is incomplete" in md
    assert "- deleted outside Terraform `aws_s3_bucket.gone`" in md


def test_tiny_budget_never_exceeded():
    p = plan(*[rc(f"terraform_data.x[{i}]", ["create"], None, {"input": i}) for i in range(50)])
    for limit in (100, 500, 2000):
        assert len(ps.render_markdown(p, max_chars=limit)) <= limit


def test_natural_order():
    md = ps.render_markdown(plan(*[rc(f"terraform_data.x[{i}]", ["create"], None, {}) for i in (10, 2, 1)]))
    assert md.index("x[1]`") < md.index("x[2]`") < md.index("x[10]`")


def test_long_values_and_code_fences_are_safe():
    md = ps.render_markdown(plan(rc("terraform_data.t", ["update"], {"input": "```" + "a" * 500},
                                    {"input": "b"})))
    assert "…" in md
    assert "````diff" in md  # a longer fence than any backtick run inside


# --------------------------------------------------------------------------- what is flagged (issue 12)

def security_rows(md):
    return {line.split("`")[1]: line.rsplit("|", 2)[1].strip()
            for line in md.splitlines() if line.startswith("| ") and "`" in line and line.count("|") == 4}


def test_code_only_function_update_is_routine():
    code = rc("aws_lambda_function.f", ["update"],
              {"role": "arn:r/a", "source_code_hash": "old", "last_modified": "t1", "memory_size": 128},
              {"role": "arn:r/a", "source_code_hash": "new", "last_modified": None, "memory_size": 128},
              after_unknown={"last_modified": True})
    md = ps.render_markdown(plan(code))
    assert "Security-sensitive" not in md and "Updates in place (1)" in md


def test_function_role_network_and_key_all_named():
    both = rc("aws_lambda_function.f", ["update"],
              {"role": "arn:r/a", "vpc_config": [], "kms_key_arn": None},
              {"role": "arn:r/b", "vpc_config": [{"subnet_ids": ["s-1"], "security_group_ids": ["sg-1"]}],
               "kms_key_arn": "arn:k/1"})
    md = ps.render_markdown(plan(both))
    assert "| update | `aws_lambda_function.f` | Function role, Function network (VPC), Encryption |" in md
    assert "- Security-relevant attributes changed: `role`, `vpc_config`, `kms_key_arn`" in md
    assert '+ vpc_config[0].security_group_ids = ["sg-1"]' in md


def test_role_that_becomes_unknown_is_flagged():
    """The function's role is being replaced: its ARN is known only after apply, still a role change."""
    md = ps.render_markdown(plan(rc("aws_sfn_state_machine.w", ["update"], {"role_arn": "arn:r/a"},
                                    {"role_arn": None}, after_unknown={"role_arn": True})))
    assert "| update | `aws_sfn_state_machine.w` | Workflow role |" in md
    assert '~ role_arn = "arn:r/a" -> (known after apply)' in md


def test_replacement_flags_known_changes_not_computed_ones():
    """A replaced function's computed vpc_config.vpc_id turns unknown: not a network change by itself."""
    renamed = rc("aws_lambda_function.f", ["delete", "create"],
                 {"function_name": "a", "role": "arn:r/a", "vpc_config": [{"vpc_id": "vpc-1", "subnet_ids": ["s"]}]},
                 {"function_name": "b", "role": "arn:r/a", "vpc_config": [{"vpc_id": None, "subnet_ids": ["s"]}]},
                 after_unknown={"vpc_config": [{"vpc_id": True}]}, replace_paths=[["function_name"]])
    md = ps.render_markdown(plan(renamed))
    assert "Security-sensitive" not in md
    moved = rc("aws_lambda_function.f", ["delete", "create"],
               {"function_name": "a", "role": "arn:r/a", "vpc_config": [{"vpc_id": "vpc-1", "subnet_ids": ["s"]}]},
               {"function_name": "b", "role": "arn:r/a", "vpc_config": [{"vpc_id": None, "subnet_ids": ["t"]}]},
               after_unknown={"vpc_config": [{"vpc_id": True}]}, replace_paths=[["function_name"]])
    md = ps.render_markdown(plan(moved))
    assert "- Security-sensitive: **Function network (VPC)** (changes `vpc_config`)" in md


@pytest.mark.parametrize("rtype, attr, category", sorted(
    (rtype, attr, category) for rtype, attrs in ps.SENSITIVE_ATTRIBUTES.items() for attr, category in attrs.items()))
def test_every_sensitive_attribute_flags_an_update(rtype, attr, category):
    md = ps.render_markdown(plan(rc(f"{rtype}.x", ["update"], {attr: "old", "description": "d"},
                                    {attr: "new", "description": "d"})))
    assert f"{rtype}.x" in security_rows(md)
    assert category in security_rows(md)[f"{rtype}.x"].split(", ")
    assert f"- Security-relevant attributes changed: `{attr}`" in md


@pytest.mark.parametrize("rtype", sorted(set(ps.SENSITIVE_ATTRIBUTES) - set(ps.SENSITIVE_TYPES)
                                         - {t for t in ps.SENSITIVE_ATTRIBUTES
                                            if t.startswith(tuple(p for p, _ in ps.SENSITIVE_PREFIXES))}))
def test_attribute_scoped_types_other_updates_are_routine(rtype):
    md = ps.render_markdown(plan(rc(f"{rtype}.x", ["update"], {"tags": {"a": "1"}}, {"tags": {"a": "2"}})))
    assert "Security-sensitive" not in md and "Updates in place (1)" in md


@pytest.mark.parametrize("rtype, category", [
    ("aws_db_parameter_group", "Database parameters"), ("aws_db_subnet_group", "Database network"),
    ("aws_s3_bucket", "State backend"), ("aws_dynamodb_table", "State backend"),
    ("aws_s3_bucket_lifecycle_configuration", "State backend"), ("aws_s3_bucket_ownership_controls", "State backend"),
    ("aws_s3_bucket_versioning", "State backend"), ("aws_s3_bucket_policy", "Resource policy"),
    ("aws_s3_bucket_public_access_block", "Resource policy"),
    ("aws_s3_bucket_server_side_encryption_configuration", "Encryption"),
    ("aws_iam_role", "IAM"), ("aws_iam_role_policy_attachment", "IAM"), ("aws_kms_key", "KMS"),
    ("aws_secretsmanager_secret", "Secret"), ("aws_db_instance", "Database"),
])
def test_whole_types_always_flagged(rtype, category):
    """Any change, a tag included, and any action."""
    md = ps.render_markdown(plan(
        rc(f"{rtype}.u", ["update"], {"tags": {"a": "1"}}, {"tags": {"a": "2"}}),
        rc(f"{rtype}.c", ["create"], None, {"tags": {"a": "1"}}),
        rc(f"{rtype}.d", ["delete"], {"tags": {"a": "1"}}, None)))
    rows = security_rows(md)
    assert rows == {f"{rtype}.u": category, f"{rtype}.c": category, f"{rtype}.d": category}


def test_whole_type_gains_the_category_of_a_sensitive_attribute():
    md = ps.render_markdown(plan(
        rc("aws_db_instance.db", ["update"], {"storage_encrypted": True, "kms_key_id": "k1"},
           {"storage_encrypted": True, "kms_key_id": "k2"}),
        rc("aws_dynamodb_table.lock", ["update"], {"server_side_encryption": [{"enabled": True}]},
           {"server_side_encryption": [{"enabled": False}]})))
    rows = security_rows(md)
    assert rows["aws_db_instance.db"] == "Database, Encryption"
    assert rows["aws_dynamodb_table.lock"] == "State backend, Encryption"


def test_attribute_scoped_creates_are_not_flagged_routes_are():
    md = ps.render_markdown(plan(
        rc("aws_lambda_function.f", ["create"], None, {"role": "arn:r/a"}),
        rc("aws_apigatewayv2_integration.i", ["create"], None, {"credentials_arn": "arn:r/a"}),
        rc("aws_apigatewayv2_route.r", ["create"], None, {"authorization_type": "NONE"}),
        rc("aws_apigatewayv2_route.gone", ["delete"], {"authorization_type": "JWT"}, None)))
    assert security_rows(md) == {"aws_apigatewayv2_route.r": "API authorization",
                                 "aws_apigatewayv2_route.gone": "API authorization"}
    assert "- `aws_lambda_function.f`" in md and "- `aws_apigatewayv2_integration.i`" in md  # plain creates


def test_named_blocks_are_compared_by_name():
    """A parameter group's parameters form a set: compared by name, whatever the order Terraform lists them in."""
    before = [{"name": "log_statement", "value": "all"}, {"name": "rds.force_ssl", "value": "1"}]
    after = [{"name": "rds.force_ssl", "value": "0"}, {"name": "log_statement", "value": "all"},
             {"name": "work_mem", "value": "8192"}]
    md = ps.render_markdown(plan(rc("aws_db_parameter_group.p", ["update"], {"parameter": before},
                                    {"parameter": after})))
    assert '~ parameter[name="rds.force_ssl"].value = "1" -> "0"' in md
    assert '+ parameter[name="work_mem"].value = "8192"' in md
    assert "log_statement" not in md
    assert '.name = "' not in md  # the path names the element
    assert "| update | `aws_db_parameter_group.p` | Database parameters |" in md
    bare = ps.render_markdown(plan(rc("aws_iam_role.r", ["update"], {"inline_policy": []},
                                      {"inline_policy": [{"name": "only-a-name", "policy": ""}]})))
    assert '+ inline_policy[name="only-a-name"] = {"name": "only-a-name", "policy": ""}' in bare
    created = ps.render_markdown(plan(rc("aws_db_parameter_group.n", ["create"], None, {"parameter": after})))
    assert '+ parameter[name="rds.force_ssl"].value = "0"' in created
