"""Replication transport: START_REPLICATION, CopyData reads, keepalives, standby status."""

from __future__ import annotations

import re
import select
import struct
import time
from collections.abc import Iterator

import psycopg
from psycopg.conninfo import conninfo_to_dict

from cdc_sync.errors import (
    CdcSyncError,
    PermanentError,
    TransientError,
    refused_setting,
)
from cdc_sync.sources.postgres.liveness import WatchedConnection
from cdc_sync.sources.postgres.values import SESSION_SETTINGS

XLOG, KEEPALIVE, IDLE, DRAINED = 0, 1, 2, 3
"""Kinds of :meth:`ReplicationStream.read` items: (kind, lsn, payload)."""

_XLOG_HEADER = 25  # 'w' + wal_start + wal_end + send_time
_Q = struct.Struct(">Q").unpack_from
_KEEPALIVE = struct.Struct(">QqB")  # wal_end, send_time, reply_requested
_STATUS = struct.Struct(">cQQQqB")  # 'r', write, flush, apply, client time, reply_requested
_PG_EPOCH_UNIX = 946_684_800
_SLOT_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_")
_DEFAULT_SILENCE_SECONDS = 60.0  # PostgreSQL's wal_receiver_timeout default
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}

# SQLSTATEs that heal by themselves: connection exceptions, admin shutdown / crash recovery,
# resource shortage, and 55006 (slot still held by a previous instance's walsender).
_TRANSIENT = ("08", "53", "57P", "58", "55006", "40001", "40P01")


def classify(err: psycopg.Error, where: str) -> CdcSyncError:
    """Transient or permanent, with a message holding neither DSN secrets nor row values."""
    refused = refused_setting(err, where)
    if refused is not None:
        return refused
    state = err.sqlstate or ""
    primary = err.diag.message_primary if err.diag else None
    # Only the primary message: DETAIL can carry row values; str(err) has no password.
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    text = f"{where}: {primary or first}"
    if state:
        text += f" (SQLSTATE {state})"
    if state.startswith(_TRANSIENT) or (not state and isinstance(err, psycopg.OperationalError)):
        return TransientError(text)
    return PermanentError(text)


def _sender_timeout(conn: psycopg.Connection[tuple[object, ...]]) -> float:
    """The server's wal_sender_timeout in seconds (it drops a receiver silent that long; we
    drop a silent walsender after as long), or the wal_receiver_timeout default if off."""
    row = conn.execute("SHOW wal_sender_timeout").fetchone()
    m = re.fullmatch(r"\s*(\d+)\s*(ms|s|min|h|d)?\s*", str(row[0]) if row else "")
    if m is None or int(m.group(1)) == 0:
        return _DEFAULT_SILENCE_SECONDS
    return int(m.group(1)) * _UNIT_SECONDS[m.group(2) or "ms"]


