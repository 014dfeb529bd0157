"""pg_chameleon as a process: its venv, its config, and the replica's CPU and memory."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import re
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.env import TABLE
from cdc_sync.testing.myserver import MyServer
from cdc_sync.testing.pgserver import PgServer

VERSION = "2.0.21"  # newest on PyPI; runs on Python 3.11 (with mysql-replication 1.0.x)
# The versions it was measured with (mysql-replication 1.x changed its API once already).
_DEP_PINS = ("mysql-replication==1.0.17", "PyMySQL==1.2.4", "psycopg2-binary==2.9.13")
VENV = Path(__file__).resolve().parent / ".venv-chameleon"
SOURCE = "mysql"  # pg_chameleon's name of the source in its config
CONFIG = "bench"  # → $HOME/.pg_chameleon/configuration/bench.yml
MARKER = "bench_marker"  # second source table: one row committed after the backlog
RUNAS = "nobody"  # pg_chameleon refuses to run as root
_PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else "python3"
# daemonize's atexit handler calls sys.exit(0) at every foreground exit: noise, not failure.
_DAEMONIZE_EXIT = re.compile(
    r"Exception ignored in atexit callback: <bound method Daemonize\.exit.*?SystemExit: 0\n", re.S
)
_FAILED = ("Traceback", "FATAL", "CRITICAL", "ERROR")  # it often exits 0 after these
STOP_GRACE_S = 15.0
_TICK = os.sysconf("SC_CLK_TCK")
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def ensure_venv() -> str | None:
    """``bench/.venv-chameleon`` with pg-chameleon ``VERSION``; None, or why it is missing.
    Quick when present; a lock keeps two benchmark runs from building it at once."""
    exe, marker = VENV / "bin" / "chameleon", VENV / ".bench-pins"
    pins = [f"pg-chameleon=={VERSION}", *_DEP_PINS]
    with open(Path(tempfile.gettempdir()) / "bench-venv-chameleon.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with contextlib.suppress(OSError):
            if exe.exists() and marker.read_text().split() == pins:
                return None
        steps = (
            # Debian's python: the pyenv one lives under /root, which RUNAS cannot read.
            [_PYTHON, "-m", "venv", "--clear", str(VENV)],
            [str(VENV / "bin" / "pip"), "install", "-q", *pins],
        )
        for cmd in steps:
            try:
                res = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
            except (OSError, subprocess.TimeoutExpired) as e:
                return f"{' '.join(cmd[:3])}: {e}"
            if res.returncode != 0:
                return f"{' '.join(cmd[:3])} exited {res.returncode}: {res.stderr[-800:]}"
        if not exe.exists():
            return f"{exe} missing after pip install"
        marker.write_text("\n".join(pins) + "\n")
    return None


def config(home: Path, my: MyServer, pg: PgServer) -> dict[str, Any]:
    """config-example.yml (``chameleon set_configuration_files``) with our servers; the
    replay settings are its defaults: replica_batch_size 10000, replay_max_rows 10000,
    sleep_loop 1. log_dest stdout: start_replica stays in the foreground without --debug
    (which would log every step at DEBUG level)."""
    ch = home / ".pg_chameleon"
    return {
        "pid_dir": f"{ch}/pid/",
        "log_dir": f"{ch}/logs/",
        "log_dest": "stdout",
        "log_level": "info",
        "log_days_keep": 10,
        "rollbar_key": "",
        "rollbar_env": "",
        "type_override": {"tinyint(1)": {"override_to": "boolean", "override_tables": ["*"]}},
        "pg_conn": {
            "host": "127.0.0.1",
            "port": str(pg.port),
            "user": pg.user,
            # Not empty: pg_chameleon pastes it into "password=%s port=%s", and an empty one
            # would swallow the port. The server trusts 127.0.0.1, so any value works.
            "password": "bench",
            "database": "hub",
            "charset": "utf8",
        },
        "sources": {
            SOURCE: {
                "db_conn": {
                    "host": "127.0.0.1",
                    "port": str(my.port),
                    "user": "root",
                    "password": "",
                    "charset": "utf8",
                    "connect_timeout": 10,
                },
                "schema_mappings": {"crm": "crm"},
                "limit_tables": [f"crm.{TABLE}", f"crm.{MARKER}"],
                "skip_tables": [],
                "grant_select_to": [],
                "lock_timeout": "120s",
                "my_server_id": 100,
                "replica_batch_size": 10000,
                "replay_max_rows": 10000,
                "batch_retention": "1 day",
                "copy_max_memory": "300M",
                "copy_mode": "file",
                "out_dir": str(home),
                "sleep_loop": 1,
                "on_error_replay": "continue",
                # Not the default "continue": its bare except also swallows the SIGTERM that
                # stop_replica sends the read process, and the stop then hangs forever.
                "on_error_read": "exit",
                "auto_maintenance": "disabled",
                "gtid_enable": False,
                "type": "mysql",
                "skip_events": {"insert": [], "delete": [], "update": []},
                "keep_existing_schema": False,
                "net_read_timeout": 600,
            }
        },
    }


@dataclass
class Usage:
    exit_code: int
    cpu_s: float  # the process and its reaped children (wait4 is RUSAGE_BOTH-like on Linux)
    max_rss_mb: float  # the largest single process of the tree (wait4's ru_maxrss)
    peak_tree_pss_mb: float  # sampled: sum of the live tree's PSS (shared pages counted once)
    sampled_cpu_s: float  # the tree's CPU at the last sample before the stop: a cross-check


class _TreeSampler(threading.Thread):
    """Every 0.2 s: the summed PSS and CPU of a process and all its descendants (/proc)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True, name="chameleon-rss")
        self.pid, self.peak_kb, self.ticks, self.halt = pid, 0, 0, threading.Event()

    def _tree(self) -> list[int]:
        kids: dict[int, list[int]] = {}
        for e in Path("/proc").iterdir():
            if e.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    ppid = int((e / "stat").read_text().rsplit(")", 1)[1].split()[1])
                    kids.setdefault(ppid, []).append(int(e.name))
        out, todo = [], [self.pid]
        while todo:
            p = todo.pop()
            out.append(p)
            todo += kids.get(p, [])
        return out

    @staticmethod
    def _pss_kb(pid: int) -> int:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    return int(line.split()[1])
            return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE_KB
        except (OSError, ValueError, IndexError):
            return 0

    @staticmethod
    def _ticks(pid: int) -> int:
        """utime + stime + cutime + cstime: its own CPU and that of children it reaped."""
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return sum(int(x) for x in f[11:15])
        except (OSError, ValueError, IndexError):
            return 0

    def run(self) -> None:
        while not self.halt.wait(0.2):
            tree = self._tree()
            self.peak_kb = max(self.peak_kb, sum(self._pss_kb(p) for p in tree))
            self.ticks = max(self.ticks, sum(self._ticks(p) for p in tree))


