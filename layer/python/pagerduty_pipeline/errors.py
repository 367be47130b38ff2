"""Error types that map onto the ``{"success": false, "error": code, "message": ...}`` contract."""

from __future__ import annotations


class PipelineError(Exception):
    """An expected failure with a short machine-readable code and a human message."""

    code = "pipeline_error"

    def __init__(self, message: str, code: str | None = None, **details):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details

    def to_result(self) -> dict:
        out = {"success": False, "error": self.code, "message": self.message}
        out.update({k: v for k, v in self.details.items() if v is not None})
        return out


class ConfigError(PipelineError):
    code = "config_error"


class InputError(PipelineError):
    code = "invalid_input"


class SecretError(PipelineError):
    code = "secret_error"


class DatabaseError(PipelineError):
    code = "db_error"


class PagerDutyError(PipelineError):
    """PagerDuty answered with an error (or could not be reached after the retries)."""

    code = "pagerduty_error"

    def __init__(self, message: str, code: str | None = None, *, status: int | None = None,
                 pd_code: int | None = None, **details):
        super().__init__(message, code, status=status, pagerduty_code=pd_code, **details)
        self.status = status
        self.pd_code = pd_code


class OutOfTime(PipelineError):
    """The step's time budget cannot cover the next request or wait: stop and hand back the cursor."""

    code = "out_of_time"
