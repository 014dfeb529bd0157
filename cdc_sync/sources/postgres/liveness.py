"""Dead-peer detection for the psycopg connections to PostgreSQL, source and target alike.

TCP keepalives find a peer that vanished while the connection idles. They do not help
while data waits to be acknowledged (a cut during a query), nor against a peer whose kernel
still answers while nothing comes back (a hung server or pooler, a proxy or middlebox that
stopped forwarding): a query then waits forever. ``WatchedConnection`` notices both.

The detection time is ``tcp_user_timeout`` (libpq, milliseconds) when the DSN sets it,
else ``DEAD_PEER_SECONDS``; libpq parameters the DSN sets always win over ours. We do not
set ``tcp_user_timeout`` ourselves: the kernel would also abort a COPY whose server stopped
reading for that long while it waits for a lock, which the watch tells from a dead peer.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg.abc import RV, PQGen
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow

from cdc_sync import logs

DEAD_PEER_SECONDS = 30.0
"""Default time to notice a silent peer (a DSN's ``tcp_user_timeout`` overrides it)."""

_WAIT_INTERVAL = 0.1  # psycopg's own default: how often a wait wakes up with nothing ready


def dead_peer_seconds(dsn: str) -> float:
    value = conninfo_to_dict(dsn).get("tcp_user_timeout")
    try:
        ms = float(str(value)) if value is not None else 0.0
    except ValueError:
        ms = 0.0  # libpq refuses it when connecting, with its own message
    return ms / 1000 if ms > 0 else DEAD_PEER_SECONDS


def network_params(dsn: str) -> dict[str, Any]:
    """libpq connect / keepalive parameters that notice a dead peer within
    ``dead_peer_seconds``, for those the DSN does not set itself."""
    seconds = dead_peer_seconds(dsn)
    ours: dict[str, Any] = {
        "keepalives": 1,
        "keepalives_idle": max(1, round(seconds / 3)),
        "keepalives_interval": max(1, round(seconds / 6)),
        "keepalives_count": 4,
    }
    # A connection not established within the dead-peer time is no better (at most 10 s).
    ours["connect_timeout"] = min(10, max(2, round(seconds)))
    given = conninfo_to_dict(dsn)
    return {k: v for k, v in ours.items() if k not in given}


class PeerSilentError(psycopg.OperationalError):
    """The server sent nothing for too long and does not show our session busy (or could
    not be asked): the connection is closed. No SQLSTATE, so it classifies as transient."""


class WatchedConnection(psycopg.Connection[TupleRow]):
    """A psycopg connection whose waits for the server are bounded.

    When the server has sent nothing for two thirds of the detection time while we wait
    for it, a second connection asks ``pg_stat_activity`` whether our backend is running a
    statement (a lock wait, a long DDL, a synchronous-commit wait are not failures): if so
    the wait goes on, otherwise, or if the server cannot be asked within the remaining
    third, the connection is closed and ``PeerSilentError`` raised.
    """

    _probe_dsn: str | None = None  # None: no probe (the probe's own connection)
    _silence = DEAD_PEER_SECONDS * 2 / 3
    _given_up: str | None = None  # why the connection was closed

    @classmethod
    def open(cls, dsn: str, *, probe: bool = True, **kwargs: Any) -> WatchedConnection:
        """``psycopg.connect(dsn, **kwargs)`` with ``network_params`` and the watch."""
        conn = cls.connect(dsn, **{**network_params(dsn), **kwargs})
        conn._silence = dead_peer_seconds(dsn) * 2 / 3
        conn._probe_dsn = dsn if probe else None
        return conn

    def wait(
        self, gen: PQGen[RV], interval: float = _WAIT_INTERVAL, timeout: float | None = None
    ) -> RV:
        try:
            # Most waits of a COPY or a big result find their message already buffered: no
            # watch (a generator per message, measured ~40 % of a snapshot read) for those.
            wanted = next(gen)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        try:
            return super().wait(self._watched(gen, wanted), interval, timeout)
        except PeerSilentError as e:
            self._given_up = str(e)
            if self._probe_dsn is not None:  # the probe's own failure is only a "no"
                logs.get().warning(
                    "connection_given_up",
                    host=self.info.host,
                    port=self.info.port,
                    application=self.info.parameter_status("application_name"),
                    error=str(e),
                )
            self.close()  # the protocol state is unknown: never reuse this connection
            raise

    def rollback(self) -> None:
        # The clean-up after a give-up then reports its cause, not "the connection is closed".
        if self._given_up is not None:
            raise PeerSilentError(self._given_up)
        super().rollback()

    def _watched(self, gen: PQGen[RV], wanted: Any) -> PQGen[RV]:
        # psycopg resumes the generator with Ready.NONE (0) each `interval` with nothing
        # ready (psycopg >= 3.3), so the silence is measured here.
        heard = time.monotonic()
        while True:
            ready = yield wanted
            if ready:
                heard = time.monotonic()
            elif time.monotonic() - heard >= self._silence:
                if not self._busy():
                    raise PeerSilentError(
                        f"no answer from the server for {time.monotonic() - heard:.0f} s "
                        "and it does not show this session busy: connection given up"
                    )
                heard = time.monotonic()
            try:
                wanted = gen.send(ready)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    def _busy(self) -> bool:
        """Whether the server shows our backend running a statement (False: cannot ask)."""
        dsn = self._probe_dsn
        if dsn is None:
            return False
        pid = self.pgconn.backend_pid
        try:
            with WatchedConnection.open(
                dsn,
                probe=False,
                autocommit=True,
                connect_timeout=max(2, round(self._silence / 2)),
                application_name="cdc-sync:probe",
            ) as conn:
                row = conn.execute(
                    "SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,)
                ).fetchone()
        except psycopg.Error:
            return False
        return row is not None and row[0] == "active"
