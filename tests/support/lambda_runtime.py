"""Serve moto's Lambda invocations in-process with the real handlers, and make retry waits instant.

moto (with `lambda.use_docker` off) sends every Invoke to `LambdaSimpleBackend.invoke`; `InProcessLambdas`
replaces it for the duration of a `with` block and routes each call, by function name or ARN, to the
registered handler module, with that function's environment variables applied and a Lambda-like
context. A handler exception becomes an `Unhandled` function error shaped like AWS's; queued faults
raise Lambda service errors (e.g. throttling) before the handler runs, so Retry policies see them. The
CloudWatch EMF lines a function writes (on stdout in AWS, where CloudWatch Logs extracts the metrics) are kept
on its `Invocation` (`metric_lines`) instead of being printed.

`SynthesizedWorkflow` reads what a local execution needs from one synthesized stack (the state machine
definition, the four functions with their environment and zip, the HTTP API integration's Input mapping);
`LocalWorkflow` runs that definition in moto's Step Functions interpreter (`execute_state_machine`, Lambda
without Docker) with the functions served here, their AWS references redirected to a local `Database` and
PagerDuty. Used by tests/workflow and tools/local_run.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from unittest import mock

from moto.awslambda_simple.models import LambdaSimpleBackend
from moto.core.exceptions import JsonRESTError

ROOT = Path(__file__).resolve().parents[2]
Handler = Callable[[Any, Any], Any]


def load_handler(folder: str) -> Handler:
    """lambdas/<folder>/handler.py's `handler`, loaded as its own module (every folder has a handler.py)."""
    path = ROOT / "lambdas" / folder / "handler.py"
    spec = importlib.util.spec_from_file_location(f"lambda_handler_{folder}", path)
    assert spec and spec.loader, path
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler


@dataclass
class LambdaContext:
    """The parts of the Lambda context object the handlers use."""

    function_name: str
    timeout_seconds: float
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    memory_limit_in_mb: int = 512
    _deadline: float = 0.0

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds
        self.invoked_function_arn = f"arn:aws:lambda:eu-west-2:123456789012:function:{self.function_name}"
        self.log_group_name = f"/aws/lambda/{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass
class Invocation:
    function: str
    event: Any
    result: Any = None
    error: str | None = None
    metric_lines: list[str] = field(default_factory=list)  # the EMF lines it wrote (pagerduty_pipeline.metrics)


@dataclass
class _Function:
    handler: Handler
    environment: dict[str, str]
    timeout_seconds: float


def function_name_of(name_or_arn: str) -> str:
    """`arn:aws:lambda:region:account:function:NAME[:qualifier]` or NAME -> NAME."""
    return name_or_arn.split(":")[6] if name_or_arn.startswith("arn:") else name_or_arn


def _metrics_into(lines: list[str]):
    """The layer's metric lines go to `lines` (a block). Its destination is process-wide, like the environment
    variables: right because invocations run one at a time."""
    from pagerduty_pipeline import metrics  # the handlers' layer (on sys.path wherever they run)

    return metrics.writing_to(lines.append)


