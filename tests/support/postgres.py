"""Throwaway PostgreSQL server for tests, local runs and benchmarks.

Usage::

    from tests.support.postgres import throwaway_postgres

    with throwaway_postgres() as pg:
        conn = pg.connect()               # pg8000.native.Connection as the app role, TLS verified
        conn.run("SELECT 1")
        os.environ.update(pg.env())       # DB_HOST / DB_PORT / DB_NAME / DB_SSL=verify-full / DB_SSL_ROOT_CERT
        pg.secret()                       # {"username": ..., "password": ...} for Secrets Manager
        pg.ca_file, pg.ssl_context()      # the CA that issued the server certificate; a verify-full context

As a pytest fixture::

    @pytest.fixture(scope="session")
    def pg():
        with throwaway_postgres() as instance:
            yield instance

``initdb`` and ``pg_ctl`` refuse to run as root, so when the current user is root they run
through ``runuser -u postgres``. The data directory lives in a temporary folder owned by that user
and is removed on exit, also when the body raises. The server listens only on 127.0.0.1 and
a free port. Set ``PG_BIN`` to point at another PostgreSQL ``bin`` folder.

Like RDS with ``rds.force_ssl=1``, the server speaks TLS and turns away every TCP connection without it
(pg_hba: ``hostssl … scram-sha-256``, ``hostnossl … reject``). Its certificate (EC P-256) names
``IP:127.0.0.1`` and ``DNS:postgres.test`` (``SERVER_DNS_NAMES``) and deliberately not ``localhost``: a client
verifying the host name fails through ``localhost``, which is how tests see a host-name mismatch. It is issued by
a CA made for the instance, or by the CA passed as ``ca=(certificate PEM file, key PEM file)`` (the rehearsal
passes the committed stand-in for the RDS CA bundle, tests/fixtures/tls/, so the deployed functions' bundle
verifies it). ``ca_file`` is that CA's certificate; ``connect()`` and ``admin_connect()`` verify against it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from urllib.parse import quote, urlencode

import pg8000.native

from tests.support.tls import issue_server_cert, load_ca, new_ca

__all__ = ["PostgresInstance", "throwaway_postgres", "find_pg_bin", "free_port", "SERVER_DNS_NAMES",
           "SERVER_IP_ADDRESSES"]

# The names of the server certificate. Not `localhost`: connecting through it is a host-name mismatch.
SERVER_DNS_NAMES = ("postgres.test",)
SERVER_IP_ADDRESSES = ("127.0.0.1",)
# rds.force_ssl=1: TCP only over TLS, with a password (local socket connections, used by nothing here, trusted).
PG_HBA = """\
# TYPE    DATABASE USER ADDRESS     METHOD
local     all      all              trust
hostnossl all      all  0.0.0.0/0   reject
hostnossl all      all  ::/0        reject
hostssl   all      all  0.0.0.0/0   scram-sha-256
hostssl   all      all  ::/0        scram-sha-256
"""


def find_pg_bin() -> str:
    env = os.environ.get("PG_BIN")
    if env:
        return env
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
    for candidate in candidates:
        if os.path.exists(os.path.join(candidate, "initdb")):
            return candidate
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(found)
    raise RuntimeError("PostgreSQL server binaries not found; set PG_BIN")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresInstance:
    host: str
    port: int
    user: str
    password: str
    dbname: str
    datadir: str
    superuser: str = "postgres"
    superuser_password: str = ""
    ca_file: str = ""  # PEM certificate of the CA that issued the server certificate
    server_names: tuple[str, ...] = ()  # the server certificate's subjectAltNames (DNS names, IP addresses)
    _run_prefix: list = field(default_factory=list, repr=False)
    _pg_bin: str = field(default="", repr=False)
    _server_opts: str = field(default="", repr=False)
    _logfile: str = field(default="", repr=False)
    _ssl_context: ssl.SSLContext | None = field(default=None, repr=False)

    # -- connections -------------------------------------------------------------------------
    def ssl_context(self) -> ssl.SSLContext:
        """A verify-full context (certificate chain to `ca_file`, and host name), as the layer's
        `ssl_context_for("verify-full", ca_file)` builds it. One per instance, shared (contexts are thread-safe)."""
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context(cafile=self.ca_file)
        return self._ssl_context

    def connect(self, **kwargs) -> pg8000.native.Connection:
        """A new pg8000.native connection as the application role, over TLS verified against `ca_file`
        (keyword arguments override, e.g. `ssl_context=False` for a plain connection, which the server refuses)."""
        params = dict(user=self.user, password=self.password, host=self.host, port=self.port, database=self.dbname,
                      ssl_context=self.ssl_context())
        params.update(kwargs)
        return pg8000.native.Connection(**params)

    def admin_connect(self, database: str | None = None) -> pg8000.native.Connection:
        """A superuser connection (e.g. for pg_terminate_backend), over verified TLS too."""
        return pg8000.native.Connection(
            user=self.superuser, password=self.superuser_password, host=self.host, port=self.port,
            database=database or self.dbname, ssl_context=self.ssl_context(),
        )

    def env(self) -> dict[str, str]:
        """Environment variables of the pipeline contract (without DB_SECRET_ARN): TLS verified against ca_file."""
        return {"DB_HOST": self.host, "DB_PORT": str(self.port), "DB_NAME": self.dbname, "DB_SSL": "verify-full",
                "DB_SSL_ROOT_CERT": self.ca_file}

    def secret(self) -> dict[str, str]:
        """The JSON body a Secrets Manager DB secret would hold."""
        return {"username": self.user, "password": self.password, "host": self.host, "port": self.port,
                "dbname": self.dbname, "engine": "postgres"}

    @property
    def url(self) -> str:
        """postgresql://user:password@host:port/dbname?sslmode=verify-full&sslrootcert=<ca_file> (libpq's
        parameter names; tests.support.lambda_runtime.Database.from_url reads them)."""
        query = urlencode({"sslmode": "verify-full", "sslrootcert": self.ca_file}, quote_via=quote)
        return (f"postgresql://{quote(self.user, safe='')}:{quote(self.password, safe='')}@{self.host}:{self.port}/"
                f"{quote(self.dbname, safe='')}?{query}")

    # -- lifecycle ---------------------------------------------------------------------------
    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = self._run_prefix + [os.path.join(self._pg_bin, "pg_ctl"), "-D", self.datadir, *args]
        return subprocess.run(cmd, capture_output=True, text=True, check=check)

    def start(self) -> None:
        self._pg_ctl("start", "-w", "-t", "30", "-l", self._logfile, "-o", self._server_opts)

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("stop", "-w", "-m", mode, check=False)

    def log(self) -> str:
        try:
            with open(self._logfile, encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""


@contextlib.contextmanager
def throwaway_postgres(
    user: str = "pipeline",
    password: str | None = None,
    dbname: str = "pagerduty",
    *,
    durable: bool = False,
    pg_bin: str | None = None,
    extra_settings: dict[str, str] | None = None,
    ca: tuple[Path | str, Path | str] | None = None,
) -> Iterator[PostgresInstance]:
    """Start a fresh PostgreSQL server; yield a PostgresInstance; stop and delete it afterwards.

    ``durable=False`` turns off fsync/synchronous_commit (fine for throwaway data and much faster).
    ``ca=(certificate PEM file, key PEM file)``: the CA that issues the server certificate (and `ca_file` is that
    certificate file); by default a CA made for this instance, whose key is never written anywhere.
    """
    pg_bin = pg_bin or find_pg_bin()
    password = password or "pw-" + secrets.token_hex(8)
    super_pw = "su-" + secrets.token_hex(8)
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    issuer = load_ca(*ca) if ca is not None else new_ca()
    tmp = tempfile.mkdtemp(prefix="pgtmp-")
    os.chmod(tmp, 0o755)
    datadir = os.path.join(tmp, "data")
    sockdir = os.path.join(tmp, "sock")
    logfile = os.path.join(tmp, "server.log")
    pwfile = os.path.join(tmp, "pwfile")
    cert_file = os.path.join(tmp, "server.crt")
    key_file = os.path.join(tmp, "server.key")  # PostgreSQL wants it 0600 and owned by the server's user
    ca_file = str(Path(ca[0]).resolve()) if ca is not None else os.path.join(tmp, "ca.pem")
    os.mkdir(sockdir)
    with open(pwfile, "w") as fh:
        fh.write(super_pw + "\n")
    if as_root:
        for path in (tmp, sockdir, pwfile):
            shutil.chown(path, "postgres", "postgres")
    instance: PostgresInstance | None = None
    started = False
    try:
        if ca is None:
            Path(ca_file).write_bytes(issuer.cert_pem)
        issue_server_cert(issuer, dns_names=SERVER_DNS_NAMES, ip_addresses=SERVER_IP_ADDRESSES).write(cert_file,
                                                                                                      key_file)
        if as_root:
            shutil.chown(key_file, "postgres", "postgres")
        subprocess.run(
            prefix + [os.path.join(pg_bin, "initdb"), "-D", datadir, "-U", "postgres", "--pwfile", pwfile,
                      "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
                      "--no-sync"],
            capture_output=True, text=True, check=True,
        )
        with open(os.path.join(datadir, "pg_hba.conf"), "w") as fh:  # the file initdb made: its owner stays
            fh.write(PG_HBA)
        settings = {"listen_addresses": "127.0.0.1", "unix_socket_directories": sockdir, "max_connections": "50",
                    "shared_buffers": "128MB", "ssl": "on", "ssl_cert_file": cert_file, "ssl_key_file": key_file}
        if not durable:
            settings.update({"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"})
        settings.update(extra_settings or {})
        last_error = None
        for _attempt in range(5):
            port = free_port()
            opts = " ".join(f"-c {k}={v}" for k, v in settings.items()) + f" -p {port}"
            instance = PostgresInstance(
                host="127.0.0.1", port=port, user=user, password=password, dbname=dbname, datadir=datadir,
                superuser_password=super_pw, ca_file=ca_file, server_names=SERVER_DNS_NAMES + SERVER_IP_ADDRESSES,
                _run_prefix=prefix, _pg_bin=pg_bin, _server_opts=opts,
                _logfile=logfile,
            )
            try:
                instance.start()
                started = True
                break
            except subprocess.CalledProcessError as exc:  # port taken in the meantime: try another
                last_error = exc
                instance.stop(mode="immediate")
        if not started:
            raise RuntimeError(f"PostgreSQL did not start: {last_error and last_error.stderr}\n{instance.log()}")
        admin = None
        for _ in range(50):
            try:
                admin = instance.admin_connect(database="postgres")
                break
            except Exception:  # noqa: BLE001 - server still coming up
                time.sleep(0.1)
        if admin is None:
            admin = instance.admin_connect(database="postgres")
        try:
            # The application role is shaped like the RDS master user: not a superuser, but allowed to create
            # roles, and able to grant `rds_iam` (which exists on RDS and marks roles that log in with IAM tokens;
            # here it only has to exist, since a local server cannot check tokens).
            admin.run(f"CREATE ROLE {pg8000.native.identifier(user)} LOGIN CREATEROLE PASSWORD "
                      f"{pg8000.native.literal(password)}")
            admin.run("CREATE ROLE rds_iam NOLOGIN")
            admin.run(f"GRANT rds_iam TO {pg8000.native.identifier(user)} WITH ADMIN OPTION")
            admin.run(f"CREATE DATABASE {pg8000.native.identifier(dbname)} OWNER {pg8000.native.identifier(user)}")
        finally:
            admin.close()
        yield instance
    finally:
        if instance is not None and started:
            instance.stop(mode="immediate")
        shutil.rmtree(tmp, ignore_errors=True)


def drop_pipeline_schemas(conn: pg8000.native.Connection) -> None:
    """Drop what the migrations create in a database: schema ``pagerduty`` and schema ``analytics`` (its views
    depend on pagerduty's tables; its setting table and function would stop migration 6 from running again)."""
    conn.run("DROP SCHEMA IF EXISTS analytics, pagerduty CASCADE")


@contextlib.contextmanager
def empty_pipeline_schema(instance: PostgresInstance) -> Iterator[pg8000.native.Connection]:
    """A connection to the instance's database without the pipeline's schemas: each test starts from nothing."""
    conn = instance.connect()
    drop_pipeline_schemas(conn)
    try:
        yield conn
    finally:
        with contextlib.suppress(Exception):
            conn.close()
