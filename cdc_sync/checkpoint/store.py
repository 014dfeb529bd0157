"""Checkpoint store: the last applied source position per pipeline, monotonic and fenced."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from cdc_sync.errors import FencedError, PermanentError
from cdc_sync.records import Position
from cdc_sync.state.tables import state_tables


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What the target has durably applied for one pipeline."""

    pipeline: str
    position: Position
    source_tx: str | None
    committed_at: datetime | None  # source commit time of the transaction at ``position``
    updated_at: datetime  # when the target committed the checkpoint
    token: int
    owner: str | None = None
    lease_expires_at: datetime | None = None
    source_id: str | None = None


@dataclass(frozen=True, slots=True)
class LeaseHolder:
    """Another daemon's live lease on the pipeline."""

    owner: str
    expires_at: datetime | None


class CheckpointStore:
    """One pipeline's row in ``cdc_sync_checkpoints``.

    Every method runs in the caller's transaction and never commits: the checkpoint must
    commit atomically with the rows and audit it describes (invariant 1), which is what makes
    re-delivery after a crash harmless (everything after the checkpoint is re-applied,
    nothing before it is).
    """

    def __init__(self, pipeline: str, schema: str | None = None) -> None:
        self.pipeline = pipeline
        self.table = state_tables(schema).checkpoints
        self._ttl: timedelta | None = None

    # -- lease ---------------------------------------------------------------------------

    def acquire(self, conn: sa.Connection, owner: str, ttl: float) -> int:
        """Take the pipeline's lease unconditionally and return a new fencing token (one
        higher than any before); the previous holder, if still alive, fails its next ``save``
        with FencedError (invariant 6). The daemon uses ``try_acquire`` (a live holder is
        waited for); this forced take is for tests and operator tools. The caller commits to
        publish the new token."""
        got = self.try_acquire(conn, owner, ttl, holder_dead=lambda _owner: True)
        assert isinstance(got, int)
        return got

    def try_acquire(
        self,
        conn: sa.Connection,
        owner: str,
        ttl: float,
        holder_dead: Callable[[str], bool] | None = None,
    ) -> int | LeaseHolder:
        """Take the lease when nobody else holds a live one; returns the new fencing token,
        or the live holder (nothing changed: the caller rolls back and asks again later).

        Free means: no owner, the same ``owner`` (our own earlier attempt), an expired lease
        (the target's clock decides, so the daemons' clocks never matter), or
        ``holder_dead(owner)`` (a holder known to be gone, e.g. a dead pid on this host).
        The row lock makes two standbys racing for an expired lease take turns: one wins,
        the other then sees its fresh lease. The caller commits to publish the new token."""
        t = self.table
        row = conn.execute(
            sa.select(t.c.owner, t.c.lease_expires_at, t.c.lease_expires_at > _later(conn, 0.0))
            .where(t.c.pipeline == self.pipeline)
            .with_for_update()
        ).first()
        expires = _later(conn, float(ttl))
        if row is None:
            # First start of this pipeline. The savepoint keeps a concurrent first start's
            # duplicate key from aborting the caller's transaction; we then look again.
            try:
                with conn.begin_nested():
                    conn.execute(
                        t.insert().values(
                            pipeline=self.pipeline, token=1, owner=owner, lease_expires_at=expires
                        )
                    )
            except sa.exc.IntegrityError:
                return self.try_acquire(conn, owner, ttl, holder_dead)
            self._ttl = timedelta(seconds=ttl)
            return 1
        holder, until, live = row[0], row[1], bool(row[2])
        taken = live and holder is not None and holder != owner
        if taken and (holder_dead is None or not holder_dead(str(holder))):
            return LeaseHolder(str(holder), until)
        conn.execute(
            t.update()
            .where(t.c.pipeline == self.pipeline)
            .values(token=t.c.token + 1, owner=owner, lease_expires_at=expires)
        )
        self._ttl = timedelta(seconds=ttl)
        token = conn.execute(sa.select(t.c.token).where(t.c.pipeline == self.pipeline)).scalar_one()
        return int(token)

    def renew(self, conn: sa.Connection, token: int) -> bool:
        """Extend the lease by its TTL from now, fenced by ``token``; False when another
        daemon has taken it (the caller must not commit anything more). Runs in its own
        short transaction on a connection of its own (the caller commits)."""
        if self._ttl is None:
            return True
        t = self.table
        done = conn.execute(
            t.update()
            .where(t.c.pipeline == self.pipeline, t.c.token == token)
            .values(lease_expires_at=_later(conn, self._ttl.total_seconds()))
        )
        return done.rowcount == 1

    def holds(self, conn: sa.Connection, token: int) -> bool:
        """Whether ``token`` is still the pipeline's (read only: nothing is extended)."""
        if self._ttl is None:
            return True  # as renew: no lease kept
        t = self.table
        query = sa.select(t.c.token).where(t.c.pipeline == self.pipeline, t.c.token == token)
        return conn.execute(query).first() is not None

    def release(self, conn: sa.Connection, token: int) -> None:
        """Expire our lease now (clean stop), so a standby or the next start need not wait
        for the TTL; the owner stays for the record. Fenced: a lost lease is left alone."""
        t = self.table
        conn.execute(
            t.update()
            .where(t.c.pipeline == self.pipeline, t.c.token == token)
            .values(lease_expires_at=_later(conn, 0.0))
        )

    # -- position ------------------------------------------------------------------------

    def load(self, conn: sa.Connection) -> Checkpoint | None:
        """The stored checkpoint, or None if nothing was applied yet."""
        row = conn.execute(
            sa.select(self.table).where(self.table.c.pipeline == self.pipeline)
        ).first()
        return _to_checkpoint(row) if row is not None else None

    def list_all(self, conn: sa.Connection) -> list[Checkpoint]:
        """Every pipeline's checkpoint in this target (for ``offsets show``)."""
        rows = conn.execute(sa.select(self.table).order_by(self.table.c.pipeline))
        return [cp for r in rows if (cp := _to_checkpoint(r)) is not None]

    def save(
        self,
        conn: sa.Connection,
        position: Position,
        source_tx: str | None,
        committed_at: datetime | None,
        token: int,
    ) -> None:
        """Record ``position`` as applied, in the caller's (batch) transaction.

        Fenced: only the holder of the newest token may write (FencedError otherwise).
        Monotonic: a position before the stored one is a PermanentError (a source that went
        back in time, or a bug); the same position again is fine (idempotent re-save).
        """
        t = self.table
        current = self._locked(conn, token)
        if current.position is not None:
            stored = Position.parse(current.position)
            try:
                backwards = position < stored
            except TypeError:
                raise PermanentError(
                    f"pipeline {self.pipeline}: checkpoint {stored} and new position "
                    f"{position} are of different kinds; reset the offsets to switch sources"
                ) from None
            if backwards:
                raise PermanentError(
                    f"pipeline {self.pipeline}: refusing to move the checkpoint backwards from "
                    f"{stored} to {position}; use an explicit offsets reset for that"
                )
        values: dict[str, object] = {
            "position": position.to_text(),
            "source_tx": source_tx,
            "committed_at": committed_at,
            "updated_at": _later(conn, 0.0),
        }
        if self._ttl is not None:
            # Each committed batch renews the lease: lease_expires_at shows liveness.
            values["lease_expires_at"] = _later(conn, self._ttl.total_seconds())
        # The WHERE on token is the fence itself; the check above only gives a clear message.
        done = conn.execute(
            t.update().where(t.c.pipeline == self.pipeline, t.c.token == token).values(values)
        )
        if done.rowcount != 1:
            raise FencedError(f"pipeline {self.pipeline}: fencing token {token} is stale")

    def _locked(self, conn: sa.Connection, token: int) -> sa.Row[Any, Any]:
        """The row, locked (a concurrent acquire waits for our commit, so the token checked
        here is still the newest when the transaction commits); FencedError if not ours."""
        t = self.table
        current = conn.execute(
            sa.select(t.c.position, t.c.token)
            .where(t.c.pipeline == self.pipeline)
            .with_for_update()
        ).first()
        if current is None or current.token != token:
            raise FencedError(
                f"pipeline {self.pipeline}: another daemon took over (fencing token {token} "
                "is stale); this one must stop without committing"
            )
        return current

    def keep_alive(self, conn: sa.Connection, position: Position | None, token: int) -> bool:
        """While idle: renew the lease and, when ``position`` is past the stored checkpoint,
        move the checkpoint there (the source has sent everything before it and nothing is
        pending), keeping the last applied transaction's facts. Fenced like ``save``;
        returns whether the position moved."""
        t = self.table
        current = self._locked(conn, token)
        values: dict[str, object] = {}
        moved = False
        if position is not None:
            stored = Position.parse(current.position) if current.position is not None else None
            try:
                moved = stored is None or position > stored
            except TypeError:
                moved = False  # a different kind of position: only an explicit reset changes it
            if moved:
                values["position"] = position.to_text()
                values["updated_at"] = _later(conn, 0.0)
        if self._ttl is not None:
            values["lease_expires_at"] = _later(conn, self._ttl.total_seconds())
        if values:
            conn.execute(
                t.update().where(t.c.pipeline == self.pipeline, t.c.token == token).values(values)
            )
        return moved

    def reset(self, conn: sa.Connection, position: Position | None) -> int:
        """Set the checkpoint to ``position`` (None: forget it), backwards allowed, for the
        offsets CLI. Bumps the token so a running daemon is fenced off rather than
        overwriting the reset with its next batch. Returns the new token."""
        t = self.table
        text = position.to_text() if position is not None else None
        done = conn.execute(
            t.update()
            .where(t.c.pipeline == self.pipeline)
            .values(
                position=text,
                source_tx=None,
                committed_at=None,
                updated_at=_later(conn, 0.0),
                token=t.c.token + 1,
                owner=None,
                lease_expires_at=None,
            )
        )
        if done.rowcount == 0:
            conn.execute(t.insert().values(pipeline=self.pipeline, position=text, token=1))
        return int(
            conn.execute(sa.select(t.c.token).where(t.c.pipeline == self.pipeline)).scalar_one()
        )

    def set_source_id(self, conn: sa.Connection, source_id: str) -> str | None:
        """Remember the source server's identity; returns the one stored before (if any), so
        the caller can refuse to resume against a different server."""
        t = self.table
        before = conn.execute(
            sa.select(t.c.source_id).where(t.c.pipeline == self.pipeline)
        ).scalar_one_or_none()
        conn.execute(t.update().where(t.c.pipeline == self.pipeline).values(source_id=source_id))
        return before

    # -- offsets CLI (reset / replay) ----------------------------------------------------

    def lease_holder(self, conn: sa.Connection, lock: bool = False) -> str | None:
        """The owner while a daemon's lease is unexpired (server clock), else None.
        ``lock``: take the row lock, so no daemon can commit a batch or take the lease
        until the caller's transaction ends."""
        t = self.table
        query = sa.select(t.c.owner, t.c.lease_expires_at > _later(conn, 0.0)).where(
            t.c.pipeline == self.pipeline
        )
        row = conn.execute(query.with_for_update() if lock else query).first()
        if row is None or not row[1]:
            return None
        return str(row[0] or "unknown")


def _later(conn: sa.Connection, seconds: float) -> sa.ColumnElement[Any]:
    """The server's transaction time plus ``seconds``, in the dialect's own syntax (MySQL:
    microsecond precision, UTC as the session runs in UTC)."""
    if conn.dialect.name in ("mysql", "mariadb"):
        micros = round(seconds * 1_000_000)
        return sa.literal_column(f"CURRENT_TIMESTAMP(6) + INTERVAL {micros} MICROSECOND")
    if not seconds:
        return sa.func.now()
    return sa.func.now() + sa.text(f"interval '{seconds} seconds'")


def _to_checkpoint(row: sa.Row[Any]) -> Checkpoint | None:
    m = row._mapping
    if m["position"] is None:
        return None  # lease taken, nothing applied yet
    return Checkpoint(
        pipeline=str(m["pipeline"]),
        position=Position.parse(str(m["position"])),
        source_tx=m["source_tx"],
        committed_at=m["committed_at"],
        updated_at=m["updated_at"],
        token=int(m["token"]),
        owner=m["owner"],
        lease_expires_at=m["lease_expires_at"],
        source_id=m["source_id"],
    )
