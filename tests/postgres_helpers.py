"""A throwaway PostgreSQL server for tests: a cluster made with Debian's `initdb` in a temporary folder,
started on a free localhost port, one fresh database per test, and stopped and deleted at the end.

PostgreSQL refuses to run as root, so under root the server runs as the `postgres` account the Debian
package creates, and its folder (outside pytest's root-only temporary tree) belongs to that account.
Connections go over TCP with a password, as a team's shared store is reached.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from dfguard.servers import free_port

INSTALL_HINT = "apt-get install -y postgresql (or `make postgres`, as root or through sudo)"
DEBIAN_ROOT = Path("/usr/lib/postgresql")  # one <major version>/bin folder per installed server
SERVER_ACCOUNT = "postgres"
SUPERUSER = "dfguard"
DRIVER = "postgresql+psycopg"  # the driver dfguard installs (psycopg 3)
START_TIMEOUT_S = 60
START_TRIES = 3  # another process may take the free port between choosing it and the server binding it
# Durability is pointless for a database deleted after the tests, and fsync makes each commit wait on
# the disk. The server's zone is not UTC, so a store that leaned on the server's clock or zone would show.
SERVER_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "timezone": "America/New_York",
}


def server_binaries() -> Path | None:
    """The bin folder of the newest PostgreSQL server installed (Debian's layout, else on PATH)."""
    installed = [
        folder
        for folder in DEBIAN_ROOT.glob("*/bin")
        if folder.parent.name.isdigit() and (folder / "initdb").is_file() and (folder / "pg_ctl").is_file()
    ]
    if installed:
        return max(installed, key=lambda folder: int(folder.parent.name))
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).parent == Path(pg_ctl).parent:
        return Path(initdb).parent
    return None


def _server_account() -> pwd.struct_passwd | None:
    """The account the server runs as: `postgres` under root, else whoever runs the tests (None: root
    and no `postgres` account to run it as)."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    try:
        return pwd.getpwnam(SERVER_ACCOUNT)
    except KeyError:
        return None


def unavailable_reason() -> str | None:
    """Why no test server can be started here, or None when one can."""
    if server_binaries() is None:
        return f"PostgreSQL is not installed (no initdb under {DEBIAN_ROOT}/*/bin or on PATH): {INSTALL_HINT}"
    if _server_account() is None:
        return f"root, and no {SERVER_ACCOUNT!r} account to run PostgreSQL as: {INSTALL_HINT}"
    return None


@dataclass
class PostgresServer:
    """A running test server; `database()` makes a fresh database and returns its URL."""

    binaries: Path
    root: Path  # data folder, log and socket
    account: pwd.struct_passwd
    port: int = 0
    # '/' and ':' must be escaped in a URL, as a real password's may need to be.
    password: str = field(default_factory=lambda: f"s3cr/t:{secrets.token_hex(8)}")
    _created: int = 0
    _admin: sa.Engine | None = None

    def url(self, database: str, driver: str = DRIVER) -> str:
        """The URL of `database`, password included."""
        return sa.URL.create(
            driver, SUPERUSER, self.password, "127.0.0.1", self.port, database
        ).render_as_string(hide_password=False)

    def database(self, prefix: str = "test") -> str:
        """A new, empty database; returns its URL."""
        self._created += 1
        name = f"{re.sub(r'[^a-z0-9_]', '_', prefix.lower())[:40]}_{self._created}"
        with self._admin_engine().connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def _admin_engine(self) -> sa.Engine:
        if self._admin is None:
            # CREATE DATABASE cannot run inside a transaction block.
            self._admin = sa.create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        return self._admin

    def _run(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.binaries / program), *args]
        if os.geteuid() != self.account.pw_uid:
            command = ["runuser", "-u", self.account.pw_name, "--", *command]
        # The server inherits this working directory, which the server account may not be able to enter.
        return subprocess.run(command, capture_output=True, text=True, check=False, cwd=self.root)

    def _check(self, result: subprocess.CompletedProcess[str], what: str) -> None:
        if result.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{what} failed ({result.returncode}): {result.stderr.strip()}\n{tail}")

    def init(self) -> None:
        password_file = self.root / "password"
        password_file.write_text(self.password + "\n")
        os.chown(password_file, self.account.pw_uid, self.account.pw_gid)
        data = str(self.root / "data")
        self._check(
            self._run(
                "initdb",
                f"--pgdata={data}",
                f"--username={SUPERUSER}",
                f"--pwfile={password_file}",
                "--auth-local=trust",  # the socket is in a folder only the server account can enter
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ),
            "initdb",
        )
        password_file.unlink()

    def start(self) -> None:
        options = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.root}",
                *(f"-c {key}={value}" for key, value in SERVER_SETTINGS.items()),
            ]
        )
        for attempt in range(START_TRIES):
            self.port = free_port()
            result = self._run(
                "pg_ctl",
                "start",
                f"--pgdata={self.root / 'data'}",
                f"--log={self.root / 'server.log'}",
                "--wait",
                f"--timeout={START_TIMEOUT_S}",
                f"--options=-p {self.port} {options}",
            )
            if result.returncode == 0 or attempt == START_TRIES - 1:
                self._check(result, "pg_ctl start")
                return

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.dispose()
        self._run("pg_ctl", "stop", f"--pgdata={self.root / 'data'}", "--mode=fast", "--wait")


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A running server until the block ends; then stopped and its folder deleted.

    Call `unavailable_reason()` first: this raises where it gives a reason.
    """
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(reason)
    binaries, account = server_binaries(), _server_account()
    assert binaries is not None and account is not None  # unavailable_reason checked both
    # Short and world-traversable (pytest's tmp_path is under a root-only folder), and a unix socket's
    # path must stay under about 100 characters.
    root = Path(tempfile.mkdtemp(prefix="dfguard-pg-"))
    try:
        os.chown(root, account.pw_uid, account.pw_gid)
        server = PostgresServer(binaries, root, account)
        server.init()
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
