"""TLS between the functions and PostgreSQL, against the real throwaway server (which, like RDS with
rds.force_ssl=1, serves TLS and refuses TCP connections without it) and, for what a real server cannot easily
show (an expired certificate, a server without TLS), a stand-in that answers PostgreSQL's SSLRequest itself.

The layer's `connect` must say `db_tls`, naming TLS and what to check, whenever TLS is what failed."""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pg8000.native
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from pagerduty_pipeline.config import load_config
from pagerduty_pipeline.db import connect
from pagerduty_pipeline.errors import DatabaseError
from tests.support.lambda_runtime import Database
from tests.support.postgres import SERVER_DNS_NAMES, throwaway_postgres
from tests.support.tls import (
    STANDIN_CA_CERT, STANDIN_CA_KEY, STANDIN_CA_NAME, issue_server_cert, load_ca, new_ca,
)

UTC = timezone.utc
IS_TLS = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


def config_for(pg, **overrides: str | None):
    """The layer's Config for the instance's environment (DB_SSL=verify-full with its CA), with overrides
    (None removes a variable)."""
    env = {**pg.env(), "DB_SECRET_ARN": "arn:aws:secretsmanager:eu-west-2:123456789012:secret:unused"}
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return load_config(env, need_pagerduty=False)


def refusal(cfg, user: str = "pipeline", password: str = "unused") -> DatabaseError:
    with pytest.raises(DatabaseError) as caught:
        conn = connect(cfg, user, password, timeout=10)
        conn.close()  # not reached when the test passes
    return caught.value


def test_verify_full_with_the_right_ca_connects_over_tls(pg):
    cfg = config_for(pg)
    assert cfg.db_ssl == "verify-full" and cfg.db_ssl_root_cert == pg.ca_file
    conn = connect(cfg, pg.user, pg.password)
    try:
        assert conn.run(IS_TLS) == [[True]]
    finally:
        conn.close()
    for helper in (pg.connect(), pg.admin_connect()):  # what the other tests use: verified TLS too
        try:
            assert helper.run(IS_TLS) == [[True]]
        finally:
            helper.close()


def test_a_certificate_of_another_ca_is_refused(pg):
    assert Path(pg.ca_file).read_bytes() != STANDIN_CA_CERT.read_bytes()  # the instance has a CA of its own
    error = refusal(config_for(pg, DB_SSL_ROOT_CERT=str(STANDIN_CA_CERT)), pg.user, pg.password)
    assert error.code == "db_tls", error.message
    assert "TLS" in error.message and "DB_SSL_ROOT_CERT" in error.message and str(STANDIN_CA_CERT) in error.message
    assert f"{pg.host}:{pg.port}" in error.message
    assert "unable to get local issuer certificate" in error.message


def test_a_host_name_the_certificate_does_not_name_is_refused(pg):
    assert "localhost" not in pg.server_names and socket.gethostbyname("localhost") == pg.host
    # localhost reaches the server: without host name checks (require) the connection works ...
    conn = connect(config_for(pg, DB_HOST="localhost", DB_SSL="require"), pg.user, pg.password)
    conn.close()
    # ... and verify-full refuses it for the name alone
    error = refusal(config_for(pg, DB_HOST="localhost"), pg.user, pg.password)
    assert error.code == "db_tls", error.message
    assert "TLS host name mismatch" in error.message and "'localhost'" in error.message
    assert "DB_HOST" in error.message


def test_the_server_rejects_connections_without_tls(pg):
    with pytest.raises(pg8000.native.DatabaseError) as caught:  # the server's answer, pg_hba.conf's hostnossl
        pg.connect(ssl_context=False).close()
    fields = caught.value.args[0]
    assert fields["C"] == "28000" and "no encryption" in fields["M"], fields
    with pytest.raises(pg8000.native.DatabaseError):
        pg.connect(user=pg.superuser, password=pg.superuser_password, ssl_context=False).close()
    error = refusal(config_for(pg, DB_SSL="disable", DB_SSL_ROOT_CERT=None), pg.user, pg.password)
    assert error.code == "db_tls", error.message
    assert "only over TLS" in error.message and "DB_SSL=disable" in error.message


def test_require_still_connects_encrypted(pg):
    cfg = config_for(pg, DB_SSL="require", DB_SSL_ROOT_CERT=None)
    assert cfg.db_ssl == "require" and cfg.db_ssl_root_cert is None
    conn = connect(cfg, pg.user, pg.password)
    try:
        assert conn.run(IS_TLS) == [[True]]
    finally:
        conn.close()


def test_the_stand_in_ca_issues_a_certificate_its_bundle_verifies():
    with throwaway_postgres(ca=(STANDIN_CA_CERT, STANDIN_CA_KEY)) as pg:
        assert pg.ca_file == str(STANDIN_CA_CERT.resolve())
        assert pg.env()["DB_SSL_ROOT_CERT"] == str(STANDIN_CA_CERT.resolve())
        conn = connect(config_for(pg), pg.user, pg.password)
        try:
            assert conn.run(IS_TLS) == [[True]]
            served = x509.load_der_x509_certificate(conn._usock.getpeercert(binary_form=True))
        finally:
            conn.close()
        # the stand-in issued it (not a CA of the instance), for the names of the instance
        assert served.issuer == load_ca(STANDIN_CA_CERT, STANDIN_CA_KEY).cert.subject
        names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert {str(n.value) for n in names} == set(pg.server_names)


