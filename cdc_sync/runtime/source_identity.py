"""Refuse to resume a checkpoint against a source server other than the one it came from."""

from __future__ import annotations

from cdc_sync.errors import PermanentError


def check_source_identity(stored: str | None, current: str) -> None:
    """Raise when the checkpoint was taken on another server than ``current``.

    ``stored`` is the identity saved with the checkpoint (None: none saved yet, e.g. a
    checkpoint older than this check; the caller then stores ``current``). Positions are
    only meaningful on the server that produced them: an LSN or binlog file:pos of another
    server would silently skip or repeat changes.
    """
    if stored is None or stored == current:
        return
    raise PermanentError(
        f"the source server changed: the checkpoint was taken on {stored}, the configured "
        f"source is {current}; its positions mean nothing on this server and the changes "
        "since the checkpoint cannot be read from it. If the source was rebuilt or replaced "
        "on purpose, re-snapshot: `cdc-sync offsets reset -p <pipeline>`, then run with "
        "`snapshot: initial` (or `cdc-sync snapshot -p <pipeline>`); otherwise point the "
        "source DSN back at the original server"
    )
