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
from dataclasses import dataclass
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


def log_tail(path: Path, lines: int = 40) -> str:
    """The last lines of a server's log, or why there are none."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"(no log at {path}: {e.strerror})"


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


@dataclass(frozen=True)
class ServerTls:
    """The files a throwaway server serves TLS with (PEM): its certificate (the chain up to,
    not including, the CA), the certificate's private key, and the CA that signed it."""

    cert: Path
    key: Path
    ca: Path | None = None


def install_tls(tls: ServerTls, directory: Path, os_user: str | None) -> ServerTls:
    """Copies of the files in ``directory``, owned by the server's OS user (``None``: the
    current one); the key readable by that user only, as the servers require."""
    copies = {}
    for name, src in (("cert", tls.cert), ("key", tls.key), ("ca", tls.ca)):
        if src is None:
            continue
        dst = directory / f"server-{name}.pem"
        shutil.copyfile(src, dst)
        os.chmod(dst, 0o600 if name == "key" else 0o644)
        if os_user:
            pw = pwd.getpwnam(os_user)
            os.chown(dst, pw.pw_uid, pw.pw_gid)
        copies[name] = dst
    return ServerTls(cert=copies["cert"], key=copies["key"], ca=copies.get("ca"))


def _runuser() -> str:
    """runuser lives in /usr/sbin, which a minimal root environment may not have on PATH."""
    found = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")
    if found is None:
        raise RuntimeError("PostgreSQL refuses to run as root and runuser (util-linux) is missing")
    return found


class PgServer:
    """One throwaway cluster. ``dsn(db)`` connects as the superuser ``postgres`` over TCP.

    ``tls``: serve TLS with these files (``ssl = on``); clients still choose (the fixtures'
    own ``dsn()`` connections negotiate TLS without verifying it). ``extra``: more
    postgresql.conf settings, overriding the defaults (values as written in the file)."""

    def __init__(
        self,
        base: Path | None = None,
        port: int | None = None,
        *,
        tls: ServerTls | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.base = Path(base or tempfile.mkdtemp(prefix="cdc-sync-pg-"))
        self.datadir = self.base / "data"
        self.port = port or free_port()
        self.bindir = pg_bindir()
        self.user = "postgres"
        self._os_user = "postgres" if os.geteuid() == 0 else None
        self.tls = tls
        self.settings = {**SETTINGS, **(extra or {})}

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
        settings = dict(self.settings)
        if self.tls is not None:
            # Outside the data directory, which initdb made; the key 0600 and owned by the
            # server's OS user, or PostgreSQL refuses to start.
            files = install_tls(self.tls, self.base, self._os_user)
            settings |= {
                "ssl": "on",
                "ssl_cert_file": f"'{files.cert}'",
                "ssl_key_file": f"'{files.key}'",
            }
            if files.ca is not None:
                settings["ssl_ca_file"] = f"'{files.ca}'"
        conf = "\n".join(f"{k} = {v}" for k, v in settings.items())
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

    def alive(self) -> bool:
        """The postmaster of ``postmaster.pid`` runs (it restarts crashed backends itself)."""
        try:
            pid = int((self.datadir / "postmaster.pid").read_text().split("\n", 1)[0])
            # Not os.kill(pid, 0): a killed postmaster stays a zombie until init reaps it.
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, ValueError, IndexError):
            return False
        return state not in ("Z", "X")

    def revive(self) -> str:
        """Start a server that died on its own again; returns the tail of its log."""
        said = log_tail(self.base / "server.log")
        self.stop("immediate")
        self.start()
        return said

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def create_user(self, name: str, *, require_ssl: bool = False) -> None:
        """A superuser that may replicate (trust authentication: any password is accepted);
        ``require_ssl``: the server refuses its sessions without TLS (``hostnossl … reject``
        in pg_hba.conf), replication ones included."""
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE ROLE "{name}" LOGIN SUPERUSER REPLICATION')
            if not require_ssl:
                return
            hba = self.datadir / "pg_hba.conf"
            rules = f"hostnossl all {name} all reject\nhostnossl replication {name} all reject\n"
            hba.write_text(rules + hba.read_text())  # first match wins
            conn.execute("SELECT pg_reload_conf()")
        plain = f"postgresql://{name}@127.0.0.1:{self.port}/postgres?sslmode=disable"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the reload is asynchronous
            try:
                psycopg.connect(plain, connect_timeout=2).close()
            except psycopg.OperationalError:
                return
            time.sleep(0.05)
        raise RuntimeError(f"pg_hba.conf still lets {name} in without TLS")

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def running_pg(
    tls: ServerTls | None = None, extra: dict[str, str] | None = None
) -> Iterator[PgServer]:
    server = PgServer(tls=tls, extra=extra)
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