def test_the_committed_stand_in_ca():
    ca = load_ca(STANDIN_CA_CERT, STANDIN_CA_KEY)  # the key is the certificate's
    assert ca.common_name == STANDIN_CA_NAME and "stand-in" in ca.common_name and "tests only" in ca.common_name
    assert ca.cert.not_valid_before_utc == datetime(2026, 1, 1, tzinfo=UTC)
    assert ca.cert.not_valid_after_utc == datetime(2126, 1, 1, tzinfo=UTC)
    assert isinstance(ca.key, ec.EllipticCurvePrivateKey) and ca.key.curve.name == "secp256r1"
    assert ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    pin = STANDIN_CA_CERT.with_name(STANDIN_CA_CERT.name + ".sha256").read_text().split()[0]
    assert pin == hashlib.sha256(STANDIN_CA_CERT.read_bytes()).hexdigest()


def test_database_helper_verifies_like_the_layer(pg):
    db = Database.of(pg)
    assert (db.ssl, db.root_cert) == ("verify-full", pg.ca_file)
    assert Database.from_url(pg.url) == db
    conn = db.connect()
    try:
        assert conn.run(IS_TLS) == [[True]]
    finally:
        conn.close()
    with pytest.raises(ssl.SSLCertVerificationError):
        Database(db.host, db.port, db.dbname, db.username, db.password, "verify-full",
                 str(STANDIN_CA_CERT)).connect()
    with pytest.raises(ValueError, match="sslrootcert"):
        Database.from_url(pg.url.split("?")[0] + "?sslmode=verify-full")


# -- a stand-in server: answers the SSLRequest, then does only the TLS handshake --------------------------------
@contextmanager
def tls_front(answer: bytes, cert_file: Path | None = None, key_file: Path | None = None) -> Iterator[int]:
    """A TCP server on 127.0.0.1 that answers PostgreSQL's SSLRequest with `answer` (b"S": then a TLS handshake
    with this certificate; b"N": no TLS) and closes. Yields its port."""
    context = None
    if cert_file is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                with suppress(OSError):
                    conn.recv(8)  # Int32 length 8, Int32 80877103
                    conn.sendall(answer)
                    if answer == b"S" and context is not None:
                        with context.wrap_socket(conn, server_side=True):
                            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_an_expired_certificate_is_refused(tmp_path, pg):
    ca = new_ca()
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    now = datetime.now(UTC)
    expired = issue_server_cert(ca, dns_names=SERVER_DNS_NAMES, not_before=now - timedelta(days=30),
                                not_after=now - timedelta(days=1))
    expired.write(tmp_path / "server.crt", tmp_path / "server.key")
    with tls_front(b"S", tmp_path / "server.crt", tmp_path / "server.key") as port:
        error = refusal(config_for(pg, DB_PORT=str(port), DB_SSL_ROOT_CERT=str(tmp_path / "ca.pem")))
    assert error.code == "db_tls", error.message
    assert "certificate has expired" in error.message and "DB_SSL_ROOT_CERT" in error.message
    assert f"127.0.0.1:{port}" in error.message


def test_an_ip_address_the_certificate_does_not_name_is_refused(tmp_path, pg):
    ca = new_ca()
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    issue_server_cert(ca, dns_names=SERVER_DNS_NAMES, ip_addresses=()).write(tmp_path / "s.crt", tmp_path / "s.key")
    with tls_front(b"S", tmp_path / "s.crt", tmp_path / "s.key") as port:
        error = refusal(config_for(pg, DB_PORT=str(port), DB_SSL_ROOT_CERT=str(tmp_path / "ca.pem")))
    assert error.code == "db_tls", error.message
    assert "TLS host name mismatch" in error.message and "'127.0.0.1'" in error.message


@pytest.mark.parametrize("mode", ["verify-full", "require"])
def test_a_server_without_tls_is_refused(pg, mode):
    with tls_front(b"N") as port:
        overrides = {"DB_PORT": str(port), "DB_SSL": mode}
        if mode == "require":
            overrides["DB_SSL_ROOT_CERT"] = None
        error = refusal(config_for(pg, **overrides))
    assert error.code == "db_tls", error.message
    assert "does not offer TLS" in error.message and f"DB_SSL={mode}" in error.message
    assert f"127.0.0.1:{port}" in error.message


def test_a_closed_port_is_still_unavailable_not_tls(pg):
    with socket.create_server(("127.0.0.1", 0)) as held:
        port = held.getsockname()[1]
    error = refusal(config_for(pg, DB_PORT=str(port)))
    assert error.code == "db_unavailable", error.message
