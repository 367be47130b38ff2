"""DB_AUTH: password (the JSON secret of DB_SECRET_ARN) or iam (DB_USER with an RDS IAM auth token signed locally
by boto3, cached for its life less a margin, never read from Secrets Manager and never logged)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import uuid
from urllib.parse import parse_qsl, quote, urlsplit

import boto3
import pytest
from moto import mock_aws

from pagerduty_pipeline import db_auth, runtime, steps
from pagerduty_pipeline.config import load_config
from pagerduty_pipeline.db import close_quietly
from pagerduty_pipeline.errors import ConfigError, DatabaseError, SecretError
from tests.pipeline.conftest import envelope
from tests.support.postgres import free_port

REGION = "eu-west-2"
HOST = "pipeline.abc123.eu-west-2.rds.amazonaws.com"
IAM_ENV = {"DB_AUTH": "iam", "DB_USER": "pagerduty_loader", "DB_HOST": HOST, "DB_PORT": "5432",
           "DB_NAME": "pagerduty", "DB_SSL": "require", "AWS_REGION": REGION,
           "PAGERDUTY_TOKEN_SECRET_ARN": "arn:aws:secretsmanager:eu-west-2:123456789012:secret:pd"}


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def aws():
    """moto (in-process; signing needs no endpoint) with the fake credentials it puts in the environment."""
    with mock_aws():
        yield


@pytest.fixture(autouse=True)
def fresh_sandbox():
    """The module-level cache is the sandbox's: each test starts cold and leaves nothing behind."""
    db_auth.tokens.clear()
    yield
    db_auth.tokens.clear()


@pytest.fixture
def boto3_clients(monkeypatch):
    """The service names boto3.client was asked for."""
    made: list[str] = []
    real = boto3.client

    def counting(service, *args, **kwargs):
        made.append(service)
        return real(service, *args, **kwargs)

    monkeypatch.setattr(boto3, "client", counting)
    return made


def iam_cfg(**overrides):
    return load_config({**IAM_ENV, **overrides})


