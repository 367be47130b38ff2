"""What EventBridge does with a rule's target that moto leaves undone: render an input transformer, and build a
Step Functions "Execution Status Change" event as AWS sends it.

moto 5.2.5 delivers rule targets only to log groups, SQS, event buses and API destinations (an SNS or Lambda
target raises NotImplementedError; tests/rehearsal/test_moto_gaps.py shows it), and its template parser keeps
`<var>` when a path is missing and does not escape quotes. The rendering here follows the EventBridge user guide
("Amazon EventBridge input transformation", and the InputTransformer API reference):
- each `<name>` of InputPathsMap is replaced by the value at its JSON path (dot notation, as EventBridge supports);
- a template that is a JSON object or a quoted JSON string gets values escaped as JSON string content; a plain-text
  template gets them as they are (the text is what the target receives, e.g. an SNS message);
- a path that matches nothing gives an empty value (a JSON template gets `null` outside quotes);
- the predefined `aws.events.rule-arn`, `aws.events.rule-name`, `aws.events.event.ingestion-time` are filled.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timezone
from typing import Any

STATUS_CHANGE = "Step Functions Execution Status Change"
_VARIABLE = re.compile(r"<([A-Za-z0-9_.\-]+)>")


def _at_path(event: Any, path: str) -> Any:
    if path == "$":
        return event
    if not path.startswith("$."):
        raise ValueError(f"unsupported JSON path {path!r} (EventBridge takes dot notation from $)")
    value = event
    for part in path[2:].split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def render_input_transformer(input_paths: dict[str, str], template: str, event: dict[str, Any], *,
                             rule_arn: str = "", rule_name: str = "") -> str:
    """The body EventBridge sends the target for ``event`` (a string: JSON text or plain text)."""
    values: dict[str, Any] = {name: _at_path(event, path) for name, path in input_paths.items()}
    values.update({"aws.events.rule-arn": rule_arn, "aws.events.rule-name": rule_name,
                   "aws.events.event.ingestion-time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})
    stripped = template.strip()
    json_template = stripped.startswith(("{", "\""))

    def text(value: Any) -> str:
        if value is None:
            return ""
        return value if isinstance(value, str) else json.dumps(value)

    if not json_template:
        return _VARIABLE.sub(lambda m: text(values[m[1]]) if m[1] in values else m[0], template)

    out, inside_string, escaped, i = [], False, False, 0
    while i < len(template):  # walk the JSON text, so a value inside quotes is escaped and one outside is not
        char = template[i]
        match = _VARIABLE.match(template, i) if not escaped else None
        if match and match[1] in values:
            value = values[match[1]]
            if inside_string:
                out.append(json.dumps(text(value))[1:-1])
            else:
                out.append("null" if value is None else json.dumps(value))
            i = match.end()
            continue
        if char == "\"" and not escaped:
            inside_string = not inside_string
        escaped = char == "\\" and not escaped
        out.append(char)
        i += 1
    rendered = "".join(out)
    json.loads(rendered)  # EventBridge refuses a transformer whose result is not JSON; so do we
    return rendered


def status_change_event(execution_arn: str, status: str, *, error: str | None = None, cause: str | None = None,
                        started: datetime | None = None) -> dict[str, Any]:
    """The event Step Functions sends EventBridge when an execution of a STANDARD state machine ends (see "Step
    Functions events" in the EventBridge reference): detail is the execution's DescribeExecution view."""
    parts = execution_arn.split(":")  # arn:aws:states:region:account:execution:machine:name
    region, account, machine, name = parts[3], parts[4], parts[6], parts[7]
    now = datetime.now(timezone.utc)
    started = started or now
    return {
        "version": "0", "id": str(uuid.uuid4()), "detail-type": STATUS_CHANGE, "source": "aws.states",
        "account": account, "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "region": region,
        "resources": [execution_arn],
        "detail": {
            "executionArn": execution_arn,
            "stateMachineArn": f"arn:{parts[1]}:states:{region}:{account}:stateMachine:{machine}",
            "name": name, "status": status,
            "startDate": int(started.timestamp() * 1000), "stopDate": int(now.timestamp() * 1000),
            "input": "{}", "inputDetails": {"included": True}, "output": None, "outputDetails": None,
            "error": error, "cause": cause,
        },
    }
