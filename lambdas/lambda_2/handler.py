"""Step 2: load the window's incidents, log entries, notes and alerts (resumable: complete/cursor)."""

import logging

from pagerduty_pipeline import steps

logging.getLogger().setLevel(logging.INFO)


def handler(event, context):
    return steps.load_incidents(event, context)
