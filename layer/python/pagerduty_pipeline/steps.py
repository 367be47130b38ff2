"""The four workflow steps, one module each; the handlers call these with (event, context).

Every step receives the state machine envelope ``{"execution_id", "execution_name", "state_name",
"execution_start_time", "execution_timeout_seconds", "input"}`` and returns a JSON object with ``success`` (bool)
and ``run_id``; failures carry ``error`` (short code) and ``message``.
"""

from .step_error import handle_error
from .step_load import load_incidents
from .step_start import start_run
from .step_validate import validate_run

__all__ = ["start_run", "load_incidents", "validate_run", "handle_error"]
