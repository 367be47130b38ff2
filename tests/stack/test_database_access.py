"""How the synthesized functions reach the database (issue 13): who logs in as whom, what IAM lets each do, how the
server's certificate is verified, and what a synth refuses (no bundle, an altered bundle, prod without checks)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from modules import ca_bundle
from modules.functions import FUNCTIONS, MIGRATES
from tests.support.synth import ROOT, STAND_IN_CA_BUNDLE, load_stack, run_main, without_metadata
from tests.support.tls import issue_server_cert, new_ca
from tools import rds_ca

Stack = dict[str, Any]
MASTER_SECRET = "${aws_db_instance.database_instance_D7FC2283.master_user_secret[0].secret_arn}"
DBUSER_ARN = ("arn:${data.aws_partition.partition.partition}:rds-db:eu-west-2:"
              "${data.aws_caller_identity.caller.account_id}:dbuser:"
              "${aws_db_instance.database_instance_D7FC2283.resource_id}/")
EXPECTED_LOGIN = {  # folder -> (DB_AUTH, DB_USER): step 1 migrates, so it alone is the master user
    "lambda_1": ("password", None),
    "lambda_2": ("iam", "pagerduty_loader"),
    "lambda_3": ("iam", "pagerduty_loader"),
    "lambda_error_handler": ("iam", "pagerduty_error_recorder"),
}


def functions_of(stack: Stack) -> dict[str, dict[str, Any]]:
    return {fn["function_name"].rsplit("-", 1)[1]: fn for fn in stack["resource"]["aws_lambda_function"].values()}


def policy_of(stack: Stack, folder: str) -> dict[str, Any]:
    (policy,) = [json.loads(p["policy"]) for p in stack["resource"]["aws_iam_role_policy"].values()
                 if p["name"].endswith(f"-{folder}-least-privilege")]
    return policy


def test_function_database_users_are_the_roles_the_migrations_create() -> None:
    sys.path.insert(0, str(ROOT / "layer" / "python"))
    try:
        from pagerduty_pipeline import roles
    finally:
        sys.path.remove(str(ROOT / "layer" / "python"))
    users = {spec.folder: spec.database_user for spec in FUNCTIONS}
    assert users == {folder: user for folder, (_, user) in EXPECTED_LOGIN.items()}
    assert users["lambda_1"] is MIGRATES
    assert {users["lambda_2"], users["lambda_error_handler"]} == {roles.LOADER, roles.ERROR_RECORDER}


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_each_function_logs_in_as_its_own_user_and_verifies_the_server(stacks: dict[str, Stack], env: str) -> None:
    for folder, fn in functions_of(stacks[env]).items():
        variables = fn["environment"]["variables"]
        auth, user = EXPECTED_LOGIN[folder]
        assert variables["DB_AUTH"] == auth and variables.get("DB_USER") == user, folder
        # only the migrating function is even told where the master secret is
        assert (variables.get("DB_SECRET_ARN") == MASTER_SECRET) is (folder == "lambda_1")
        assert ("DB_SECRET_ARN" in variables) is (folder == "lambda_1")
        assert variables["DB_SSL"] == "verify-full"
        assert variables["DB_SSL_ROOT_CERT"] == "/opt/rds-ca/rds-ca-bundle.pem" == ca_bundle.FUNCTION_PATH


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_only_step_one_reads_the_master_secret_and_each_connects_as_exactly_its_user(
        stacks: dict[str, Stack], env: str) -> None:
    seen_secret, seen_connect = [], {}
    for folder in EXPECTED_LOGIN:
        statements = policy_of(stacks[env], folder)["Statement"]
        for statement in statements:
            if MASTER_SECRET in statement["Resource"]:
                seen_secret.append(folder)
                assert statement["Action"] == ["secretsmanager:GetSecretValue"]
            if any(action.startswith("rds-db:") or action.startswith("rds:") for action in statement["Action"]):
                assert statement["Action"] == ["rds-db:connect"] and statement["Effect"] == "Allow"
                seen_connect[folder] = statement["Resource"]
    assert seen_secret == ["lambda_1"]
    assert seen_connect == {folder: [DBUSER_ARN + user] for folder, (_, user) in EXPECTED_LOGIN.items() if user}
    # the DbiResourceId (stable across renames), never the identifier, and never a wildcard user
    assert all("*" not in arn for arns in seen_connect.values() for arn in arns)


def test_iam_auth_failures_are_exported_to_cloudwatch(stacks: dict[str, Stack]) -> None:
    (instance,) = stacks["dev"]["resource"]["aws_db_instance"].values()
    assert instance["iam_database_authentication_enabled"] is True
    assert "iam-db-auth-error" in instance["enabled_cloudwatch_logs_exports"]
    groups = {group["name"] for group in stacks["dev"]["resource"]["aws_cloudwatch_log_group"].values()}
    assert "/aws/rds/instance/stepfuncproject-dev-postgres/iam-db-auth-error" in groups


def test_the_layer_carries_the_bundle_the_synth_checked(stacks: dict[str, Stack], synth_dir: Path) -> None:
    (layer,) = stacks["dev"]["resource"]["aws_lambda_layer_version"].values()
    with zipfile.ZipFile(synth_dir / "stacks" / "stepfuncproject-dev" / layer["filename"]) as archive:
        packed = archive.read(ca_bundle.ARCHIVE_NAME)
    assert packed == STAND_IN_CA_BUNDLE.read_bytes()
    assert ca_bundle.load(STAND_IN_CA_BUNDLE).stand_in  # tests pack our stand-in, never a fetched bundle


# --- what a synth refuses -----------------------------------------------------------------------------------

def test_synth_without_the_bundle_stops_and_writes_nothing(tmp_path: Path) -> None:
    outdir = tmp_path / "out"
    completed = run_main("--outdir", str(outdir), env={ca_bundle.BUNDLE_VARIABLE: str(tmp_path / "missing.pem")})
    assert completed.returncode == 2
    assert "RDS CA bundle" in completed.stderr and "make rds-ca" in completed.stderr
    assert not outdir.exists()


def test_synth_with_an_altered_bundle_stops(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    shutil.copyfile(STAND_IN_CA_BUNDLE, bundle)
    shutil.copyfile(ca_bundle.pin_path(STAND_IN_CA_BUNDLE), ca_bundle.pin_path(bundle))
    bundle.write_bytes(bundle.read_bytes() + b"\n")  # one byte more than what was pinned
    completed = run_main("--outdir", str(tmp_path / "out"), env={ca_bundle.BUNDLE_VARIABLE: str(bundle)})
    assert completed.returncode == 2 and "does not match its pin" in completed.stderr
    assert not (tmp_path / "out").exists()


def test_a_production_synth_without_verification_fails_with_a_message(tmp_path: Path) -> None:
    settings = tmp_path / "environments.json"
    settings.write_text(json.dumps({"prod": {"database": {"tls": "require"}}}))
    completed = run_main("--outdir", str(tmp_path / "out"), "--settings", str(settings))
    assert completed.returncode == 2
    assert "without checking the database's certificate" in completed.stderr and "verify-full" in completed.stderr
    assert not (tmp_path / "out").exists()


def test_an_unverified_dev_deploy_is_a_choice_that_needs_no_bundle(tmp_path: Path) -> None:
    settings = tmp_path / "environments.json"
    settings.write_text(json.dumps({"dev": {"database": {"tls": "require"}}}))
    outdir = tmp_path / "out"
    completed = run_main("--outdir", str(outdir), "--settings", str(settings),
                         env={ca_bundle.BUNDLE_VARIABLE: str(tmp_path / "missing.pem")})
    assert completed.returncode == 0, completed.stderr
    stack = without_metadata(load_stack(outdir, "stepfuncproject-dev"))
    for fn in functions_of(stack).values():
        assert fn["environment"]["variables"]["DB_SSL"] == "require"
        assert "DB_SSL_ROOT_CERT" not in fn["environment"]["variables"]


# --- tools/rds_ca.py: fetching and pinning AWS's bundle --------------------------------------------------------

def test_fetch_writes_the_bundle_and_its_pin_and_refuses_a_changed_one(tmp_path: Path) -> None:
    first, second = tmp_path / "first.pem", tmp_path / "second.pem"
    first.write_bytes(new_ca("Amazon RDS eu-west-2 Root CA RSA2048 G1 (look-alike)").cert_pem)
    second.write_bytes(first.read_bytes() + new_ca("Amazon RDS eu-west-2 Root CA ECC384 G1 (look-alike)").cert_pem)
    target = tmp_path / "certs" / "rds-ca-bundle.pem"
    lines: list[str] = []
    assert rds_ca.fetch(target, first.read_bytes(), source="first", accept_new=False, out=lines.append) == 0
    assert ca_bundle.load(target).sha256 == ca_bundle.sha256_of(first.read_bytes())
    assert rds_ca.fetch(target, second.read_bytes(), source="second", accept_new=False, out=lines.append) == 1
    assert target.read_bytes() == first.read_bytes()  # refused: nothing changed
    assert any("refused" in line for line in lines)
    assert rds_ca.fetch(target, second.read_bytes(), source="second", accept_new=True, out=lines.append) == 0
    assert ca_bundle.load(target).sha256 == ca_bundle.sha256_of(second.read_bytes())


def test_fetch_refuses_what_is_not_a_ca_bundle(tmp_path: Path) -> None:
    target = tmp_path / "rds-ca-bundle.pem"
    with pytest.raises(ca_bundle.CaBundleError, match="not a PEM bundle|no CA certificate"):
        rds_ca.fetch(target, b"<html>captive portal</html>", source="portal", accept_new=False, out=lambda _: None)
    with pytest.raises(ca_bundle.CaBundleError, match="stand-in"):
        rds_ca.fetch(target, STAND_IN_CA_BUNDLE.read_bytes(), source="x", accept_new=False, out=lambda _: None)
    assert not target.exists()


def test_deployable_check_refuses_the_stand_in() -> None:
    assert rds_ca.check(STAND_IN_CA_BUNDLE, deployable=False, out=lambda _: None) == 0
    with pytest.raises(ca_bundle.CaBundleError, match="stand-in"):
        rds_ca.check(STAND_IN_CA_BUNDLE, deployable=True, out=lambda _: None)


@pytest.fixture
def https_server(tmp_path: Path):
    """A local HTTPS server (a certificate for 127.0.0.1 from a CA of its own) answering every GET with
    `server.body`; yields (server, that CA's file)."""
    import http.server
    import ssl
    import threading

    ca = new_ca("download test CA")
    cert = issue_server_cert(ca)
    cert.write(tmp_path / "server.pem", tmp_path / "server.key")
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(server.body)))
            self.end_headers()
            self.wfile.write(server.body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.body = b""  # type: ignore[attr-defined]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, str(tmp_path / "ca.pem")
    finally:
        server.shutdown()
        server.server_close()


def test_download_verifies_the_server_and_bounds_the_size(https_server: tuple[Any, str]) -> None:
    server, ca_file = https_server
    url = f"https://127.0.0.1:{server.server_address[1]}/global/global-bundle.pem"
    server.body = new_ca("Amazon RDS look-alike Root CA").cert_pem
    assert rds_ca.download(url, timeout=10, cafile=ca_file) == server.body
    with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):  # a server the public trust store doesn't know
        rds_ca.download(url, timeout=10)
    server.body = b"x" * (rds_ca.MAX_BYTES + 1)
    with pytest.raises(ca_bundle.CaBundleError, match="more than"):
        rds_ca.download(url, timeout=10, cafile=ca_file)


def test_fetch_command_reports_a_failed_download_and_writes_nothing(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "rds-ca-bundle.pem"
    os.environ[ca_bundle.BUNDLE_VARIABLE], saved = str(target), os.environ[ca_bundle.BUNDLE_VARIABLE]
    try:
        assert rds_ca.main(["fetch", "--url", "https://127.0.0.1:9/global-bundle.pem"]) == 1
        assert rds_ca.main(["fetch", "--url", "http://example.com/bundle.pem"]) == 1
    finally:
        os.environ[ca_bundle.BUNDLE_VARIABLE] = saved
    err = capsys.readouterr().err
    assert "cannot download https://127.0.0.1:9/global-bundle.pem" in err and "--url must be https" in err
    assert not target.exists() and not ca_bundle.pin_path(target).exists()