def sigv4_signature_ok(token: str, access_key: str, secret_key: str, region: str, service: str = "rds-db") -> bool:
    """Check a presigned URL's SigV4 signature independently of botocore (AWS's documented algorithm)."""
    url = urlsplit("https://" + token)
    params = dict(parse_qsl(url.query, keep_blank_values=True))
    signature = params.pop("X-Amz-Signature")
    enc = lambda s: quote(s, safe="-_.~")  # noqa: E731
    canonical_query = "&".join(f"{enc(k)}={enc(v)}" for k, v in sorted(params.items()))
    canonical = "\n".join(["GET", "/", canonical_query, f"host:{url.netloc}", "", "host",
                           hashlib.sha256(b"").hexdigest()])
    stamp = params["X-Amz-Date"]
    scope = f"{stamp[:8]}/{region}/{service}/aws4_request"
    if params["X-Amz-Credential"] != f"{access_key}/{scope}":
        return False
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret_key).encode()
    for part in (stamp[:8], region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.compare_digest(hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest(), signature)


# -- the token --------------------------------------------------------------------------------------------------

def test_token_is_a_connect_url_presigned_for_rds_db_in_the_region(aws):
    tokens = db_auth.IamTokens()
    user, token = db_auth.credentials(iam_cfg(), tokens)
    assert user == "pagerduty_loader"
    assert token.startswith(f"{HOST}:5432/?Action=connect&DBUser=pagerduty_loader&")
    assert "://" not in token  # RDS wants no scheme
    params = dict(parse_qsl(urlsplit("https://" + token).query))
    assert params["X-Amz-Expires"] == "900" and params["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert params["X-Amz-SignedHeaders"] == "host"
    assert params["X-Amz-Credential"].endswith(f"/{REGION}/rds-db/aws4_request")
    assert params["X-Amz-Security-Token"] == os.environ["AWS_SESSION_TOKEN"]
    key, secret = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
    assert sigv4_signature_ok(token, key, secret, REGION)
    assert not sigv4_signature_ok(token, key, secret + "x", REGION)  # the check itself can fail
    assert not sigv4_signature_ok(token, key, secret, "us-east-1")
    assert tokens.signed == 1


def test_token_region_is_aws_region_else_aws_default_region(aws):
    tokens = db_auth.IamTokens()
    both = {**IAM_ENV, "AWS_REGION": "eu-central-1", "AWS_DEFAULT_REGION": "us-west-2"}
    assert load_config(both).aws_region == "eu-central-1"
    _, token = db_auth.credentials(load_config(both), tokens)
    assert "/eu-central-1/rds-db/aws4_request" in token.replace("%2F", "/")
    default_only = {k: v for k, v in both.items() if k != "AWS_REGION"}
    _, token = db_auth.credentials(load_config(default_only), tokens)
    assert "/us-west-2/rds-db/aws4_request" in token.replace("%2F", "/")


# -- the cache --------------------------------------------------------------------------------------------------

def test_a_warm_sandbox_reuses_the_token_until_its_life_less_the_margin(aws):
    clock = FakeClock()
    tokens = db_auth.IamTokens(clock=clock)
    cfg = iam_cfg()
    _, first = db_auth.credentials(cfg, tokens)
    _, again = db_auth.credentials(cfg, tokens)
    assert again == first and tokens.signed == 1
    last_reuse = db_auth.TOKEN_LIFETIME_SECONDS - db_auth.REFRESH_MARGIN_SECONDS - 0.5
    clock.now += last_reuse
    assert db_auth.credentials(cfg, tokens)[1] == first and tokens.signed == 1
    clock.now += 0.5  # exactly the margin left: a connection might not open in time
    db_auth.credentials(cfg, tokens)
    assert tokens.signed == 2
    clock.now += last_reuse  # the new token's life counts from its own signing
    db_auth.credentials(cfg, tokens)
    assert tokens.signed == 2
    clock.now += 1
    db_auth.credentials(cfg, tokens)
    assert tokens.signed == 3


def test_an_expired_token_is_replaced_with_a_new_signature(aws):
    clock = FakeClock()
    tokens = db_auth.IamTokens(clock=clock)
    cfg = iam_cfg()
    _, first = db_auth.credentials(cfg, tokens)
    clock.now += 3600  # a sandbox idle for an hour
    sign = tokens._client(REGION).generate_db_auth_token
    fresh = []
    tokens._client(REGION).generate_db_auth_token = lambda **kw: fresh.append(kw) or sign(**kw) + "&new"
    _, second = db_auth.credentials(cfg, tokens)
    assert second != first and second.endswith("&new") and tokens.signed == 2
    assert fresh == [{"DBHostname": HOST, "Port": 5432, "DBUsername": "pagerduty_loader", "Region": REGION}]
    assert db_auth.credentials(cfg, tokens)[1] == second and tokens.signed == 2


def test_each_host_port_user_and_region_has_its_own_token(aws):
    tokens = db_auth.IamTokens(clock=FakeClock())
    cfgs = [iam_cfg(), iam_cfg(DB_USER="pagerduty_reader"), iam_cfg(DB_HOST="other.example.internal"),
            iam_cfg(DB_PORT="5433"), iam_cfg(AWS_REGION="us-east-1")]
    got = [db_auth.credentials(cfg, tokens) for cfg in cfgs]
    assert len({token for _, token in got}) == len(cfgs) and tokens.signed == len(cfgs)
    assert [user for user, _ in got] == ["pagerduty_loader", "pagerduty_reader"] + ["pagerduty_loader"] * 3
    assert "DBUser=pagerduty_reader" in got[1][1] and got[2][1].startswith("other.example.internal:5432/")
    assert got[3][1].startswith(f"{HOST}:5433/")
    assert [db_auth.credentials(cfg, tokens) for cfg in cfgs] == got and tokens.signed == len(cfgs)


def test_one_rds_client_per_region_for_the_sandbox(aws, boto3_clients):
    tokens = db_auth.IamTokens(clock=FakeClock())
    for cfg in (iam_cfg(), iam_cfg(DB_USER="other"), iam_cfg(DB_HOST="h2"), iam_cfg(AWS_REGION="us-east-1")):
        db_auth.credentials(cfg, tokens)
    assert boto3_clients == ["rds", "rds"] and tokens.signed == 4


def test_open_db_uses_the_module_cache_of_the_sandbox(aws, monkeypatch):
    """runtime.open_db hands the driver DB_USER and the cached token; a second invocation signs nothing."""
    seen = []
    monkeypatch.setattr(runtime, "connect", lambda cfg, user, password, application_name: seen.append(
        (user, password, application_name)) or "conn")
    cfg = iam_cfg()
    assert runtime.open_db(cfg, "lambda_2") == "conn"
    assert runtime.open_db(cfg, "lambda_2") == "conn"
    assert db_auth.tokens.signed == 1
    token = db_auth.tokens.token(HOST, 5432, "pagerduty_loader", REGION)
    assert seen == [("pagerduty_loader", token, "pagerduty-pipeline:lambda_2")] * 2
    assert token.startswith(f"{HOST}:5432/?Action=connect&DBUser=pagerduty_loader&")


# -- configuration ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change,variable", [
    ({"DB_SSL": "disable"}, "DB_SSL"),
    ({"DB_USER": None}, "DB_USER"),
    ({"DB_USER": "  "}, "DB_USER"),
    ({"AWS_REGION": None}, "AWS_REGION"),
    ({"DB_AUTH": "kerberos"}, "DB_AUTH"),
], ids=["ssl-disable", "no-user", "blank-user", "no-region", "bad-mode"])
def test_iam_configuration_problems_name_the_variable(change, variable):
    env = {k: v for k, v in {**IAM_ENV, **change}.items() if v is not None}
    with pytest.raises(ConfigError) as err:
        load_config(env)
    assert err.value.details["variable"] == variable and variable in err.value.message


