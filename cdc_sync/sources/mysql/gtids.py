"""GTID state as text: MariaDB ``domain-server-seq`` lists and MySQL executed GTID sets."""

from __future__ import annotations

from pymysqlreplication.gtid import Gtid, GtidSet


class MariaGtidState:
    """Per-domain last GTID; text is the comma-separated list ordered by domain."""

    def __init__(self, text: str = "") -> None:
        self.last: dict[int, tuple[int, int]] = {}  # domain -> (server_id, seq)
        for part in filter(None, (p.strip() for p in text.split(","))):
            d, s, n = (int(x) for x in part.split("-"))
            self.last[d] = (s, n)
        self._text: str | None = None

    def seen(self, gtid: str) -> bool:
        """Whether ``gtid`` (d-s-n) is at or before this state in its domain."""
        d, _, n = map(int, gtid.split("-"))  # per transaction: map() over a generator
        have = self.last.get(d)
        return have is not None and n <= have[1]

    def add(self, gtid: str) -> None:
        d, s, n = map(int, gtid.split("-"))
        self.last[d] = (s, n)
        self._text = None

    def missing_from(self, available: MariaGtidState) -> list[str]:
        """Domains where ``available`` (state at the oldest binlog) is past this state."""
        out = []
        for d, (_, n) in sorted(available.last.items()):
            mine = self.last.get(d)
            if n > 0 and (mine is None or mine[1] < n):
                out.append(f"domain {d}")
        return out

    def ahead_of(self, head: MariaGtidState) -> list[str]:
        """Domains where this state is past ``head`` (the server's binlog position): a
        position the server never wrote."""
        out = []
        for d, (_, n) in sorted(self.last.items()):
            have = head.last.get(d)
            if n > 0 and (have is None or have[1] < n):
                out.append(f"domain {d}")
        return out

    def text(self) -> str:
        if self._text is None:
            self._text = ",".join(f"{d}-{s}-{n}" for d, (s, n) in sorted(self.last.items()))
        return self._text


class MysqlGtidState:
    """A MySQL executed GTID set, advanced by one GTID per transaction."""

    def __init__(self, text: str = "") -> None:
        self._set = GtidSet(text.replace("\n", "") or None)
        self._text: str | None = None

    def seen(self, gtid: str) -> bool:
        return bool(Gtid(gtid) in self._set)

    def add(self, gtid: str) -> None:
        self._set = self._set + Gtid(gtid)
        self._text = None

    def text(self) -> str:
        if self._text is None:
            self._text = str(self._set)
        return self._text


GtidState = MariaGtidState | MysqlGtidState