class Chameleon:
    """The ``chameleon`` command with HOME in a temp dir (its config lives in ~/.pg_chameleon)."""

    def __init__(self, home: Path, log: Path) -> None:
        self.home, self.log = home, log
        self.env = {**os.environ, "HOME": str(home), "PYTHONUNBUFFERED": "1"}
        # As root: run it as RUNAS (setuid in the child before exec: no runuser/su process
        # in between, so the pid we wait4 on is chameleon's own).
        self.as_user: dict[str, Any] = {}
        if os.geteuid() == 0:
            pw = pwd.getpwnam(RUNAS)
            self.as_user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        self.proc: subprocess.Popen[bytes] | None = None
        self.sampler: _TreeSampler | None = None
        self.started = 0.0
        self.forced = 0  # children killed because stop_replica did not end them

    def _cmd(self, command: str) -> list[str]:
        cmd = [str(VENV / "bin" / "chameleon"), command, "--config", CONFIG]
        # With a --source it first checks that the source exists (in the replica schema).
        return cmd if command == "create_replica_schema" else [*cmd, "--source", SOURCE]

    def write_config(self, config: dict[str, Any]) -> None:
        d = self.home / ".pg_chameleon" / "configuration"
        d.mkdir(parents=True, exist_ok=True)
        for sub in ("pid", "logs"):
            (self.home / ".pg_chameleon" / sub).mkdir(exist_ok=True)
        # JSON is YAML: no YAML writer needed in the bench's own venv.
        (d / f"{CONFIG}.yml").write_text(json.dumps(config, indent=1))
        if self.as_user:
            for p in (self.home, *self.home.rglob("*")):
                os.chown(p, self.as_user["user"], self.as_user["group"])

    def run(self, command: str, timeout: float = 300) -> str | None:
        """Run one command to its end; None, or why it failed. Its output goes to the log."""
        with self.log.open("ab") as f:
            f.write(f"\n### chameleon {command}\n".encode())
            f.flush()
            start = f.tell()
            try:
                res = subprocess.run(self._cmd(command), env=self.env, stdout=f, stderr=f,
                                     timeout=timeout, check=False, **self.as_user)  # fmt: skip
            except subprocess.TimeoutExpired:
                return f"chameleon {command}: no exit within {timeout:.0f} s"
        out = self.log.read_bytes()[start:].decode(errors="replace")
        out = _DAEMONIZE_EXIT.sub("", out)
        if res.returncode != 0 or any(w in out for w in _FAILED):
            return f"chameleon {command} exited {res.returncode}: {out[-800:]}"
        return None

    def start_replica(self) -> None:
        with self.log.open("ab") as f:
            f.write(b"\n### chameleon start_replica\n")
            f.flush()
            self.started = time.monotonic()
            self.proc = subprocess.Popen(self._cmd("start_replica"), env=self.env, stdout=f,
                                         stderr=f, **self.as_user)  # fmt: skip
        self.sampler = _TreeSampler(self.proc.pid)
        self.sampler.start()

    def alive(self) -> bool:
        if self.proc is None or self.proc.returncode is not None:
            return False
        with contextlib.suppress(OSError):
            state = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            return state not in ("Z", "X")
        return False

    def stop_replica(self, timeout: float = 60) -> tuple[Usage, float]:
        """``chameleon stop_replica`` (SIGINT to the pid in its pid file; the replica ends its
        read and replay processes and reaps them) while we reap the replica: stop_replica
        polls until the pid is gone, and a zombie child of ours would never be gone."""
        assert self.proc is not None and self.sampler is not None, "not started"
        t0 = time.monotonic()
        with self.log.open("ab") as f:
            stopper = subprocess.Popen(self._cmd("stop_replica"), env=self.env, stdout=f,
                                       stderr=f, **self.as_user)  # fmt: skip
        pid, deadline = self.proc.pid, t0 + timeout
        self.forced = 0
        while True:
            got, status, ru = os.wait4(pid, os.WNOHANG)
            if got == pid:
                break
            if not self.forced and time.monotonic() > t0 + STOP_GRACE_S:
                # A child that swallowed its SIGTERM (a bare except: in pg_chameleon) keeps
                # the main process in its exit-time join forever: kill the children; the
                # main process then reaps them (their rusage still counts) and exits.
                kids = [p for p in self.sampler._tree() if p != pid]
                for k in kids:
                    with contextlib.suppress(OSError):
                        os.kill(k, signal.SIGKILL)
                self.forced = len(kids) or -1
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)  # the read/replay children die with it (daemon)
                _, status, ru = os.wait4(pid, 0)
                break
            time.sleep(0.01)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        stop_s = time.monotonic() - t0
        try:
            stopper.wait(30)
        except subprocess.TimeoutExpired:
            stopper.kill()
            stopper.wait()
        self.sampler.halt.set()
        self.sampler.join()
        usage = Usage(
            self.proc.returncode,
            ru.ru_utime + ru.ru_stime,
            ru.ru_maxrss / 1024,
            self.sampler.peak_kb / 1024,
            self.sampler.ticks / _TICK,
        )
        return usage, stop_s