def test_iam_configuration_problems_are_step_results(aws):
    r = steps.start_run(envelope({}), env={**IAM_ENV, "DB_SSL": "disable"})
    assert r["success"] is False and r["error"] == "config_error" and r["variable"] == "DB_SSL"
    assert "TLS" in r["message"]


def test_modes_and_what_each_needs():
    password = load_config({k: v for k, v in IAM_ENV.items() if k not in ("DB_AUTH", "DB_USER")} |
                           {"DB_SECRET_ARN": "arn:db"})
    assert (password.db_auth, password.db_user, password.db_secret_arn) == ("password", "", "arn:db")
    with pytest.raises(ConfigError) as err:  # password (the default) still needs the secret
        load_config({k: v for k, v in IAM_ENV.items() if k != "DB_AUTH"})
    assert err.value.details["variable"] == "DB_SECRET_ARN"
    iam = load_config({**IAM_ENV, "DB_AUTH": " IAM "})
    assert (iam.db_auth, iam.db_user, iam.db_secret_arn, iam.aws_region, iam.db_ssl) == \
        ("iam", "pagerduty_loader", "", REGION, "require")
    assert load_config({k: v for k, v in IAM_ENV.items() if k != "DB_SSL"}).db_ssl == "require"  # the default
    local = load_config({**IAM_ENV, "DB_AUTH": "password", "DB_SSL": "disable", "DB_SECRET_ARN": "arn:db"})
    assert local.db_auth == "password" and local.db_user == "pagerduty_loader"


# -- secrets ----------------------------------------------------------------------------------------------------

def test_iam_never_reads_secrets_manager(aws, boto3_clients):
    missing = f"arn:aws:secretsmanager:{REGION}:123456789012:secret:absent-{uuid.uuid4().hex}"
    for env in (IAM_ENV, {**IAM_ENV, "DB_SECRET_ARN": missing}):
        user, token = db_auth.credentials(load_config(env), db_auth.IamTokens())
        assert user == "pagerduty_loader" and "Action=connect" in token
    assert "secretsmanager" not in boto3_clients
    with pytest.raises(SecretError) as err:  # the same secret in password mode: a read would have failed
        db_auth.credentials(load_config({**IAM_ENV, "DB_AUTH": "password", "DB_SECRET_ARN": missing}))
    assert "ResourceNotFoundException" in err.value.message and "secretsmanager" in boto3_clients


