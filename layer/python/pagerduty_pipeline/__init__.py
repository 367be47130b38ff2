"""Shared runtime of the PagerDuty -> PostgreSQL pipeline (Lambda layer package).

Handlers stay thin: ``from pagerduty_pipeline import steps; steps.start_run(event, context)`` etc.
See docs/pipeline.md for the contract.
"""

__version__ = "1.0.0"
