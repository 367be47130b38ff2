"""Error handler: mark the run failed (best effort) and return the Fail state's error/message."""

import logging

from pagerduty_pipeline import steps

logging.getLogger().setLevel(logging.INFO)


def handler(event, context):
    return steps.handle_error(event, context)
