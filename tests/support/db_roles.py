"""Password logins for the database roles the deployed functions reach with IAM tokens.

A local PostgreSQL cannot check RDS IAM tokens, so locally (tests, `make run`, `DATABASE_URL`, the rehearsal) the
login roles get passwords instead, set by the master user as an administrator would, and each function logs in
with its own role's password from a secret of its own (`DB_AUTH=password`). The migrations create the same roles
on RDS without passwords (there they log in with tokens); when a role exists already, they leave its login alone,
so what the functions can do is exactly what the migrations grant.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import pg8000.native

from pagerduty_pipeline.roles import LOGIN_ROLES  # layer/python is on the path (pytest.ini, tools' sys.path)


class ProvisionError(RuntimeError):
    """The database user given cannot create or change the login roles."""


def provision_logins(conn: Any, users: tuple[str, ...] = LOGIN_ROLES) -> dict[str, str]:
    """Give each login role a new random password (creating the role if it is missing); user -> password.

    `conn` is the master user's connection (CREATEROLE, like the RDS master user)."""
    passwords: dict[str, str] = {}
    for user in users:
        password = "local-" + secrets.token_hex(12)
        exists = conn.run("SELECT 1 FROM pg_roles WHERE rolname = :u", u=user)
        verb = "ALTER" if exists else "CREATE"
        try:
            conn.run(f"{verb} ROLE {pg8000.native.identifier(user)} LOGIN PASSWORD {pg8000.native.literal(password)}")
        except pg8000.native.DatabaseError as exc:
            detail = exc.args[0].get("M") if exc.args and isinstance(exc.args[0], dict) else exc
            raise ProvisionError(f"cannot {verb.lower()} the login role {user}: {detail} (the database user needs "
                                 "CREATEROLE, as the RDS master user has)") from None
        passwords[user] = password
    return passwords


def login_secrets(conn: Any, secrets_client: Any, name_prefix: str,
                  users: tuple[str, ...] = LOGIN_ROLES) -> dict[str, str]:
    """provision_logins, each password kept in a Secrets Manager secret of its own (`<name_prefix><user>`, JSON
    username/password, as the layer's password mode reads it); user -> secret ARN."""
    return {user: secrets_client.create_secret(Name=f"{name_prefix}{user}", SecretString=json.dumps(
        {"username": user, "password": password}))["ARN"] for user, password in provision_logins(conn, users).items()}


def with_password_login(environment: dict[str, str], secrets: dict[str, str], function: str) -> dict[str, str]:
    """A function's variables with an IAM login (DB_AUTH=iam, DB_USER) turned into the same user's password login
    (DB_AUTH=password, DB_SECRET_ARN of that user's secret in `secrets`); other variables as they are."""
    if environment.get("DB_AUTH") != "iam":
        return dict(environment)
    user = environment.get("DB_USER", "")
    if user not in secrets:
        raise ValueError(f"{function}: no local login for database user {user!r}")
    return {**environment, "DB_AUTH": "password", "DB_SECRET_ARN": secrets[user]}
