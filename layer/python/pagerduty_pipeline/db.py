"""PostgreSQL connection (pg8000, pure Python) and transaction helper."""

from __future__ import annotations

import contextlib
import socket
import ssl

import pg8000.native
from pg8000.exceptions import Error as PgError

from .config import Config
from .errors import DatabaseError

__all__ = ["connect", "transaction", "PgError", "DB_FAILURES", "ssl_context_for", "describe_db_error"]

# What a lost or failing database raises: pg8000's errors, and socket errors it lets through unwrapped
# (a connection reset while it reads a reply arrives as a bare ConnectionResetError).
DB_FAILURES = (PgError, OSError)


def ssl_context_for(mode: str, root_cert: str | None) -> ssl.SSLContext | None:
    if mode == "disable":
        return None
    if mode == "verify-full":
        return ssl.create_default_context(cafile=root_cert)
    ctx = ssl.create_default_context()  # require: encrypt, do not verify (like libpq sslmode=require)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def connect(cfg: Config, user: str, password: str, application_name: str = "pagerduty-pipeline",
            timeout: float = 30.0) -> pg8000.native.Connection:
    try:
        conn = pg8000.native.Connection(
            user=user, password=password, host=cfg.db_host, port=cfg.db_port, database=cfg.db_name,
            ssl_context=ssl_context_for(cfg.db_ssl, cfg.db_ssl_root_cert), timeout=timeout,
            application_name=application_name,
        )
    except DB_FAILURES as exc:
        raise DatabaseError(f"cannot connect to PostgreSQL at {cfg.db_host}:{cfg.db_port}/{cfg.db_name}: "
                            f"{describe_db_error(exc)}", "db_unavailable") from None
    _nodelay(conn)
    conn.run("SET TIME ZONE 'UTC'")
    return conn


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
    if conn is not None:
        with contextlib.suppress(Exception):
            conn.close()
