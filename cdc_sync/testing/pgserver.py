"""Start a throwaway PostgreSQL server in a temp dir on a free port, as an unprivileged user."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

SETTINGS = {
    "wal_level": "logical",
    "max_replication_slots": "20",
    "max_wal_senders": "20",
    # Two-way links decide last_write_wins by each row's commit time.
    "track_commit_timestamp": "on",
    "fsync": "off",  # throwaway data: a crash of the OS is not part of any test
    "full_page_writes": "off",
    "shared_buffers": "64MB",
    "max_connections": "100",
    "listen_addresses": "'127.0.0.1'",
    "log_min_messages": "warning",
    "logging_collector": "off",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_bindir() -> Path:
    """Newest installed PostgreSQL server binaries (``CDC_SYNC_PG_BINDIR`` overrides)."""
    env = os.environ.get("CDC_SYNC_PG_BINDIR")
    if env:
        return Path(env)
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if found:
        return Path(found[-1]).parent
    which = shutil.which("initdb")
    if which:
        return Path(which).parent
    raise RuntimeError("PostgreSQL server binaries not found (install postgresql)")


def _runuser() -> str:
    """runuser lives in /usr/sbin, which a minimal root environment may not have on PATH."""
    found = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")
    if found is None:
        raise RuntimeError("PostgreSQL refuses to run as root and runuser (util-linux) is missing")
    return found


class PgServer:
    """One throwaway cluster. ``dsn(db)`` connects as the superuser ``postgres`` over TCP."""

    def __init__(self, base: Path | None = None, port: int | None = None) -> None:
        self.base = Path(base or tempfile.mkdtemp(prefix="cdc-sync-pg-"))
        self.datadir = self.base / "data"
        self.port = port or free_port()
        self.bindir = pg_bindir()
        self.user = "postgres"
        self._os_user = "postgres" if os.geteuid() == 0 else None

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._os_user:
            cmd = [_runuser(), "-u", self._os_user, "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=120)

    def init(self) -> None:
        if self._os_user:
            pw = pwd.getpwnam(self._os_user)
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
            os.chmod(self.base, 0o755)
        self._run(
            "initdb",
            "--no-sync",
            "-A",
            "trust",
            "-U",
            self.user,
            "-E",
            "UTF8",
            "--locale=C",
            "-D",
            str(self.datadir),
        )
        conf = "\n".join(f"{k} = {v}" for k, v in SETTINGS.items())
        with open(self.datadir / "postgresql.conf", "a") as f:
            f.write(f"\n{conf}\nport = {self.port}\nunix_socket_directories = '{self.base}'\n")

    def start(self) -> None:
        self._run(
            "pg_ctl",
            "-D",
            str(self.datadir),
            "-l",
            str(self.base / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop", check=False)

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def running_pg() -> Iterator[PgServer]:
    server = PgServer()
    server.init()
    server.start()
    deadline = time.monotonic() + 30
    while True:
        try:
            psycopg.connect(server.dsn(), connect_timeout=2).close()
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    try:
        yield server
    finally:
        server.destroy()
