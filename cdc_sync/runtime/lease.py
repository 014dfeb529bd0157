"""One active daemon per pipeline: wait for the lease, renew it, hand the slot over."""

from __future__ import annotations

import os
import socket
import threading
import time
from types import TracebackType
from typing import Any

import psycopg
import sqlalchemy as sa

from cdc_sync.checkpoint.store import CheckpointStore, LeaseHolder
from cdc_sync.config.models import Config, PostgresSource
from cdc_sync.errors import PermanentError, ShutdownRequested
from cdc_sync.runtime.events import EVENTS
from cdc_sync.runtime.stop import StopFlag
from cdc_sync.runtime.wiring import target_engine
from cdc_sync.sources.postgres.liveness import WatchedConnection

# A kill -9'd daemon on another host is taken over after at most TTL + one poll (< 15 s).
# The lease is renewed by a thread of its own every RENEW_SECONDS, whatever the pipeline is
# doing (one huge source transaction, a long snapshot chunk, a slow DDL): two renewals may
# fail in a row before a standby can take over a live daemon. A paused (SIGSTOP) or hung
# process stops renewing, which is exactly when it must lose the lease.
TTL_SECONDS = 10.0
RENEW_SECONDS = 3.0
POLL_SECONDS = 1.0
# How long the new holder waits for a stale walsender to release the replication slot.
_SLOT_WAIT_SECONDS = 30.0


class LeaseHeldError(PermanentError):
    """Another live daemon holds the pipeline (``run --until-caught-up`` does not wait)."""


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def holder_gone(owner: str) -> bool:
    """True only when ``owner`` provably no longer runs: a process of this host (same
    hostname) whose pid is gone or a zombie. Anything else waits for the lease to expire."""
    host, _, pid_text = owner.rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            # "pid (comm) S ...": the state follows the last ')'.
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def wait_for_lease(
    conn: sa.Connection,
    store: CheckpointStore,
    stop: StopFlag,
    log: Any,
    *,
    wait: bool,
) -> int:
    """Take the pipeline's lease and return its fencing token, waiting as a standby while
    another live daemon holds it (``wait=False``: LeaseHeldError instead). A stop request
    ends the wait (ShutdownRequested). The standby reports itself alive meanwhile: it is
    healthy, and the service manager's watchdog must not kill it."""
    owner = owner_id()
    waited: float | None = None
    while True:
        got = store.try_acquire(conn, owner, TTL_SECONDS, holder_gone)
        if not isinstance(got, LeaseHolder):
            conn.commit()
            if waited is not None:
                log.info("lease_acquired", waited_seconds=round(time.monotonic() - waited, 1))
            return got
        conn.rollback()  # releases the row lock try_acquire took
        if not wait:
            raise LeaseHeldError(
                f"pipeline {store.pipeline}: daemon {got.owner} is running it (lease until "
                f"{got.expires_at}); stop that daemon or let it do the work"
            )
        if waited is None:
            waited = time.monotonic()
            log.info("lease_waiting", holder=got.owner, lease_expires_at=str(got.expires_at))
            EVENTS.standing_by(store.pipeline)
        EVENTS.alive(store.pipeline)
        if stop.wait(POLL_SECONDS):
            raise ShutdownRequested("stop requested while waiting for the lease")


