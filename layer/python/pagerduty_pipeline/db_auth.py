"""Database credentials by ``DB_AUTH``.

``password``: user and password from the JSON secret named by ``DB_SECRET_ARN`` (deployed: the migrating step with
the RDS master secret; locally: every step, with a secret holding its own role's password).

``iam``: user ``DB_USER``, password an RDS IAM auth token: a SigV4 presigned URL
``host:port/?Action=connect&DBUser=...&X-Amz-Expires=900&...`` for the service ``rds-db``, signed locally with the
function's role credentials (no network call, no secret read). RDS checks the token once, when the connection
opens; an open session outlives the token.

Tokens are valid for 15 minutes. A warm sandbox reuses one per (host, port, user, region) while more than
``REFRESH_MARGIN_SECONDS`` of its life is left. The margin only has to cover the time between handing the token out
and the server checking it: the TCP connect, TLS handshake and startup message, which ``db.connect`` bounds with its
30 s timeout. 60 s is that plus as much again for the clock the expiry is measured by (read before signing, so
the recorded expiry is never later than the token's) and a slow first packet. It costs one signature (a few
hundred microseconds of local HMACs) every 14 minutes of a sandbox's life.

Never log or return the token: it is a password for its 15 minutes.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from . import aws_secrets
from .config import Config
from .errors import DatabaseError, SecretError

__all__ = ["credentials", "IamTokens", "TOKEN_LIFETIME_SECONDS", "REFRESH_MARGIN_SECONDS", "tokens"]

TOKEN_LIFETIME_SECONDS = 900  # botocore's generate_db_auth_token signs X-Amz-Expires=900: RDS's maximum
REFRESH_MARGIN_SECONDS = 60


class IamTokens:
    """RDS IAM auth tokens, signed once and reused while they have more than ``margin`` seconds left; one boto3
    RDS client per region (created on first use). ``clock`` gives seconds (``time.time``); tests inject theirs.
    ``signed`` counts the tokens signed."""

    def __init__(self, clock: Callable[[], float] = time.time, margin: float = REFRESH_MARGIN_SECONDS,
                 lifetime: float = TOKEN_LIFETIME_SECONDS) -> None:
        if not 0 <= margin < lifetime:
            raise ValueError("margin must be at least 0 and less than the token's lifetime")
        self._clock = clock
        self._margin = margin
        self._lifetime = lifetime
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, int, str, str], tuple[str, float]] = {}  # key -> (token, expires at)
        self._clients: dict[str, object] = {}  # region -> boto3 RDS client
        self.signed = 0

    def token(self, host: str, port: int, user: str, region: str) -> str:
        key = (host, port, user, region)
        with self._lock:
            now = self._clock()
            cached = self._tokens.get(key)
            if cached is not None and cached[1] - now > self._margin:
                return cached[0]
            token = self._sign(host, port, user, region)
            self.signed += 1
            self._tokens[key] = (token, now + self._lifetime)  # `now` was read before signing: never too late
            return token

    def clear(self) -> None:
        """Forget tokens and clients and restart the count (a new sandbox, as far as this cache knows)."""
        with self._lock:
            self._tokens.clear()
            self._clients.clear()
            self.signed = 0

    def _client(self, region: str):
        client = self._clients.get(region)
        if client is None:
            import boto3  # in the Lambda runtime, not in the layer

            client = boto3.client("rds", region_name=region)
            self._clients[region] = client
        return client

    def _sign(self, host: str, port: int, user: str, region: str) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        where = f"DB_USER {user!r} at {host}:{port} (region {region})"
        try:
            token = self._client(region).generate_db_auth_token(DBHostname=host, Port=port, DBUsername=user,
                                                                 Region=region)
        except (BotoCoreError, ClientError) as exc:
            # e.g. NoCredentialsError: the client is dropped so that the next call looks for credentials again
            self._clients.pop(region, None)
            raise DatabaseError(f"cannot sign an IAM database auth token for {where}: {type(exc).__name__}: {exc}",
                                "db_iam_token_error", variable="DB_AUTH") from None
        if not isinstance(token, str) or not token:
            raise DatabaseError(f"cannot sign an IAM database auth token for {where}: empty token",
                                "db_iam_token_error", variable="DB_AUTH")
        return token


tokens = IamTokens()  # the sandbox's cache: module state survives between invocations of a warm Lambda


def credentials(cfg: Config, iam_tokens: IamTokens | None = None) -> tuple[str, str]:
    """``(user, password)`` to log in with, by ``cfg.db_auth``."""
    if cfg.db_auth == "iam":
        return cfg.db_user, (iam_tokens or tokens).token(cfg.db_host, cfg.db_port, cfg.db_user, cfg.aws_region)
    if cfg.db_auth != "password":
        raise ValueError(f"unknown db_auth {cfg.db_auth!r}")  # load_config admits only the two
    user, password = aws_secrets.get_db_credentials(cfg.db_secret_arn)
    if cfg.db_user and user != cfg.db_user:
        raise SecretError(f"secret named by DB_SECRET_ARN is for user {user!r}, but DB_USER is {cfg.db_user!r}",
                          "db_user_mismatch", variable="DB_USER")
    return user, password
