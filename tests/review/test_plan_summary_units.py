"""Edge cases of review.plan_summary on small hand-made plan documents (no terraform needed)."""

from __future__ import annotations

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
