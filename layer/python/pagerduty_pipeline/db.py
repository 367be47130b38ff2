"""PostgreSQL connection (pg8000, pure Python) and transaction helper."""

from __future__ import annotations

import contextlib
import socket
import ssl
from typing import Literal

import pg8000.native
from pg8000.exceptions import Error as PgError, InterfaceError as PgInterfaceError

from .config import Config
from .errors import DatabaseError

__all__ = ["connect", "transaction", "PgError", "DB_FAILURES", "ssl_context_for", "describe_db_error",
           "describe_tls_failure"]

# What a lost or failing database raises: pg8000's errors, and socket errors it lets through unwrapped
# (a connection reset while it reads a reply arrives as a bare ConnectionResetError).
DB_FAILURES = (PgError, OSError)
# OpenSSL's verify codes for a certificate that is fine but issued for another name (X509_V_ERR_HOSTNAME_MISMATCH,
# X509_V_ERR_IP_ADDRESS_MISMATCH); every other code is a chain that does not verify (other CA, expired, ...).
_NAME_MISMATCH = (62, 64)
# pg8000's message when the server answers the SSLRequest with "N" (and a context was given).
_SERVER_REFUSES_TLS = "Server refuses SSL"


def ssl_context_for(mode: str, root_cert: str | None) -> ssl.SSLContext | Literal[False]:
    """pg8000's `ssl_context` for DB_SSL: verify-full (chain to root_cert and host name), require (encrypt without
    verifying: local use only, it does not stop a man in the middle), or False for disable (no TLS at all; pg8000
    takes None as "try TLS without verifying, and fall back to plain text", which is no mode of ours)."""
    if mode == "disable":
        return False
    if mode == "verify-full":
        return ssl.create_default_context(cafile=root_cert)
    ctx = ssl.create_default_context()  # require: encrypt, do not verify (like libpq sslmode=require)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def connect(cfg: Config, user: str, password: str, application_name: str = "pagerduty-pipeline",
            timeout: float = 30.0) -> pg8000.native.Connection:
    """A connection with cfg's TLS mode. DatabaseError `db_tls` when TLS is what fails (the certificate does not
    verify against DB_SSL_ROOT_CERT, it names another host, the server offers no TLS or requires it); else
    `db_unavailable`."""
    try:
        conn = pg8000.native.Connection(
            user=user, password=password, host=cfg.db_host, port=cfg.db_port, database=cfg.db_name,
            ssl_context=ssl_context_for(cfg.db_ssl, cfg.db_ssl_root_cert), timeout=timeout,
            application_name=application_name,
        )
    except DB_FAILURES as exc:
        tls_problem = describe_tls_failure(cfg, exc)
        if tls_problem:
            raise DatabaseError(tls_problem, "db_tls") from None
        raise DatabaseError(f"cannot connect to PostgreSQL at {cfg.db_host}:{cfg.db_port}/{cfg.db_name}: "
                            f"{describe_db_error(exc)}", "db_unavailable") from None
    _nodelay(conn)
    conn.run("SET TIME ZONE 'UTC'")
    return conn


def describe_tls_failure(cfg: Config, exc: BaseException) -> str | None:
    """The message for a connection attempt that failed because of TLS, or None when something else failed.

    What pg8000 1.31 lets through (found by trying against PostgreSQL 15): the handshake's
    ssl.SSLCertVerificationError unwrapped (verify_code 62/64 for a name mismatch, others for the chain: 20 unknown
    CA, 10 expired, ...); other ssl.SSLError of the handshake unwrapped; InterfaceError("Server refuses SSL") when
    the server does not do TLS; and, without TLS, the server's own refusal (SQLSTATE 28000, "... no encryption")
    when its pg_hba.conf requires TLS, like RDS with rds.force_ssl=1."""
    where = f"PostgreSQL at {cfg.db_host}:{cfg.db_port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or str(exc)
        if exc.verify_code in _NAME_MISMATCH or "mismatch" in reason.lower():
            return (f"TLS host name mismatch: the certificate of {where} is not valid for the host name "
                    f"{cfg.db_host!r} (DB_HOST): {reason}. Connect by a name the certificate was issued for "
                    "(on RDS the instance endpoint's address, not an alias or an IP address)")
        return (f"TLS: the certificate of {where} does not verify against DB_SSL_ROOT_CERT "
                f"({cfg.db_ssl_root_cert}): {reason}. DB_SSL_ROOT_CERT must be the CA bundle of the server "
                "(for RDS, AWS's current RDS CA bundle)")
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return None  # the connection was closed under us: the network or the server, not TLS settings
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake with {where} failed (DB_SSL={cfg.db_ssl}): {exc}"
    if isinstance(exc, PgInterfaceError) and _SERVER_REFUSES_TLS in str(exc):
        return (f"TLS: {where} does not offer TLS, and DB_SSL={cfg.db_ssl} requires it: the server is not "
                "the one expected, or is set up without ssl")
    if cfg.db_ssl == "disable" and exc.args and isinstance(exc.args[0], dict):
        fields = exc.args[0]
        if fields.get("C") == "28000" and "no encryption" in str(fields.get("M", "")):
            return (f"TLS: {where} accepts connections only over TLS and DB_SSL=disable: set DB_SSL=verify-full "
                    f"and DB_SSL_ROOT_CERT to its CA bundle ({describe_db_error(exc)})")
    return None


def _nodelay(conn) -> None:
    """pg8000 leaves Nagle's algorithm on; its message pairs then wait for delayed ACKs (up to
    40 ms per statement). libpq sets TCP_NODELAY; do the same."""
    sock = getattr(conn, "_usock", None)
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def describe_db_error(exc: BaseException) -> str:
    if exc.args and isinstance(exc.args[0], dict):  # pg8000 server error: {'S': 'FATAL', 'M': msg, 'C': code}
        d = exc.args[0]
        return f"{d.get('M', 'error')} (SQLSTATE {d.get('C', '?')})"
    return f"{type(exc).__name__}: {exc}"



@contextlib.contextmanager
def transaction(conn: pg8000.native.Connection):
    """BEGIN … COMMIT; ROLLBACK on any error (the original error is re-raised)."""
    conn.run("BEGIN")
    try:
        yield conn
    except BaseException:
        with contextlib.suppress(Exception):
            conn.run("ROLLBACK")
        raise
    conn.run("COMMIT")


def close_quietly(conn) -> None:
    if conn is None:
        return
    buffered = getattr(conn, "_sock", None)  # pg8000's buffered reader/writer over the socket
    with contextlib.suppress(Exception):
        conn.close()
    # On a lost connection pg8000's close fails to flush its Terminate message and drops the buffer still holding
    # it; the garbage collector then flushes again, into a closed (TLS) socket: "Exception ignored ... SSLError:
    # Underlying socket connection gone". Closing the buffer here ends that (its flush fails, quietly, once).
    if buffered is not None and not buffered.closed:
        with contextlib.suppress(Exception):
            buffered.close()
