"""Step 3: data checks into validation_results; on success mark the run succeeded, advance the watermark."""

import logging

from pagerduty_pipeline import steps

logging.getLogger().setLevel(logging.INFO)


def handler(event, context):
    return steps.validate_run(event, context)
