"""Row images of binlog rows events → canonical value tuples (pure, no I/O).

Our own decoder rather than the library's ``RowsEvent.rows``: the library maps zero dates
('0000-00-00', '2020-00-05') to None, so a NULL and a zero date become indistinguishable,
builds a dict per row, and returns local-time TIMESTAMPs; decoding here keeps NULL (the null
bitmap) apart from zero dates (a RowLevelError), and is several times faster.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from pymysqlreplication.json_binary import parse_json

from cdc_sync.errors import PermanentError, RowLevelError
from cdc_sync.records import JsonText, Row, RowProblem, TableId
from cdc_sync.sources.mysql import columns as ct
from cdc_sync.sources.mysql.columns import ColumnSpec

Reader = Callable[[bytes, int], tuple[object, int]]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DIG2BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)
_FSP_BYTES = (0, 1, 1, 2, 2, 3, 3)
_INT_STRUCTS = {
    (ct.TINY, False): struct.Struct("<b"), (ct.TINY, True): struct.Struct("<B"),
    (ct.SHORT, False): struct.Struct("<h"), (ct.SHORT, True): struct.Struct("<H"),
    (ct.LONG, False): struct.Struct("<i"), (ct.LONG, True): struct.Struct("<I"),
    (ct.LONGLONG, False): struct.Struct("<q"), (ct.LONGLONG, True): struct.Struct("<Q"),
    (ct.FLOAT, False): struct.Struct("<f"), (ct.DOUBLE, False): struct.Struct("<d"),
}  # fmt: skip


class ZeroDateError(ValueError):
    """A zero or partial-zero date / datetime / timestamp: no canonical value exists.
    ``end``: the offset after the value (the generic readers know it), so that the rest of
    the row can still be read; -1 from the generated decoders, which re-read the row."""

    def __init__(self, end: int = -1) -> None:
        super().__init__()
        self.end = end


def zero_date(table: TableId, column: str, type_name: str) -> RowProblem:
    """A row's refusal for a zero or partial-zero date (the binlog decoder and the query
    reads say the same): table, column and type, never the value."""
    return RowProblem(
        column,
        f"table {table}: column {column!r} ({type_name}) holds a zero or partial-zero date, "
        "which has no exact value outside MySQL; fix the row at the source (a real date or "
        "NULL) or exclude the table",
    )


def bad_text(table: TableId, column: str, type_name: str, charset: str | None) -> RowProblem:
    """A row's refusal for text bytes its character set does not define; never the bytes."""
    return RowProblem(
        column,
        f"table {table}: column {column!r} ({type_name}) holds bytes that are not valid "
        f"{charset} text; fix the row at the source or convert the column to utf8mb4",
    )


def _fixed(st: struct.Struct) -> Reader:
    unpack, size = st.unpack_from, st.size

    def read(d: bytes, o: int) -> tuple[object, int]:
        return unpack(d, o)[0], o + size

    return read


def _int24(signed: bool) -> Reader:
    def read(d: bytes, o: int) -> tuple[object, int]:
        return int.from_bytes(d[o : o + 3], "little", signed=signed), o + 3

    return read


class BadTextError(ValueError):
    """Bytes a text column's character set does not define (a single-byte set with holes,
    bytes written under a lax sql_mode): one row's problem, not the pipeline's. ``end`` as
    for :class:`ZeroDateError`."""

    def __init__(self, end: int) -> None:
        super().__init__()
        self.end = end


def _string(prefix: int, encoding: str | None, pad_to: int = 0) -> Reader:
    def read(d: bytes, o: int) -> tuple[object, int]:
        n = int.from_bytes(d[o : o + prefix], "little")
        o += prefix
        raw = d[o : o + n]
        if encoding is not None:
            try:
                return raw.decode(encoding), o + n
            except UnicodeDecodeError:
                raise BadTextError(o + n) from None
        # BINARY(n): the server strips trailing zero bytes in the row image; they are part
        # of the value (BINARY pads with 0x00), so put them back.
        return (raw.ljust(pad_to, b"\x00") if pad_to else bytes(raw)), o + n

    return read


Group = tuple[int, int, int]  # (shift, mask, 10**digits) of one base-10^9 digit group


