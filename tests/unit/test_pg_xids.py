"""Snapshot visibility of 32-bit pgoutput xids, around xid wraparound too."""

from __future__ import annotations

from cdc_sync.sources.postgres.xids import XidSnapshot


def test_parse_and_sees() -> None:
    snap = XidSnapshot.parse("100:105:101,103")
    assert snap.sees("99") and snap.sees("100") and snap.sees("102") and snap.sees("104")
    assert not snap.sees("101") and not snap.sees("103")  # in progress when taken
    assert not snap.sees("105") and not snap.sees("4000")  # started after it


def test_no_running_transactions() -> None:
    snap = XidSnapshot.parse("7:7:")
    assert snap.sees("6") and not snap.sees("7")


def test_wraparound_epochs() -> None:
    # epoch 1, xmax just after the 32-bit wrap: xid 4294967290 is the previous epoch (old),
    # xid 3 is this epoch and newer than xmax.
    base = 1 << 32
    snap = XidSnapshot(base - 10, base + 2, frozenset({base - 5}))
    assert snap.sees(str((1 << 32) - 8))  # committed before the snapshot
    assert not snap.sees(str((1 << 32) - 5))  # was running
    assert not snap.sees("3")  # started after the snapshot, in the next epoch
    assert snap.sees("1")  # base + 1: below xmax, not running
