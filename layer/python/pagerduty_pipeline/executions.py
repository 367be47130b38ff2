"""The status of a Step Functions execution, for reconciling a run whose execution ended without a Catch."""

from __future__ import annotations

import logging

log = logging.getLogger("pagerduty_pipeline")


def execution_status(execution_id: str) -> str | None:
    """RUNNING, SUCCEEDED, FAILED, TIMED_OUT or ABORTED; None when it cannot be read (a local id, no permission,
    no endpoint): the caller then falls back on the run's deadline."""
    if not execution_id.startswith("arn:") or ":execution:" not in execution_id:
        return None
    import boto3  # in the Lambda runtime, not in the layer
    from botocore.config import Config as BotoConfig
    from botocore.exceptions import BotoCoreError, ClientError

    region = execution_id.split(":")[3]
    client = boto3.client("stepfunctions", region_name=region, config=BotoConfig(
        connect_timeout=5, read_timeout=10, retries={"max_attempts": 2, "mode": "standard"}))
    try:
        return client.describe_execution(executionArn=execution_id)["status"]
    except (BotoCoreError, ClientError) as exc:
        log.warning("cannot read the status of %s: %s", execution_id, exc)
        return None