class InProcessLambdas:
    def __init__(self) -> None:
        self._functions: dict[str, _Function] = {}
        self._faults: dict[str, list[str]] = defaultdict(list)
        self._lock = threading.Lock()
        self.invocations: list[Invocation] = []
        self.service_errors: list[tuple[str, str]] = []
        self.retry_waits: list[float] = []

    def register(self, name_or_arn: str, handler: Handler, environment: dict[str, str] | None = None,
                 timeout_seconds: float = 600) -> None:
        self._functions[function_name_of(name_or_arn)] = _Function(handler, dict(environment or {}), timeout_seconds)

    def fail_next(self, name_or_arn: str, error: str = "TooManyRequestsException", times: int = 1) -> None:
        """The next `times` invocations of the function raise this Lambda service error instead of running."""
        self._faults[function_name_of(name_or_arn)].extend([error] * times)

    def calls(self, name_or_arn: str) -> list[Invocation]:
        name = function_name_of(name_or_arn)
        return [call for call in self.invocations if call.function == name]

    def _invoke(self, function_name: str, qualifier: str | None, body: Any, headers: Any,
                response_headers: Any) -> bytes:
        name = function_name_of(function_name)
        with self._lock:  # environment variables are process-wide: one invocation at a time
            if self._faults[name]:
                error = self._faults[name].pop(0)
                self.service_errors.append((name, error))
                raise JsonRESTError(error, f"{error} injected by the test for {name}")
            function = self._functions.get(name)
            if function is None:
                raise JsonRESTError("ResourceNotFoundException", f"Function not found: {name} (not registered)")
            event = json.loads(body) if body else {}
            call = Invocation(name, event)
            self.invocations.append(call)
            with mock.patch.dict(os.environ, function.environment), _metrics_into(call.metric_lines):
                try:
                    call.result = function.handler(event, LambdaContext(name, function.timeout_seconds))
                except Exception as exc:  # noqa: BLE001 - this is the Lambda runtime boundary
                    call.error = type(exc).__name__
                    response_headers["x-amz-function-error"] = "Unhandled"
                    return json.dumps({"errorType": type(exc).__name__, "errorMessage": str(exc),
                                       "trace": []}).encode()
            return json.dumps(call.result).encode()

    @contextmanager
    def serving(self) -> Iterator[InProcessLambdas]:
        """Route invocations here and record (instead of sleeping) the interpreter's retry waits."""
        runtime = self

        def invoke(_backend: LambdaSimpleBackend, function_name: str, qualifier: str | None, body: Any,
                   headers: Any, response_headers: Any) -> bytes:
            return runtime._invoke(function_name, qualifier, body, headers, response_headers)

        instant = mock.Mock(sleep=self.retry_waits.append)
        with mock.patch.object(LambdaSimpleBackend, "invoke", invoke), \
                mock.patch("moto.stepfunctions.parser.asl.component.common.retry.retrier_decl.time", instant):
            yield self


# ---------------------------------------------------------------------------------------------
# The synthesized workflow, executed by moto's Step Functions interpreter with the real handlers
# ---------------------------------------------------------------------------------------------
MOTO_CONFIG = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
FAKE_AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}
# Variables whose synthesized values point at AWS resources; a local run must replace every one of them.
_REFERENCE = re.compile(r"\$\{([^}]*)\}")


@dataclass(frozen=True)
class SynthesizedFunction:
    key: str  # the aws_lambda_function resource key in cdk.tf.json
    folder: str  # lambdas/<folder>/handler.py
    function_name: str
    environment: dict[str, str]
    timeout_seconds: int
    memory_mb: int
    zip_path: Path


