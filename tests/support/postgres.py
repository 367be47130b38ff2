"""Throwaway PostgreSQL server for tests, local runs and benchmarks.

Usage::

    from tests.support.postgres import throwaway_postgres

    with throwaway_postgres() as pg:
        conn = pg.connect()               # pg8000.native.Connection as the app role
        conn.run("SELECT 1")
        os.environ.update(pg.env())       # DB_HOST / DB_PORT / DB_NAME / DB_SSL=disable
        pg.secret()                       # {"username": ..., "password": ...} for Secrets Manager

As a pytest fixture::

    @pytest.fixture(scope="session")
    def pg():
        with throwaway_postgres() as instance:
            yield instance

``initdb`` and ``pg_ctl`` refuse to run as root, so when the current user is root they run
through ``runuser -u postgres``. The data directory lives in a temporary folder owned by that user
and is removed on exit, also when the body raises. The server listens only on 127.0.0.1 and
a free port. Set ``PG_BIN`` to point at another PostgreSQL ``bin`` folder.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Iterator

import pg8000.native

__all__ = ["PostgresInstance", "throwaway_postgres", "find_pg_bin", "free_port"]


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
    _run_prefix: list = field(default_factory=list, repr=False)
    _pg_bin: str = field(default="", repr=False)
    _server_opts: str = field(default="", repr=False)
    _logfile: str = field(default="", repr=False)

    # -- connections -------------------------------------------------------------------------
    def connect(self, **kwargs) -> pg8000.native.Connection:
        """A new pg8000.native connection as the application role."""
        params = dict(user=self.user, password=self.password, host=self.host, port=self.port, database=self.dbname)
        params.update(kwargs)
        return pg8000.native.Connection(**params)

    def admin_connect(self, database: str | None = None) -> pg8000.native.Connection:
        """A superuser connection (e.g. for pg_terminate_backend)."""
        return pg8000.native.Connection(
            user=self.superuser, password=self.superuser_password, host=self.host, port=self.port,
            database=database or self.dbname,
        )

    def env(self) -> dict[str, str]:
        """Environment variables of the pipeline contract (without DB_SECRET_ARN)."""
        return {"DB_HOST": self.host, "DB_PORT": str(self.port), "DB_NAME": self.dbname, "DB_SSL": "disable"}

    def secret(self) -> dict[str, str]:
        """The JSON body a Secrets Manager DB secret would hold."""
        return {"username": self.user, "password": self.password, "host": self.host, "port": self.port,
                "dbname": self.dbname, "engine": "postgres"}

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.dbname}"

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
) -> Iterator[PostgresInstance]:
    """Start a fresh PostgreSQL server; yield a PostgresInstance; stop and delete it afterwards.

    ``durable=False`` turns off fsync/synchronous_commit (fine for throwaway data and much faster).
    """
    pg_bin = pg_bin or find_pg_bin()
    password = password or "pw-" + secrets.token_hex(8)
    super_pw = "su-" + secrets.token_hex(8)
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    tmp = tempfile.mkdtemp(prefix="pgtmp-")
    os.chmod(tmp, 0o755)
    datadir = os.path.join(tmp, "data")
    sockdir = os.path.join(tmp, "sock")
    logfile = os.path.join(tmp, "server.log")
    pwfile = os.path.join(tmp, "pwfile")
    os.mkdir(sockdir)
    with open(pwfile, "w") as fh:
        fh.write(super_pw + "\n")
    if as_root:
        for path in (tmp, sockdir, pwfile):
            shutil.chown(path, "postgres", "postgres")
    instance: PostgresInstance | None = None
    started = False
    try:
        subprocess.run(
            prefix + [os.path.join(pg_bin, "initdb"), "-D", datadir, "-U", "postgres", "--pwfile", pwfile,
                      "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
                      "--no-sync"],
            capture_output=True, text=True, check=True,
        )
        settings = {"listen_addresses": "127.0.0.1", "unix_socket_directories": sockdir, "max_connections": "50",
                    "shared_buffers": "128MB"}
        if not durable:
            settings.update({"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"})
        settings.update(extra_settings or {})
        last_error = None
        for _attempt in range(5):
            port = free_port()
            opts = " ".join(f"-c {k}={v}" for k, v in settings.items()) + f" -p {port}"
            instance = PostgresInstance(
                host="127.0.0.1", port=port, user=user, password=password, dbname=dbname, datadir=datadir,
                superuser_password=super_pw, _run_prefix=prefix, _pg_bin=pg_bin, _server_opts=opts,
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
            admin.run(f"CREATE ROLE {pg8000.native.identifier(user)} LOGIN PASSWORD "
                      f"{pg8000.native.literal(password)}")
            admin.run(f"CREATE DATABASE {pg8000.native.identifier(dbname)} OWNER {pg8000.native.identifier(user)}")
        finally:
            admin.close()
        yield instance
    finally:
        if instance is not None and started:
            instance.stop(mode="immediate")
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def empty_pipeline_schema(instance: PostgresInstance) -> Iterator[pg8000.native.Connection]:
    """A connection to the instance's database with no `pagerduty` schema: each test starts from nothing."""
    conn = instance.connect()
    conn.run("DROP SCHEMA IF EXISTS pagerduty CASCADE")
    try:
        yield conn
    finally:
        with contextlib.suppress(Exception):
            conn.close()