def decimal_layout(precision: int, scale: int) -> tuple[int, list[Group], list[Group]]:
    """MySQL's binary DECIMAL: big-endian base-10^9 groups (a shorter leading / trailing one),
    sign in the top bit, negatives stored as the one's complement. Returns the byte size and
    the integral and fractional groups, most significant first."""
    integral = precision - scale
    int_layout = [(_DIG2BYTES[integral % 9], integral % 9)] * bool(integral % 9)
    int_layout += [(4, 9)] * (integral // 9)
    frac_layout = [(4, 9)] * (scale // 9) + [(_DIG2BYTES[scale % 9], scale % 9)] * bool(scale % 9)
    size = sum(n for n, _ in int_layout + frac_layout)
    groups: list[Group] = []
    shift = 8 * size
    for n, digits in int_layout + frac_layout:
        shift -= 8 * n
        groups.append((shift, (1 << (8 * n)) - 1, 10**digits))
    return size, groups[: len(int_layout)], groups[len(int_layout) :]


def decimal_reader(precision: int, scale: int) -> Reader:
    """Reads one DECIMAL(precision, scale) value (layout: :func:`decimal_layout`)."""
    size, int_groups, frac_groups = decimal_layout(precision, scale)
    top, ones = 1 << (8 * size - 1), (1 << (8 * size)) - 1

    def read(d: bytes, o: int) -> tuple[object, int]:
        v = int.from_bytes(d[o : o + size], "big")
        negative = not v & top
        v ^= ones ^ top if negative else top
        iv = fv = 0
        for sh, mask, p in int_groups:
            iv = iv * p + ((v >> sh) & mask)
        for sh, mask, p in frac_groups:
            fv = fv * p + ((v >> sh) & mask)
        sign = "-" if negative else ""
        text = f"{sign}{iv}.{fv:0{scale}d}" if scale else f"{sign}{iv}"
        return Decimal(text), o + size

    return read


def _frac(d: bytes, o: int, fsp: int, signed: bool) -> int:
    """Fractional seconds of TIME2 / DATETIME2 / TIMESTAMP2, in microseconds."""
    n = _FSP_BYTES[fsp]
    if not n:
        return 0
    v = int.from_bytes(d[o : o + n], "big", signed=signed)
    return v * (10_000, 100, 1)[n - 1]


def _date(d: bytes, o: int) -> tuple[object, int]:
    v = int.from_bytes(d[o : o + 3], "little")
    day, month, year = v & 31, (v >> 5) & 15, v >> 9
    if not (year and month and day):
        raise ZeroDateError(o + 3)
    return date(year, month, day), o + 3


def datetime2_reader(fsp: int) -> Reader:
    size = 5 + _FSP_BYTES[fsp]

    def read(d: bytes, o: int) -> tuple[object, int]:
        v = int.from_bytes(d[o : o + 5], "big") - 0x8000000000
        ymd, hms = v >> 17, v & 0x1FFFF
        ym, day = ymd >> 5, ymd & 31
        year, month = divmod(ym, 13)
        if not (year and month and day):
            raise ZeroDateError(o + size)
        us = _frac(d, o + 5, fsp, True)
        return datetime(year, month, day, hms >> 12, (hms >> 6) & 63, hms & 63, us), o + size

    return read


def timestamp2_reader(fsp: int) -> Reader:
    size = 4 + _FSP_BYTES[fsp]

    def read(d: bytes, o: int) -> tuple[object, int]:
        secs = int.from_bytes(d[o : o + 4], "big")
        us = _frac(d, o + 4, fsp, False)
        if secs == 0 and us == 0:
            raise ZeroDateError(o + size)  # '0000-00-00 00:00:00' is stored as 0
        # The binlog holds the instant as UTC seconds, whatever the writer's time_zone.
        return _EPOCH + timedelta(seconds=secs, microseconds=us), o + size

    return read


def time2_reader(fsp: int) -> Reader:
    """TIME(fsp): 'packed' = intpart << 24 | frac, offset-binary, negatives allowed."""
    n = _FSP_BYTES[fsp]
    size = 3 + n

    def read(d: bytes, o: int) -> tuple[object, int]:
        if n == 3:
            packed = int.from_bytes(d[o : o + 6], "big") - 0x800000000000
        else:
            intpart = int.from_bytes(d[o : o + 3], "big") - 0x800000
            frac = int.from_bytes(d[o + 3 : o + 3 + n], "big") if n else 0
            if intpart < 0 and frac:
                # The fraction is stored as a positive complement of the next integer.
                intpart += 1
                frac -= 1 << (8 * n)
            packed = (intpart << 24) + frac * (10_000 if n == 1 else 100)
        sign = -1 if packed < 0 else 1
        packed = abs(packed)
        hms, us = packed >> 24, packed & 0xFFFFFF
        hours, minutes, secs = (hms >> 12) & 0x3FF, (hms >> 6) & 63, hms & 63
        delta = timedelta(hours=hours, minutes=minutes, seconds=secs, microseconds=us)
        return sign * delta, o + size

    return read


def _old_datetime(d: bytes, o: int) -> tuple[object, int]:
    v = int.from_bytes(d[o : o + 8], "little")
    ymd, hms = divmod(v, 1_000_000)
    y, md = divmod(ymd, 10_000)
    m, day = divmod(md, 100)
    if not (y and m and day):
        raise ZeroDateError(o + 8)
    hh, ms = divmod(hms, 10_000)
    return datetime(y, m, day, hh, ms // 100, ms % 100), o + 8


def _old_time(d: bytes, o: int) -> tuple[object, int]:
    v = int.from_bytes(d[o : o + 3], "little", signed=True)
    sign, v = (-1 if v < 0 else 1), abs(v)
    hh, ms = divmod(v, 10_000)
    return sign * timedelta(hours=hh, minutes=ms // 100, seconds=ms % 100), o + 3


def _old_timestamp(d: bytes, o: int) -> tuple[object, int]:
    secs = int.from_bytes(d[o : o + 4], "little")
    if secs == 0:
        raise ZeroDateError(o + 4)
    return _EPOCH + timedelta(seconds=secs), o + 4


def _year(d: bytes, o: int) -> tuple[object, int]:
    v = d[o]
    return (v + 1900 if v else 0), o + 1


def _enum(size: int, labels: Sequence[str]) -> Reader:
    def read(d: bytes, o: int) -> tuple[object, int]:
        i = int.from_bytes(d[o : o + size], "little")
        # Index 0 is MySQL's '' error value (invalid input in non-strict mode).
        return (labels[i - 1] if 0 < i <= len(labels) else ""), o + size

    return read


def _set(size: int, labels: Sequence[str]) -> Reader:
    def read(d: bytes, o: int) -> tuple[object, int]:
        mask = int.from_bytes(d[o : o + size], "little")
        return ",".join(lb for i, lb in enumerate(labels) if mask >> i & 1), o + size

    return read


def _bit(bits: int) -> Reader:
    size = (bits + 7) // 8

    def read(d: bytes, o: int) -> tuple[object, int]:
        return format(int.from_bytes(d[o : o + size], "big"), f"0{bits}b"), o + size

    return read


def _texts(v: object) -> object:
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, dict):
        return {_texts(k): _texts(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_texts(x) for x in v]
    return v


def _mysql_json(prefix: int) -> Reader:
    def read(d: bytes, o: int) -> tuple[object, int]:
        n = int.from_bytes(d[o : o + prefix], "little")
        o += prefix
        raw = d[o : o + n]
        value = _texts(parse_json(raw[0], raw[1:])) if n else None
        # MySQL's own text form: ", " and ": " separators, non-ASCII kept.
        text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
        return JsonText(text), o + n

    return read


def _json_text(inner: Reader) -> Reader:
    def read(d: bytes, o: int) -> tuple[object, int]:
        v, o = inner(d, o)
        return JsonText(str(v)), o

    return read


def reader(spec: ColumnSpec) -> Reader:
    """The decoding function for one column's bytes in a row image."""
    t = spec.type
    st = _INT_STRUCTS.get((t, spec.unsigned and t not in (ct.FLOAT, ct.DOUBLE)))
    if st is not None:
        return _fixed(st)
    if t == ct.INT24:
        return _int24(not spec.unsigned)
    if t in (ct.VARCHAR, ct.STRING):
        prefix = 2 if spec.max_length > 255 else 1
        if spec.binary:
            return _string(prefix, None, spec.max_length if t == ct.STRING else 0)
        return _string(prefix, spec.encoding)
    if t == ct.BLOB:
        text = _string(spec.length_size, None if spec.binary else spec.encoding)
        return _json_text(text) if spec.is_json else text
    dispatch: dict[int, Callable[[], Reader]] = {
        ct.NEWDECIMAL: lambda: decimal_reader(spec.precision, spec.decimals),
        ct.DATE: lambda: _date,
        ct.DATETIME2: lambda: datetime2_reader(spec.decimals),
        ct.TIMESTAMP2: lambda: timestamp2_reader(spec.decimals),
        ct.TIME2: lambda: time2_reader(spec.decimals),
        ct.DATETIME: lambda: _old_datetime,
        ct.TIME: lambda: _old_time,
        ct.TIMESTAMP: lambda: _old_timestamp,
        ct.YEAR: lambda: _year,
        ct.ENUM: lambda: _enum(spec.size, spec.labels),
        ct.SET: lambda: _set(spec.size, spec.labels),
        ct.BIT: lambda: _bit(spec.bits),
        ct.JSON: lambda: _mysql_json(spec.length_size),
    }
    make = dispatch.get(t)
    if make is None:
        raise PermanentError(f"column {spec.name!r}: binlog column type {t} cannot be decoded")
    return make()


class RowDecoder:
    """Decodes the row images of one table-map version (FULL images only).

    ``images`` is generated per table version: the column loop unrolled, common types read
    inline (measured ~2x the closure-per-column loop on the bench table), the loop over the
    event's images inside. On any exception it re-reads the image with the generic loop
    (``_checked_image``), which raises exactly what it always raised (RowLevelError naming
    the column).
    """

    def __init__(self, table: TableId, specs: Sequence[ColumnSpec]) -> None:
        self.table, self.specs = table, tuple(specs)
        self._readers = tuple(reader(s) for s in specs)
        self._null_bytes = (len(specs) + 7) // 8
        self.full_mask = (1 << len(specs)) - 1
        self.problems: dict[int, RowProblem] = {}  # of the last event decoded, by image
        from cdc_sync.sources.mysql.rowgen import generate  # noqa: PLC0415 (rowgen uses us)

        self.images = generate(self.specs, self._readers, self._checked_image)

    def _checked_image(self, d: bytes, o: int, index: int) -> tuple[Row, int]:
        """Image number ``index`` of the event, at offset ``o``: (values, offset after it).
        A zero date is None in the values and noted in ``problems`` (the row is refused
        later, by ``on_error``); bytes that cannot be decoded at all stop here."""
        nb = self._null_bytes
        nulls = int.from_bytes(d[o : o + nb], "little")
        o += nb
        out: list[object] = []
        append = out.append
        for i, read in enumerate(self._readers):
            if nulls >> i & 1:
                append(None)
                continue
            try:
                v, o = read(d, o)
            except (ZeroDateError, BadTextError) as e:
                s = self.specs[i]
                if e.end < 0:  # the generic readers always know where the value ends
                    raise self._undecodable(s, e) from None
                v, o = None, e.end
                if index not in self.problems:  # the row's first such column names it
                    self.problems[index] = (
                        zero_date(self.table, s.name, s.type_name())
                        if isinstance(e, ZeroDateError)
                        else bad_text(self.table, s.name, s.type_name(), s.charset)
                    )
            except (UnicodeDecodeError, ValueError, IndexError) as e:
                raise self._undecodable(self.specs[i], e) from None
            append(v)
        return tuple(out), o

    def _undecodable(self, s: ColumnSpec, e: Exception) -> RowLevelError:
        return RowLevelError(
            f"table {self.table}: column {s.name!r} ({s.type_name()}) could not be "
            f"decoded from the binlog ({type(e).__name__})"
        )

    def rows(self, d: bytes) -> list[Row]:
        """The event's row images; ``problems`` says which hold undecodable values."""
        self.problems = {}
        return self.images(d)

    def pairs(self, d: bytes) -> list[tuple[Row, Row]]:
        """Update events: (before, after) image pairs (``problems`` by image number)."""
        self.problems = {}
        images = self.images(d)
        if len(images) % 2:
            raise RowLevelError(f"table {self.table}: an update event ends in half a row pair")
        return list(zip(images[::2], images[1::2], strict=True))