@dataclass(frozen=True)
class SynthesizedWorkflow:
    """What the local workflow needs from one synthesized pipeline stack (cdktf.out/stacks/<stack>)."""

    stack_dir: Path
    region: str
    state_machine_name: str
    definition_template: str
    functions: dict[str, SynthesizedFunction]  # by folder: lambda_1, lambda_2, lambda_3, lambda_error_handler
    request_parameters: dict[str, str]  # of the HTTP API's StartExecution integration

    @classmethod
    def load(cls, stack_dir: Path | str) -> SynthesizedWorkflow:
        stack_dir = Path(stack_dir)
        config = json.loads((stack_dir / "cdk.tf.json").read_text())
        resources = config["resource"]
        (machine,) = resources["aws_sfn_state_machine"].values()
        (integration,) = resources["aws_apigatewayv2_integration"].values()
        functions = {}
        for key, fn in resources["aws_lambda_function"].items():
            folder = Path(fn["filename"]).stem  # assets/.../lambda_1.zip
            if not (ROOT / "lambdas" / folder / "handler.py").is_file():
                raise ValueError(f"{key}: no lambdas/{folder}/handler.py for {fn['filename']}")
            functions[folder] = SynthesizedFunction(
                key=key, folder=folder, function_name=fn["function_name"],
                environment=dict(fn.get("environment", {}).get("variables", {})),
                timeout_seconds=int(fn.get("timeout", 3)), memory_mb=int(fn.get("memory_size", 128)),
                zip_path=stack_dir / fn["filename"])
        return cls(stack_dir=stack_dir, region=config["provider"]["aws"][0]["region"],
                   state_machine_name=machine["name"], definition_template=machine["definition"],
                   functions=functions, request_parameters=dict(integration["request_parameters"]))

    def definition(self, function_arns: dict[str, str], *, execution_timeout: int | None = None) -> str:
        """The synthesized definition with `${aws_lambda_function.<key>.arn}` replaced by function_arns[folder];
        any other Terraform reference left in it is an error. `execution_timeout` (tests only) shortens the state
        machine's TimeoutSeconds, and the timeout every task tells its function, to see a timeout in seconds."""
        by_key = {f"aws_lambda_function.{fn.key}.arn": function_arns[folder] for folder, fn in self.functions.items()}

        def resolve(match: re.Match[str]) -> str:
            if match.group(1) not in by_key:
                raise ValueError(f"the state machine definition references {match.group(0)}, which a local run "
                                 "cannot resolve")
            return by_key[match.group(1)]

        definition = _REFERENCE.sub(resolve, self.definition_template)
        if execution_timeout is None:
            return definition
        parsed = json.loads(definition)
        parsed["TimeoutSeconds"] = execution_timeout
        for state in parsed["States"].values():
            payload = state.get("Parameters", {}).get("Payload", {})
            if "execution_timeout_seconds" in payload:
                payload["execution_timeout_seconds"] = execution_timeout
        return json.dumps(parsed)

    def execution_input(self, body: str | bytes) -> str:
        """StartExecution's input as the HTTP API integration builds it from a request body."""
        source = self.request_parameters.get("Input")
        if source != "$request.body":
            raise NotImplementedError(f"integration Input mapping {source!r} is not supported by the local run")
        return body.decode() if isinstance(body, bytes) else body


@dataclass(frozen=True)
class Database:
    """Where the functions write: DB_HOST/DB_PORT/DB_NAME/DB_SSL/DB_SSL_ROOT_CERT plus the credentials of
    DB_SECRET_ARN's secret."""

    host: str
    port: int
    dbname: str
    username: str
    password: str
    ssl: str = "disable"
    root_cert: str | None = None  # the CA bundle verify-full checks the server's certificate with

    @classmethod
    def of(cls, instance: Any) -> Database:
        """A tests.support.postgres.PostgresInstance: TLS verified against the CA that issued its certificate."""
        return cls(instance.host, int(instance.port), instance.dbname, instance.user, instance.password,
                   "verify-full", instance.ca_file)

    @classmethod
    def from_url(cls, url: str) -> Database:
        """postgresql://user:password@host[:port]/dbname[?sslmode=disable|require|verify-full][&sslrootcert=FILE]
        (libpq's names); without sslmode, `verify-full` with an sslrootcert, else `disable` for a loopback host and
        `require` otherwise. verify-full needs sslrootcert (a CA bundle file)."""
        parts = urlsplit(url)
        if parts.scheme not in ("postgres", "postgresql") or not parts.hostname or not parts.username:
            raise ValueError("a database URL looks like postgresql://user:password@host:5432/dbname")
        dbname = unquote(parts.path.lstrip("/"))
        if not dbname:
            raise ValueError("the database URL names no database (postgresql://user:password@host:5432/dbname)")
        query = parse_qs(parts.query)
        root_cert = (query.get("sslrootcert") or [""])[0] or None
        ssl = (query.get("sslmode") or [""])[0]
        if not ssl:
            if root_cert:
                ssl = "verify-full"
            else:
                ssl = "disable" if parts.hostname in ("localhost", "127.0.0.1", "::1") else "require"
        elif ssl not in ("disable", "require", "verify-full"):
            raise ValueError(f"sslmode={ssl} is not supported (disable, require or verify-full)")
        if ssl == "verify-full":
            if not root_cert:
                raise ValueError("sslmode=verify-full needs sslrootcert=<CA bundle file>")
            if not os.path.isfile(root_cert):
                raise ValueError(f"sslrootcert file not found: {root_cert}")
        return cls(parts.hostname, parts.port or 5432, dbname, unquote(parts.username),
                   unquote(parts.password or ""), ssl, root_cert)

    def connect(self) -> Any:
        """A pg8000.native connection with the TLS context the layer builds for DB_SSL/DB_SSL_ROOT_CERT."""
        import pg8000.native
        from pagerduty_pipeline.db import ssl_context_for

        return pg8000.native.Connection(user=self.username, password=self.password, host=self.host,
                                        port=self.port, database=self.dbname,
                                        ssl_context=ssl_context_for(self.ssl, self.root_cert))


