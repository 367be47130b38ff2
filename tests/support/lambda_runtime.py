"""Serve moto's Lambda invocations in-process with the real handlers, and make retry waits instant.

moto (with `lambda.use_docker` off) sends every Invoke to `LambdaSimpleBackend.invoke`; `InProcessLambdas`
replaces it for the duration of a `with` block and routes each call, by function name or ARN, to the
registered handler module, with that function's environment variables applied and a Lambda-like
context. A handler exception becomes an `Unhandled` function error shaped like AWS's; queued faults
raise Lambda service errors (e.g. throttling) before the handler runs, so Retry policies see them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
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


@dataclass
class _Function:
    handler: Handler
    environment: dict[str, str]
    timeout_seconds: float


def function_name_of(name_or_arn: str) -> str:
    """`arn:aws:lambda:region:account:function:NAME[:qualifier]` or NAME -> NAME."""
    return name_or_arn.split(":")[6] if name_or_arn.startswith("arn:") else name_or_arn


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
            with mock.patch.dict(os.environ, function.environment):
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