class LeaseKeeper:
    """Renews the lease from its own thread and connection until closed; ``close`` of a
    cleanly finished run also releases it, so the next daemon starts at once."""

    def __init__(self, engine: sa.Engine, store: CheckpointStore, token: int, log: Any) -> None:
        self._engine, self._store, self._token, self._log = engine, store, token, log
        self._done = threading.Event()
        self.lost = False
        self._thread = threading.Thread(
            target=self._run, name=f"lease-{store.pipeline}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        failures = 0
        while not self._done.wait(RENEW_SECONDS):
            try:
                with self._engine.connect() as conn:
                    held = self._store.renew(conn, self._token)
                    conn.commit()
            except Exception as e:  # noqa: BLE001  (the target may be briefly away: retry)
                failures += 1
                self._log.warning(
                    "lease_renew_failed", attempt=failures, error_class=type(e).__name__
                )
                continue
            failures = 0
            if not held:
                # The next save is fenced (FencedError): nothing more commits from here.
                self._lost()
                return

    def _lost(self) -> None:
        self.lost = True
        self._log.warning("lease_lost")
        # At once, not at the fenced commit: /readyz and pipeline_up must never show two
        # daemons applying one pipeline, and this one no longer does.
        EVENTS.standing_by(self._store.pipeline)

    def close(self, release: bool) -> None:
        self._done.set()
        self._thread.join()
        if not release and not self.lost:
            self._notice_loss()
        if release and not self.lost:
            release_lease(self._engine, self._store, self._token, self._log)

    def _notice_loss(self) -> None:
        """After a failure: the new owner may have ended our sessions before the renewal
        thread saw the lease gone. Say so now: the operator reads ``lease_lost``, not a bare
        retry. Read only: a failed run must not extend a lease a standby is waiting for."""
        try:
            with self._engine.connect() as conn:
                held = self._store.holds(conn, self._token)
                conn.rollback()
        except Exception:  # noqa: BLE001  (the target may be away: the retry finds out)
            return
        if not held:
            self._lost()

    def __enter__(self) -> LeaseKeeper:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        # Released only after a clean return; after an error the retry takes it back at
        # once (same owner), while a crash leaves it to expire.
        self.close(release=kind is None)


def release_lease(engine: sa.Engine, store: CheckpointStore, token: int, log: Any) -> None:
    """Expire our lease now, so a standby or an operator's ``offsets reset`` need not wait
    for the TTL. Only once nothing of ours can commit any more; fenced by ``token``, so a
    lease another daemon took meanwhile is left alone."""
    try:
        with engine.connect() as conn:
            store.release(conn, token)
            conn.commit()
    except Exception as e:  # noqa: BLE001  (the lease then simply expires)
        log.warning("lease_release_failed", error_class=type(e).__name__)


class KeptLease:
    """The lease a failed attempt kept for its retry (same owner: the retry takes it back at
    once). When no retry follows after all (retries used up, a stop during the backoff) the
    pipeline releases it on its way out (:meth:`release`)."""

    def __init__(self) -> None:
        self.token: int | None = None

    def release(self, config: Config, pipeline: str, log: Any) -> None:
        token, self.token = self.token, None
        if token is None:
            return
        schema = config.targets[config.pipelines[pipeline].target].state_schema
        engine = target_engine(config, pipeline, daemon=True)
        try:
            release_lease(engine, CheckpointStore(pipeline, schema=schema), token, log)
        finally:
            engine.dispose()


def evict_stale_reader(config: Config, pipeline: str, stop: StopFlag, log: Any) -> None:
    """PostgreSQL: a replication slot has one reader. Holding the lease, we own the slot: a
    walsender still attached belongs to a daemon that lost the lease (paused, partitioned)
    and would make START_REPLICATION fail until wal_sender_timeout. Terminate it and wait
    for the slot to be free. (MySQL needs nothing: a binlog reader with the same server_id
    replaces the old connection on the server.)"""
    sc = config.sources[config.pipelines[pipeline].source]
    if not isinstance(sc, PostgresSource):
        return
    slot = config.slot_for(pipeline)
    deadline = time.monotonic() + _SLOT_WAIT_SECONDS
    terminated: set[int] = set()
    try:
        # Watched: after a silent network cut this is the retry's first connection, and a
        # plain one would wait there until the peer resets it.
        with WatchedConnection.open(sc.dsn.get_secret_value(), autocommit=True) as conn:
            while True:
                row = conn.execute(
                    "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,)
                ).fetchone()
                pid = None if row is None or row[0] is None else int(row[0])
                if pid is None or time.monotonic() > deadline:
                    return
                if pid not in terminated:
                    terminated.add(pid)
                    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
                    log.warning("stale_slot_reader_terminated", slot=slot, pid=pid)
                if stop.wait(0.2):
                    raise ShutdownRequested("stop requested while freeing the slot")
    except psycopg.Error as e:
        # Not fatal here: starting the stream reports a slot that stays busy.
        log.warning("stale_slot_reader_not_terminated", slot=slot, error_class=type(e).__name__)


def end_stalled_writers(conn: sa.Connection, log: Any) -> None:
    """End the target sessions of this pipeline's earlier owner that sit idle inside a
    transaction (PostgreSQL targets). An owner paused or hung between its writes and its
    commit keeps its row locks: the new owner's writes of the same keys would wait for them
    for as long as it stays stopped. Its commit is fenced anyway, so nothing is lost; it
    rolls back. Same application name = same pipeline (wiring.target_engine)."""
    if conn.dialect.name != "postgresql":
        return  # MySQL: innodb_lock_wait_timeout fails the wait, and the retry tries again
    try:
        pids = conn.execute(
            sa.text(
                "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = current_setting('application_name') "
                "AND datname = current_database() AND pid <> pg_backend_pid() "
                "AND state IN ('idle in transaction', 'idle in transaction (aborted)')"
            )
        ).all()
        conn.commit()
    except sa.exc.DBAPIError as e:  # e.g. not allowed to signal that role: wait instead
        conn.rollback()
        log.warning("stalled_writer_not_ended", error_class=type(e.orig).__name__)
        return
    for pid, ended in pids:
        log.warning("stalled_writer_ended", pid=pid, ended=bool(ended))