@dataclass
class StateVisit:
    name: str
    type: str  # Task, Choice, Pass, Fail, Succeed
    entered: float  # seconds since the execution started
    exited: float | None = None
    output: Any = None

    @property
    def seconds(self) -> float:
        return (self.exited if self.exited is not None else self.entered) - self.entered


@dataclass
class WorkflowRun:
    execution_arn: str
    status: str  # SUCCEEDED, FAILED, TIMED_OUT, ABORTED
    input: str
    output: Any
    error: str | None
    cause: str | None
    seconds: float
    states: list[StateVisit]
    invocations: list[Invocation]
    history: list[dict[str, Any]]

    @property
    def path(self) -> list[str]:
        return [state.name for state in self.states]


def _visits(history: list[dict[str, Any]]) -> list[StateVisit]:
    if not history:
        return []
    t0 = history[0]["timestamp"]
    visits: list[StateVisit] = []
    for event in history:
        at = (event["timestamp"] - t0).total_seconds()
        kind = event["type"]
        if kind.endswith("StateEntered"):
            visits.append(StateVisit(event["stateEnteredEventDetails"]["name"], kind[:-len("StateEntered")], at))
        elif kind.endswith("StateExited") and visits:
            details = event["stateExitedEventDetails"]
            visit = next((v for v in reversed(visits) if v.name == details["name"] and v.exited is None), None)
            if visit is not None:
                visit.exited = at
                visit.output = json.loads(details.get("output") or "null")
        elif kind.startswith("Execution") and kind != "ExecutionStarted":
            for visit in visits:
                if visit.exited is None:  # Fail/Succeed states end with the execution
                    visit.exited = at
    return visits


