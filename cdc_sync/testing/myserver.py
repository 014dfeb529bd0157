"""Start a throwaway MariaDB server in a temp dir on a free port, with the binlog CDC needs."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pymysql

from cdc_sync.testing.pgserver import ServerTls, free_port, install_tls, log_tail

# What binlog capture needs (issue #3), plus settings that make a throwaway server fast.
SETTINGS = {
    "log_bin": "mariadb-bin",
    "binlog_format": "ROW",
    "binlog_row_image": "FULL",
    "binlog_row_metadata": "FULL",
    "server_id": "1",
    "gtid_domain_id": "0",
    "log_slave_updates": "ON",
    "innodb_flush_log_at_trx_commit": "2",  # throwaway data: an OS crash is not tested
    "sync_binlog": "0",
    "innodb_buffer_pool_size": "128M",
    "innodb_log_file_size": "64M",
    "skip_name_resolve": "ON",
    "character_set_server": "utf8mb4",
    "collation_server": "utf8mb4_bin",
    "max_connections": "200",
    "bind_address": "127.0.0.1",
    "performance_schema": "OFF",
    "innodb_fast_shutdown": "1",
}


def _binary(*names: str) -> str:
    for n in names:
        found = shutil.which(n) or shutil.which(n, path="/usr/sbin:/usr/bin:/sbin")
        if found:
            return found
    raise RuntimeError(f"MariaDB server binaries not found ({names[0]}; install mariadb-server)")


class MyServer:
    """One throwaway MariaDB server. ``dsn(db)`` connects as ``root`` (no password) over TCP.

    ``tls``: serve TLS with these files (``ssl_cert`` / ``ssl_key`` / ``ssl_ca``); clients
    still choose, unless their user was made with :meth:`create_user` ``require_ssl``."""

    def __init__(
        self,
        base: Path | None = None,
        port: int | None = None,
        extra: dict[str, str] | None = None,
        *,
        tls: ServerTls | None = None,
    ) -> None:
        self.base = Path(base or tempfile.mkdtemp(prefix="cdc-sync-my-"))
        self.datadir = self.base / "data"
        self.port = port or free_port()
        # An extra setting of "" removes a default (e.g. {"log_bin": ""} for a server without
        # a binlog, to test the checks).
        merged = {**SETTINGS, **(extra or {})}
        self.settings = {k: v for k, v in merged.items() if v != ""}
        self._os_user = "mysql" if os.geteuid() == 0 else None
        self.tls = tls
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> str:
        return str(self.base / "mysqld.sock")

    def init(self) -> None:
        self.datadir.mkdir(parents=True, exist_ok=True)
        if self._os_user:
            pw = pwd.getpwnam(self._os_user)
            for p in (self.base, self.datadir):
                os.chown(p, pw.pw_uid, pw.pw_gid)
            os.chmod(self.base, 0o755)
        cnf = ["[mariadbd]", f"datadir = {self.datadir}", f"port = {self.port}"]
        cnf += [f"socket = {self.socket}", f"pid_file = {self.base / 'mysqld.pid'}"]
        cnf += [f"log_error = {self.base / 'server.log'}"]
        cnf += [f"{k} = {v}" for k, v in self.settings.items()]
        if self.tls is not None:
            files = install_tls(self.tls, self.base, self._os_user)
            cnf += [f"ssl_cert = {files.cert}", f"ssl_key = {files.key}"]
            if files.ca is not None:
                cnf.append(f"ssl_ca = {files.ca}")
        if self._os_user:
            cnf.append(f"user = {self._os_user}")
        (self.base / "my.cnf").write_text("\n".join(cnf) + "\n")
        args = [
            _binary("mariadb-install-db", "mysql_install_db"),
            f"--defaults-file={self.base / 'my.cnf'}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]
        if self._os_user:
            args.append(f"--user={self._os_user}")
        for attempt in (1, 2):
            done = subprocess.run(args, capture_output=True, text=True, timeout=180, check=False)
            if done.returncode == 0:
                return
            # Seen once in a while on a busy machine, cause not caught: say what the tool
            # said, and try once more on an empty data directory.
            log = self.base / "server.log"
            said = (done.stdout + done.stderr)[-2000:]
            said += log.read_text(errors="replace")[-2000:] if log.exists() else ""
            if attempt == 2:
                raise RuntimeError(f"mariadb-install-db failed ({done.returncode}):\n{said}")
            print(f"mariadb-install-db failed, once more:\n{said}", file=sys.stderr)
            shutil.rmtree(self.datadir)
            self.datadir.mkdir()
            if self._os_user:
                pw = pwd.getpwnam(self._os_user)
                os.chown(self.datadir, pw.pw_uid, pw.pw_gid)

    def start(self) -> None:
        cmd = [_binary("mariadbd", "mysqld"), f"--defaults-file={self.base / 'my.cnf'}"]
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                self.connect().close()
                return
            except pymysql.err.OperationalError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    log = (self.base / "server.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"MariaDB did not start: {log}") from None
                time.sleep(0.1)

    def stop(self, mode: str = "fast") -> None:
        """``fast``: clean shutdown; ``immediate``: SIGKILL (a crash, recovered on start)."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            if mode == "immediate":
                self._proc.kill()
            else:
                self._proc.terminate()
            try:
                self._proc.wait(60)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        self._proc = None

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def alive(self) -> bool:
        """Started and not exited (a crash, or a kill from outside)."""
        return self._proc is not None and self._proc.poll() is None

    def revive(self) -> str:
        """Start a server that died on its own again, on the same port; returns the tail of
        its error log as the crash left it. A data directory that does not start again is
        made anew (its databases are lost: every test makes its own)."""
        code = None if self._proc is None else self._proc.poll()
        said = f"mariadbd exit status {code}\n" + log_tail(self.base / "server.log")
        self._proc = None
        try:
            self.start()
        except RuntimeError:
            self.stop("immediate")
            shutil.rmtree(self.datadir, ignore_errors=True)
            self.init()
            self.start()
        return said

    def connect(self, db: str | None = None, **kw: object) -> pymysql.connections.Connection:
        args: dict[str, object] = {"charset": "utf8mb4", "autocommit": True, "connect_timeout": 5}
        args.update(kw)
        return pymysql.connect(
            host="127.0.0.1", port=self.port, user="root", password="", database=db, **args
        )

    def dsn(self, db: str = "") -> str:
        return f"mysql://root@127.0.0.1:{self.port}/{db}"

    def create_user(self, name: str, password: str, *, require_ssl: bool = False) -> None:
        """A user with every privilege, logging in from anywhere with ``password``;
        ``require_ssl``: the server refuses its sessions without TLS."""
        require = " REQUIRE SSL" if require_ssl else ""
        with self.connect() as c, c.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS `{name}`@`%`")
            # "%%": the statement has a parameter, so a literal % is doubled.
            cur.execute(f"CREATE USER `{name}`@`%%` IDENTIFIED BY %s{require}", (password,))
            cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO `{name}`@`%`")

    def create_database(self, name: str) -> str:
        with self.connect() as c, c.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        return self.dsn(name)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def running_mariadb(
    extra: dict[str, str] | None = None, tls: ServerTls | None = None
) -> Iterator[MyServer]:
    server = MyServer(extra=extra, tls=tls)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()
