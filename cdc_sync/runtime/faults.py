"""Named fault points for the fault-injection suite: no-ops unless CDC_SYNC_FAULT is set."""

from __future__ import annotations

import os
import signal

POINTS = ("after_decode", "mid_batch", "dead_letter_write", "checkpoint_write", "after_commit")
"""Where ``CDC_SYNC_FAULT=<point>[@<n>]`` SIGKILLs the daemon, the n-th time (default 1st)
it gets there: after a change is decoded; after a flush wrote rows into the still-open
target transaction; after dead letters were written into it; after the checkpoint was
written, before the commit; after the target commit, before the source is acknowledged."""


def _parse(spec: str) -> tuple[str, int] | None:
    if not spec:
        return None
    name, _, n = spec.partition("@")
    if name not in POINTS or (n and not n.isdigit()):
        # A typo must not pass as "the fault never fired": the test would prove nothing.
        raise SystemExit(f"CDC_SYNC_FAULT={spec!r}: expected one of {POINTS}, optionally @<n>")
    return name, int(n or 1)


_WANT = _parse(os.environ.get("CDC_SYNC_FAULT", ""))
_seen = 0


def point(name: str) -> None:
    """Kill this process here if the fault spec names this point (and its count is up)."""
    global _seen  # noqa: PLW0603  (one counter per process, by design)
    if _WANT is None or _WANT[0] != name:
        return
    _seen += 1
    if _seen >= _WANT[1]:
        os.kill(os.getpid(), signal.SIGKILL)