class LocalWorkflow:
    """The synthesized state machine in moto (in-process ASL interpreter) with the four functions served by
    their real handlers, Secrets Manager secrets for the database and the PagerDuty token, and each function's
    synthesized environment with its AWS references redirected to the local parts.

        with LocalWorkflow(SynthesizedWorkflow.load(stack_dir), db=..., pagerduty=...) as wf:
            run = wf.execute(b'{"since": "..."}')

    pagerduty: token, and url (PAGERDUTY_API_URL; the
    synthesized value when absent). `extra_env` is added to every function; `wrap` maps a folder to a function
    that wraps its real handler (tests); `timeouts` overrides a function's timeout (its context's remaining time).
    """

    def __init__(self, workflow: SynthesizedWorkflow, *, db: Database, pagerduty: dict[str, str],
                 extra_env: dict[str, str] | None = None, wrap: dict[str, Callable[[Handler], Handler]] | None = None,
                 timeouts: dict[str, float] | None = None, execution_timeout: int | None = None) -> None:
        self.workflow = workflow
        self.db, self.pagerduty = db, pagerduty
        self.extra_env = dict(extra_env or {})
        self.wrap = dict(wrap or {})
        self.timeouts = dict(timeouts or {})
        self.execution_timeout = execution_timeout
        self.lambdas = InProcessLambdas()
        self.function_arns: dict[str, str] = {}
        self.environments: dict[str, dict[str, str]] = {}
        self.state_machine_arn = ""
        self._stack: ExitStack | None = None
        self._sfn: Any = None
        self._runs = 0
        self._started: list[str] = []

    def function_environment(self, fn: SynthesizedFunction, secret_arns: dict[str, str],
                             logins: dict[str, str]) -> dict[str, str]:
        """The synthesized variables with the database and secrets made local. A function that logs in with an IAM
        token in AWS logs in here as the same database user with that user's password (`logins`: user -> its
        secret): a local PostgreSQL cannot check IAM tokens, and the roles stay the deployed ones (README,
        "Database access"). `secret_arns`: "db" (the master login) and "pagerduty"."""
        from tests.support.db_roles import with_password_login

        env = {**fn.environment, "DB_SECRET_ARN": secret_arns["db"]}  # the master's, unless an IAM login below
        env = with_password_login(env, logins, fn.function_name)
        env.update({"DB_HOST": self.db.host, "DB_PORT": str(self.db.port), "DB_NAME": self.db.dbname,
                    "DB_SSL": self.db.ssl})
        env.pop("DB_SSL_ROOT_CERT", None)  # the deployed bundle's path in the layer (/opt/...)
        if self.db.root_cert:
            env["DB_SSL_ROOT_CERT"] = self.db.root_cert
        if "PAGERDUTY_TOKEN_SECRET_ARN" in env:
            env["PAGERDUTY_TOKEN_SECRET_ARN"] = secret_arns["pagerduty"]
        if self.pagerduty.get("url"):
            env["PAGERDUTY_API_URL"] = self.pagerduty["url"]
        env.update(self.extra_env)
        unresolved = sorted(name for name, value in env.items() if _REFERENCE.search(str(value)))
        if unresolved:
            raise ValueError(f"{fn.function_name}: no local value for {', '.join(unresolved)}")
        return env

    def __enter__(self) -> LocalWorkflow:
        import boto3
        from moto import mock_aws

        from tests.support.db_roles import login_secrets

        stack = ExitStack()
        self._stack = stack
        try:
            stack.enter_context(mock.patch.dict(os.environ, {**FAKE_AWS_ENV, "AWS_DEFAULT_REGION": self.workflow.region,
                                                             "AWS_REGION": self.workflow.region}))
            for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
                os.environ.pop(name, None)  # restored by patch.dict on exit
            stack.enter_context(mock_aws(config=MOTO_CONFIG))  # the config applies to what is created after
            stack.enter_context(self.lambdas.serving())
            region = self.workflow.region
            suffix = uuid.uuid4().hex[:8]  # an enclosing mock_aws (another suite's) keeps its data between us
            secrets = boto3.client("secretsmanager", region_name=region)
            secret_arns = {
                "db": secrets.create_secret(Name=f"local/db-{suffix}", SecretString=json.dumps(
                    {"username": self.db.username, "password": self.db.password}))["ARN"],
                "pagerduty": secrets.create_secret(Name=f"local/pagerduty-{suffix}", SecretString=json.dumps(
                    {"token": self.pagerduty["token"]}))["ARN"],
            }
            conn = self.db.connect()  # the master sets the passwords of the roles the functions use
            try:
                logins = login_secrets(conn, secrets, f"local/{suffix}/")
            finally:
                conn.close()
            iam = boto3.client("iam", region_name=region)
            role = iam.create_role(RoleName=f"local-lambda-{suffix}", AssumeRolePolicyDocument=json.dumps({
                "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                        "Principal": {"Service": "lambda.amazonaws.com"}}]}))["Role"]
            sfn_role = iam.create_role(RoleName=f"local-states-{suffix}", AssumeRolePolicyDocument=json.dumps({
                "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                        "Principal": {"Service": "states.amazonaws.com"}}]}))["Role"]
            lambdas = boto3.client("lambda", region_name=region)
            for folder, fn in self.workflow.functions.items():
                env = self.function_environment(fn, secret_arns, logins)
                created = lambdas.create_function(
                    FunctionName=fn.function_name, Runtime="python3.13", Role=role["Arn"], Handler="handler.handler",
                    Code={"ZipFile": fn.zip_path.read_bytes()}, Timeout=fn.timeout_seconds, MemorySize=fn.memory_mb,
                    Environment={"Variables": env})
                self.function_arns[folder] = created["FunctionArn"]
                self.environments[folder] = env
                handler = load_handler(folder)
                if folder in self.wrap:
                    handler = self.wrap[folder](handler)
                self.lambdas.register(created["FunctionArn"], handler, env,
                                      timeout_seconds=self.timeouts.get(folder, fn.timeout_seconds))
            self._sfn = boto3.client("stepfunctions", region_name=region)
            self.state_machine_arn = self._sfn.create_state_machine(
                name=self.workflow.state_machine_name,
                definition=self.workflow.definition(self.function_arns, execution_timeout=self.execution_timeout),
                roleArn=sfn_role["Arn"], type="STANDARD")["stateMachineArn"]
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop a still running execution and remove what was created (an enclosing mock_aws would keep it)."""
        if self._stack is None:
            return
        import boto3

        try:
            for arn in self._started:
                with suppress(Exception):
                    if self._sfn.describe_execution(executionArn=arn)["status"] == "RUNNING":
                        self._sfn.stop_execution(executionArn=arn, error="LocalRunStopped",
                                                 cause="the local workflow was closed")
            with suppress(Exception):
                if self.state_machine_arn:
                    self._sfn.delete_state_machine(stateMachineArn=self.state_machine_arn)
            lambdas = boto3.client("lambda", region_name=self.workflow.region)
            for arn in self.function_arns.values():
                with suppress(Exception):
                    lambdas.delete_function(FunctionName=arn)
        finally:
            self._stack.close()
            self._stack = None

    def execute(self, body: str | bytes, name: str | None = None, *, timeout: float = 600,
                on_progress: Callable[[str | None, float], None] | None = None,
                poll_seconds: float = 0.05, state_seconds: float = 0.5) -> WorkflowRun:
        """Start an execution with the input the HTTP API would build from `body`, wait for it to end
        (calling on_progress(current state, elapsed seconds) while it runs) and return what happened.

        The status is polled every poll_seconds; the current state, which takes the whole execution history,
        is looked up at most every state_seconds."""
        return self.wait(self.start(body, name), timeout=timeout, on_progress=on_progress,
                         poll_seconds=poll_seconds, state_seconds=state_seconds)

    def start(self, body: str | bytes, name: str | None = None) -> str:
        """Start an execution (as the HTTP API's StartExecution integration would) and return its ARN at once;
        `wait` follows it. Several may run at the same time."""
        self._runs += 1
        name = name or f"local-{self._runs}-{uuid.uuid4().hex[:8]}"
        arn = self._sfn.start_execution(stateMachineArn=self.state_machine_arn, name=name,
                                        input=self.workflow.execution_input(body))["executionArn"]
        self._started.append(arn)
        return arn

    def wait(self, arn: str, *, timeout: float = 600, on_progress: Callable[[str | None, float], None] | None = None,
             poll_seconds: float = 0.05, state_seconds: float = 0.5) -> WorkflowRun:
        """Follow a started execution to its end and return what happened (its own invocations only)."""
        name = arn.rsplit(":", 1)[-1]
        execution_input = self._sfn.describe_execution(executionArn=arn)["input"]
        started = time.monotonic()
        state: str | None = None
        state_at = float("-inf")
        while True:
            described = self._sfn.describe_execution(executionArn=arn)
            elapsed = time.monotonic() - started
            if described["status"] != "RUNNING":
                break
            if elapsed > timeout:
                self._sfn.stop_execution(executionArn=arn, error="LocalTimeout", cause=f"over {timeout} s")
                raise TimeoutError(f"execution {name} still running after {timeout} s")
            if on_progress is not None:
                if elapsed - state_at >= state_seconds:
                    state, state_at = self.current_state(arn), elapsed
                on_progress(state, elapsed)
            time.sleep(poll_seconds)
        history = self.history(arn)
        output = described.get("output")
        mine = [call for call in self.lambdas.invocations
                if isinstance(call.event, dict) and call.event.get("execution_id") == arn]
        return WorkflowRun(execution_arn=arn, status=described["status"], input=execution_input,
                           output=json.loads(output) if output else None, error=described.get("error"),
                           cause=described.get("cause"), seconds=time.monotonic() - started,
                           states=_visits(history), invocations=mine, history=history)

    def history(self, execution_arn: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"executionArn": execution_arn, "maxResults": 1000}
        while True:
            page = self._sfn.get_execution_history(**kwargs)
            events.extend(page["events"])
            if not page.get("nextToken"):
                return events
            kwargs["nextToken"] = page["nextToken"]

    def current_state(self, execution_arn: str) -> str | None:
        visits = _visits(self.history(execution_arn))
        return visits[-1].name if visits else None
