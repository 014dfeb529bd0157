"""The daemon as a child process, with its own resource usage (``os.wait4``, not RUSAGE_CHILDREN).

``RUSAGE_CHILDREN`` would mix in initdb/pg_ctl and every earlier run; ``wait4`` on the pid gives
exactly this child's peak RSS and CPU seconds.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ChildStats:
    exit_code: int
    wall_s: float
    cpu_user_s: float
    cpu_sys_s: float
    peak_rss_mb: float

    @property
    def cpu_s(self) -> float:
        return self.cpu_user_s + self.cpu_sys_s


def _vm_hwm_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class _PeakRss(threading.Thread):
    """Samples the child's VmHWM every 50 ms. ``ru_maxrss`` cannot be used: the child is
    spawned by vfork, and Linux carries the parent's peak RSS (this bench process, grown by
    the content compares) into the child's maxrss at exec; VmHWM belongs to the new image."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True, name="peak-rss")
        self.pid, self.kib = pid, 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.kib = max(self.kib, _vm_hwm_kib(self.pid))
            self.halt.wait(0.05)


class Daemon:
    """``python -m cdc_sync <args> -c CONFIG`` with stdout/stderr appended to a log file."""

    def __init__(self, config: Path, env: dict[str, str], log: Path) -> None:
        self.config, self.env, self.log = config, env, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self._rss: _PeakRss | None = None

    def start(self, *args: str) -> None:
        # BENCH_DAEMON_PREFIX, e.g. "py-spy record -o prof.svg --": profile the daemon itself.
        prefix = shlex.split(os.environ.get("BENCH_DAEMON_PREFIX", ""))
        cmd = [*prefix, sys.executable, "-m", "cdc_sync", *args, "-c", str(self.config)]
        with self.log.open("ab") as f:
            f.write(f"\n### {' '.join(cmd)}\n".encode())
            f.flush()
            self.started = time.monotonic()
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=f, stderr=f)
        self._rss = _PeakRss(self.proc.pid)
        self._rss.start()

    def wait(self, timeout: float) -> ChildStats:
        """Reap the child (SIGKILL after ``timeout`` seconds) and return its own rusage."""
        assert self.proc is not None, "not started"
        pid = self.proc.pid
        deadline = time.monotonic() + timeout
        while True:
            if self._rss is not None:  # the last sample before exit
                self._rss.kib = max(self._rss.kib, _vm_hwm_kib(pid))
            got, status, ru = os.wait4(pid, os.WNOHANG)
            if got == pid:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                _, status, ru = os.wait4(pid, 0)
                break
            time.sleep(0.005)
        wall = time.monotonic() - self.started
        code = os.waitstatus_to_exitcode(status)
        self.proc.returncode = code  # reaped here: keep Popen from waiting again
        hwm = 0
        if self._rss is not None:
            self._rss.halt.set()
            self._rss.join(1)
            hwm = self._rss.kib
        return ChildStats(
            exit_code=code,
            wall_s=wall,
            cpu_user_s=ru.ru_utime,
            cpu_sys_s=ru.ru_stime,
            peak_rss_mb=(hwm or ru.ru_maxrss) / 1024,  # KiB on Linux
        )

    def run(self, *args: str, timeout: float = 3600) -> ChildStats:
        self.start(*args)
        return self.wait(timeout)

    def alive(self) -> bool:
        """Running (not exited), checked without reaping: the rusage must stay collectable."""
        if self.proc is None or self.proc.returncode is not None:
            return False
        try:
            state = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state not in ("Z", "X")

    def terminate(self, timeout: float = 60) -> tuple[ChildStats, float]:
        """SIGTERM, then wait; returns the stats and the seconds the stop took."""
        assert self.proc is not None, "not started"
        t0 = time.monotonic()
        # os.kill, not Popen.send_signal: that one polls and could reap the child (rusage lost).
        os.kill(self.proc.pid, signal.SIGTERM)
        stats = self.wait(timeout)
        return stats, time.monotonic() - t0

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