def lsn_text(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def session_options(dsn: str) -> str:
    """libpq ``options`` with our output settings appended to any the DSN already has."""
    ours = " ".join(f"-c {k}={v}" for k, v in SESSION_SETTINGS.items() if " " not in v)
    theirs = str(conninfo_to_dict(dsn).get("options") or "")
    return f"{theirs} {ours}".strip()


class ReplicationStream:
    """One walsender session. Single-threaded: ``read`` is a generator and ``ack`` is called
    between its items, so the socket is never used concurrently."""

    def __init__(
        self, dsn: str, slot: str, publication: str, poll_interval: float, status_interval: float
    ) -> None:
        if not slot or set(slot) - _SLOT_CHARS:
            raise PermanentError(f"invalid replication slot name {slot!r} (use a-z, 0-9, _)")
        self._dsn, self._slot, self._publication = dsn, slot, publication
        self._poll, self._status_every = poll_interval, status_interval
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._silence = _DEFAULT_SILENCE_SECONDS
        self._acked = 0
        self._next_status = 0.0

    def start(self, start_lsn: int, acked: int) -> None:
        """Connect and START_REPLICATION at ``start_lsn`` (0 = the slot's confirmed point).

        ``acked`` is the position already durable in the target (the checkpoint): the
        only value reported as flushed until ``ack`` raises it.
        """
        self._acked = acked
        try:
            # The dict form keeps the DSN (and its password) out of any string we build.
            # Watched: a silent peer must not hang the pipeline (see liveness).
            conn = WatchedConnection.open(
                self._dsn, replication="database", autocommit=True,
                options=session_options(self._dsn), application_name="cdc-sync",
            )  # fmt: skip
        except psycopg.Error as e:
            raise classify(e, "cannot open replication connection") from e
        self._conn = conn
        try:
            self._verify_settings(conn)
            self._silence = _sender_timeout(conn)
            pubs = self._publication.replace('"', '""').replace("'", "''")
            conn.execute(
                f'START_REPLICATION SLOT "{self._slot}" LOGICAL {lsn_text(start_lsn)} '
                f"(proto_version '1', publication_names '\"{pubs}\"')"
            )
        except psycopg.Error as e:
            self.close()
            if e.sqlstate == "42704":
                raise PermanentError(
                    f"replication slot {self._slot!r} does not exist; run prepare with "
                    f"create allowed, or: SELECT pg_create_logical_replication_slot("
                    f"'{self._slot}', 'pgoutput');"
                ) from e
            raise classify(e, "cannot start replication") from e
        self._next_status = time.monotonic() + self._status_every

    def _verify_settings(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        # Every value converter depends on these output formats; a pooler or a role setting
        # overriding them must stop us rather than mis-parse values.
        for name, want in SESSION_SETTINGS.items():
            row = conn.execute(f"SHOW {name}").fetchone()
            got = str(row[0]) if row else None
            if got is None or got.replace(" ", "").lower() != want.replace(" ", "").lower():
                raise PermanentError(
                    f"replication session setting {name} is {got!r}, need {want!r}; "
                    "it must be settable through the libpq options parameter"
                )

    def ack(self, lsn: int) -> None:
        """Raise the reported flush position (only ever to a durable commit end LSN)."""
        if lsn > self._acked:
            self._acked = lsn
            if self._conn is not None and not self._conn.closed:
                self._send_status(reply=False)

    def request_keepalive(self) -> None:
        self._send_status(reply=True)

    def _send_status(self, reply: bool) -> None:
        conn = self._conn
        if conn is None:
            return
        # INVARIANT 1: write, flush and apply are all the acked position, never what was
        # merely received: the server may recycle WAL up to whatever we report.
        lsn = self._acked
        now = int((time.time() - _PG_EPOCH_UNIX) * 1_000_000)
        pg = conn.pgconn
        try:
            pg.put_copy_data(_STATUS.pack(b"r", lsn, lsn, lsn, now, 1 if reply else 0))
            # Bounded: a peer that stopped reading must not hang us here either.
            give_up = time.monotonic() + self._silence
            while pg.flush() != 0:
                if time.monotonic() > give_up:
                    raise TransientError(
                        f"replication connection lost: the server took nothing for "
                        f"{self._silence:g} s"
                    )
                select.select([pg.socket], [pg.socket], [], self._poll)
                pg.consume_input()
        except psycopg.Error as e:
            raise classify(e, "replication connection lost") from e
        self._next_status = time.monotonic() + self._status_every

    def read(self) -> Iterator[tuple[int, int, bytes]]:
        """(XLOG, wal_start, payload) | (KEEPALIVE, wal_end, b"") | (IDLE, 0, b"") |
        (DRAINED, 0, b""): once after data, when nothing more has arrived yet."""
        conn = self._conn
        if conn is None:
            raise RuntimeError("stream not started")
        pg = conn.pgconn
        # Like wal_receiver_timeout: a healthy walsender answers the keepalive we request at
        # every idle poll at once, and speaks at least every wal_sender_timeout/2 even while
        # decoding a huge transaction or while we are busy elsewhere (what it sent then is
        # read before this is checked); a silent one is dead to us.
        heard = time.monotonic()
        fresh = False  # data arrived since the last DRAINED
        try:
            while True:
                n, buf = pg.get_copy_data(1)
                if n > 0:
                    heard = time.monotonic()
                    fresh = True
                    kind = buf[0]
                    if kind == 0x77:  # 'w' XLogData
                        yield XLOG, _Q(buf, 1)[0], bytes(buf[_XLOG_HEADER:])
                    elif kind == 0x6B:  # 'k' primary keepalive
                        wal_end, _sent, reply = _KEEPALIVE.unpack_from(buf, 1)
                        if reply:  # else the walsender drops us after wal_sender_timeout
                            self._send_status(reply=False)
                        yield KEEPALIVE, wal_end, b""
                    if time.monotonic() >= self._next_status:
                        self._send_status(reply=False)
                    continue
                if n < 0:
                    raise TransientError("replication stream ended by the server")
                if time.monotonic() >= self._next_status:
                    self._send_status(reply=False)
                if fresh:
                    ready, _, _ = select.select([pg.socket], [], [], 0)
                    if ready:
                        pg.consume_input()
                        continue
                    fresh = False
                    yield DRAINED, 0, b""
                ready, _, _ = select.select([pg.socket], [], [], self._poll)
                if not ready:
                    if time.monotonic() - heard >= self._silence:
                        raise TransientError(
                            "replication connection lost: no message from the server for "
                            f"{time.monotonic() - heard:.0f} s (wal_sender_timeout "
                            f"{self._silence:g} s)"
                        )
                    # Ask for a keepalive so the caller gets a Heartbeat with the server's
                    # position: that is how "caught up" is detected when nothing changes.
                    self._send_status(reply=True)
                    yield IDLE, 0, b""
                    continue
                pg.consume_input()
        except psycopg.Error as e:
            raise classify(e, "replication connection lost") from e
        except OSError as e:  # select on a socket the server closed
            raise TransientError(f"replication connection lost: {type(e).__name__}") from e

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
