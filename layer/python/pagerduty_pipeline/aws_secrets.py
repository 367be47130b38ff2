"""Secrets Manager access (boto3 at run time: AWS_ENDPOINT_URL lets an emulator answer)."""

from __future__ import annotations

import json

from .errors import SecretError


def _get_secret_string(arn: str, variable: str) -> str:
    import boto3  # in the Lambda runtime, not in the layer
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        resp = boto3.client("secretsmanager").get_secret_value(SecretId=arn)
    except ClientError as exc:
        err = exc.response.get("Error", {})
        raise SecretError(f"cannot read secret named by {variable}: {err.get('Code')}: {err.get('Message')}",
                          variable=variable) from None
    except BotoCoreError as exc:
        raise SecretError(f"cannot read secret named by {variable}: {exc}", variable=variable) from None
    value = resp.get("SecretString")
    if value is None:
        raise SecretError(f"secret named by {variable} has no SecretString", variable=variable)
    return value


def get_db_credentials(arn: str) -> tuple[str, str]:
    raw = _get_secret_string(arn, "DB_SECRET_ARN")
    try:
        data = json.loads(raw)
    except ValueError:
        raise SecretError("secret named by DB_SECRET_ARN is not JSON", variable="DB_SECRET_ARN") from None
    if not isinstance(data, dict) or not isinstance(data.get("username"), str) or \
            not isinstance(data.get("password"), str):
        raise SecretError("secret named by DB_SECRET_ARN must be JSON with string 'username' and 'password'",
                          variable="DB_SECRET_ARN")
    return data["username"], data["password"]


def get_pagerduty_token(arn: str) -> str:
    raw = _get_secret_string(arn, "PAGERDUTY_TOKEN_SECRET_ARN").strip()
    token = raw
    if raw.startswith("{"):
        try:
            data = json.loads(raw)
        except ValueError:
            raise SecretError("secret named by PAGERDUTY_TOKEN_SECRET_ARN looks like JSON but does not parse",
                              variable="PAGERDUTY_TOKEN_SECRET_ARN") from None
        token = data.get("token") if isinstance(data, dict) else None
        if not isinstance(token, str):
            raise SecretError("secret named by PAGERDUTY_TOKEN_SECRET_ARN must be a token string or "
                              "JSON {\"token\": ...}", variable="PAGERDUTY_TOKEN_SECRET_ARN")
        token = token.strip()
    if not token:
        raise SecretError("secret named by PAGERDUTY_TOKEN_SECRET_ARN is empty", variable="PAGERDUTY_TOKEN_SECRET_ARN")
    return token