def test_password_mode_refuses_a_secret_for_another_user(aws):
    arn = boto3.client("secretsmanager").create_secret(
        Name=f"master-{uuid.uuid4().hex}", SecretString=json.dumps({"username": "postgres",
                                                                    "password": "s3cret-pw"}))["ARN"]
    env = {**IAM_ENV, "DB_AUTH": "password", "DB_SECRET_ARN": arn}
    with pytest.raises(SecretError) as err:
        db_auth.credentials(load_config(env))
    assert err.value.code == "db_user_mismatch" and err.value.details["variable"] == "DB_USER"
    assert "postgres" in err.value.message and "pagerduty_loader" in err.value.message
    assert "s3cret-pw" not in err.value.message
    assert db_auth.credentials(load_config({**env, "DB_USER": "postgres"})) == ("postgres", "s3cret-pw")
    assert db_auth.credentials(load_config({k: v for k, v in env.items() if k != "DB_USER"})) == \
        ("postgres", "s3cret-pw")


def test_password_mode_user_mismatch_is_a_step_result(env, db, server):
    r = steps.start_run(envelope({}), env={**env, "DB_USER": "pagerduty_loader"})
    assert r["success"] is False and r["error"] == "db_user_mismatch" and r["variable"] == "DB_USER"
    assert "DB_SECRET_ARN" in r["message"]


# -- errors never show the token --------------------------------------------------------------------------------

def test_no_aws_credentials_is_a_clear_error_and_the_next_call_retries(monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # no credentials cached by an earlier client
    tokens = db_auth.IamTokens()
    with pytest.raises(DatabaseError) as err:
        db_auth.credentials(iam_cfg(), tokens)
    assert err.value.code == "db_iam_token_error" and "NoCredentialsError" in err.value.message
    assert "pagerduty_loader" in err.value.message and tokens.signed == 0
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDLATER")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "later")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    _, token = db_auth.credentials(iam_cfg(), tokens)
    assert "AKIDLATER" in token and tokens.signed == 1


def test_a_refused_connection_shows_neither_token_nor_secret(aws, caplog):
    caplog.set_level(logging.DEBUG, logger="pagerduty_pipeline")
    env = {**IAM_ENV, "DB_HOST": "127.0.0.1", "DB_PORT": str(free_port())}  # nothing listens there
    r = steps.start_run(envelope({}), env=env)
    token = db_auth.tokens.token("127.0.0.1", int(env["DB_PORT"]), "pagerduty_loader", REGION)
    assert db_auth.tokens.signed == 1  # the step's token, looked up again
    assert r["success"] is False and r["error"] == "db_unavailable", r
    signature = dict(parse_qsl(urlsplit("https://" + token).query))["X-Amz-Signature"]
    for shown in (json.dumps(r), caplog.text):
        assert signature not in shown and "X-Amz-" not in shown
    assert "step_failed" in caplog.text  # the failure was logged, without the token


# -- password mode against the real PostgreSQL ------------------------------------------------------------------

@pytest.mark.parametrize("db_user", [None, "pipeline"], ids=["no-DB_USER", "DB_USER-matches"])
def test_password_mode_connects_through_open_db(pg, secrets_arns, db_user):
    env = {**pg.env(), "DB_SECRET_ARN": secrets_arns["db"], **({"DB_USER": db_user} if db_user else {})}
    cfg = load_config(env, need_pagerduty=False)
    assert cfg.db_auth == "password"
    conn = runtime.open_db(cfg, "lambda_3")
    try:
        rows = conn.run("SELECT current_user, application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()")
    finally:
        close_quietly(conn)
    assert rows == [[pg.user, "pagerduty-pipeline:lambda_3"]]
    assert db_auth.tokens.signed == 0
