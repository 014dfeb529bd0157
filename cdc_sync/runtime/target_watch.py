"""Watches the pipeline's target session: says who blocks a long wait, cancels it on a stop."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import sqlalchemy as sa

from cdc_sync.runtime.stop import StopFlag

# A statement of ours waiting this long is reported (a batch normally takes well under 1 s);
# then again every _REPEAT_S while it still waits.
_WARN_AFTER_S = 10.0
_REPEAT_S = 60.0
_TICK_S = 0.5
_LOOK_S = 5.0

# The sessions holding what our statement waits for: who and since when, never their
# query text (it may hold customer data).
_PG_SELF = sa.text(
    "SELECT state, extract(epoch FROM clock_timestamp() - query_start)::float8 "
    "FROM pg_stat_activity WHERE pid = :pid"
)
_PG_BLOCKERS = sa.text(
    "SELECT b.pid, b.usename, b.application_name, b.state, b.client_addr::text, "
    "extract(epoch FROM clock_timestamp() - b.xact_start)::int, "
    # An earlier owner of this pipeline (same name, older session) idle inside its
    # transaction: paused or hung after losing the lease (see lease.end_stalled_writers).
    "b.application_name = me.application_name AND b.backend_start < me.backend_start "
    "AND b.state LIKE 'idle in transaction%' "
    "FROM pg_stat_activity b, pg_stat_activity me "
    "WHERE me.pid = :pid AND b.pid = ANY(pg_blocking_pids(:pid)) ORDER BY b.pid"
)
_PG_END = sa.text("SELECT pg_terminate_backend(:pid)")
_MY_SELF = sa.text(
    "SELECT COMMAND, STATE, TIME FROM information_schema.PROCESSLIST WHERE ID = :pid"
)


class TargetWatch:
    """A thread beside the pipeline. While its target session runs one statement for long
    (a DBA's open transaction holds a row or table lock it needs: PostgreSQL waits for ever
    by default), it logs ``target_write_waiting`` with the blocking sessions. Once a stop has
    waited ``grace`` seconds, it cancels that statement: the target transaction rolls back,
    the checkpoint stays before it, and the daemon exits instead of hanging until SIGKILL."""

    def __init__(
        self, engine: sa.Engine, conn: sa.Connection, stop: StopFlag, grace: float, log: Any
    ) -> None:
        raw = conn.connection.driver_connection
        assert raw is not None
        self._pg = raw if isinstance(raw, psycopg.Connection) else None
        self._pid = int(raw.info.backend_pid if self._pg is not None else raw.thread_id())
        self._engine, self._stop, self._grace, self._log = engine, stop, grace, log
        self.cancelled = False  # set when this watch cancelled a statement for a stop
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cdc-sync-target-watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)

    def _run(self) -> None:
        next_look = time.monotonic() + _WARN_AFTER_S
        while not self._closed.wait(_TICK_S):
            stopping = self._stop.is_set and self._stop_waited()
            if not stopping and time.monotonic() < next_look:
                continue  # a look costs a side query: every few seconds, each tick once stopping
            next_look = time.monotonic() + _LOOK_S
            try:
                with self._engine.connect() as side:
                    seconds = self._running_for(side)
                    if seconds is None:
                        continue
                    if stopping and seconds > self._grace:
                        self._cancel(side, seconds)
                        return
                    if seconds >= _WARN_AFTER_S:
                        self._warn(side, seconds)
                        next_look = time.monotonic() + _REPEAT_S
            except (sa.exc.SQLAlchemyError, psycopg.Error, OSError) as e:
                # Only a diagnosis: the pipeline reports a target that is really gone.
                self._log.debug("target_watch_failed", error_class=type(e).__name__)

    def _stop_waited(self) -> bool:
        at = self._stop.requested_at
        return at is not None and time.monotonic() - at > self._grace

    def _running_for(self, side: sa.Connection) -> float | None:
        """Seconds our session has been running its current statement (None: idle)."""
        if self._pg is not None:
            row = side.execute(_PG_SELF, {"pid": self._pid}).first()
            if row is None or row[0] != "active" or row[1] is None:
                return None
            return float(row[1])
        row = side.execute(_MY_SELF, {"pid": self._pid}).first()
        if row is None or str(row[0]).lower() == "sleep":
            return None
        return float(row[2])

    def _warn(self, side: sa.Connection, seconds: float) -> None:
        blockers: list[dict[str, object]] = []
        if self._pg is not None:
            for pid, user, app, state, addr, xact_s, stale in side.execute(
                _PG_BLOCKERS, {"pid": self._pid}
            ):
                blockers.append(
                    {"pid": pid, "user": user, "application": app, "state": state,
                     "client": addr, "transaction_seconds": xact_s}
                )  # fmt: skip
                if stale:
                    # Its commit is fenced anyway (lost lease); ended, it rolls back and
                    # frees the rows. end_stalled_writers does this at start only, but an
                    # earlier owner paused mid-statement turns idle only later.
                    ended = side.execute(_PG_END, {"pid": pid}).scalar()
                    side.commit()
                    self._log.warning("stalled_writer_ended", pid=pid, ended=bool(ended))
        self._log.warning(
            "target_write_waiting",
            seconds=round(seconds),
            backend_pid=self._pid,
            blocked_by=blockers,
            why="one statement of this pipeline has been running this long on the target; "
            "with blocked_by, those sessions hold a lock it needs (end their transaction)",
        )

    def _cancel(self, side: sa.Connection, seconds: float) -> None:
        self.cancelled = True
        self._log.warning(
            "stop_cancelled_target_statement", seconds=round(seconds), backend_pid=self._pid
        )
        if self._pg is not None:
            self._pg.cancel_safe(timeout=10)
        else:
            side.exec_driver_sql(f"KILL QUERY {self._pid}")
