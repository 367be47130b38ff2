"""Step 1: validate input, migrate the schema, open the run, load reference data, count incidents."""

import logging

from pagerduty_pipeline import steps

logging.getLogger().setLevel(logging.INFO)


def handler(event, context):
    return steps.start_run(event, context)
