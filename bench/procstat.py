"""CPU seconds a PostgreSQL server spent: the postmaster, its live children and reaped ones.

The postmaster's ``cutime``/``cstime`` hold the CPU of backends that already exited (it waits
for them), so nothing is lost when a connection closes between two readings.
"""

from __future__ import annotations

import os
from pathlib import Path

from cdc_sync.testing.pgserver import PgServer

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # fields from 3 (state) on


def server_cpu_s(server: PgServer) -> float:
    try:
        pm = int((server.datadir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")
    # A backend reaped while the children are scanned would be in neither reading (its
    # /proc entry gone, the postmaster's cutime read before): a connection closed just
    # before a measurement then lands in the next one. Rescan until no reap happened.
    for _ in range(20):
        first = _own_ticks(pm)
        if first is None:
            return float("nan")
        kids = _children_ticks(pm)
        if _own_ticks(pm) == first:
            return (first + kids) / _TICK
    return float("nan")


def _own_ticks(pm: int) -> int | None:
    f = _stat(pm)
    return None if f is None else sum(int(x) for x in f[11:15])  # utime stime cutime cstime


def _children_ticks(pm: int) -> int:
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        c = _stat(int(entry.name))
        if c is not None and int(c[1]) == pm:  # ppid is field 4
            ticks += int(c[11]) + int(c[12])
    return ticks
