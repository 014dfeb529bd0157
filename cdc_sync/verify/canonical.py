"""Engine-neutral text of column values, row digests, and the sort keys of row keys."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal, InvalidOperation
from itertools import starmap
from uuid import UUID

from cdc_sync.records import ColumnType, Interval, Kind

Render = Callable[[object], str]
"""One non-NULL value → its canonical text; equal data gives equal text on every engine."""

_NULL = "\x00N"  # no rendered value starts with NUL, so NULL cannot collide with a value
_MICRO = 1_000_000


def _int(v: object) -> str:
    # int(True) == 1: MariaDB hands back tinyint 1 for TRUE, PostgreSQL numeric(20,0) a Decimal.
    return str(int(v))  # type: ignore[call-overload]


def _bool(v: object) -> str:
    return "t" if v else "f"


def _decimal(v: object) -> str:
    """By value, not by scale: numeric(12,2) 12.50 and DECIMAL 12.5 are the same number."""
    d = v if isinstance(v, Decimal) else Decimal(str(v))
    if not d.is_finite():
        return str(d).lower()  # NaN / Infinity / -Infinity
    if d.is_zero():
        return "0"
    return format(d.normalize(), "f")


def _real(v: object) -> str:
    """float4: both sides' values rounded to single precision before comparing (a driver may
    hand back the double nearest the decimal text, another the widened float4)."""
    f = float(v)  # type: ignore[arg-type]
    if not math.isfinite(f):
        return repr(f)
    return repr(struct.unpack("<f", struct.pack("<f", f))[0])


def _double(v: object) -> str:
    return repr(float(v))  # type: ignore[arg-type]


def _text(v: object) -> str:
    return v if isinstance(v, str) else str(v)


def _char(v: object) -> str:
    # PostgreSQL char(n) keeps the blank padding, MySQL CHAR strips it on read.
    return _text(v).rstrip(" ")


def _bytes(v: object) -> str:
    assert isinstance(v, bytes | bytearray | memoryview)
    return bytes(v).hex()


def _date(v: object) -> str:
    assert isinstance(v, date)
    return v.isoformat()


def _time(v: object) -> str:
    """datetime.time (PostgreSQL) or timedelta (MySQL TIME through PyMySQL)."""
    if isinstance(v, timedelta):
        micros = v // timedelta(microseconds=1)
        secs, us = divmod(micros, _MICRO)
        return f"{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}.{us:06d}"
    assert isinstance(v, time)
    return v.replace(tzinfo=None).isoformat(timespec="microseconds")


def _timestamp(v: object) -> str:
    assert isinstance(v, datetime)
    if v.tzinfo is not None:
        v = v.astimezone(UTC).replace(tzinfo=None)
    return v.isoformat(sep=" ", timespec="microseconds")


def _timestamptz(v: object) -> str:
    """The instant in UTC; a naive value is UTC already (MySQL sessions run in '+00:00')."""
    assert isinstance(v, datetime)
    if v.tzinfo is not None:
        v = v.astimezone(UTC).replace(tzinfo=None)
    return v.isoformat(sep=" ", timespec="microseconds") + "Z"


def _duration(v: object) -> str:
    assert isinstance(v, timedelta)
    return str(v // timedelta(microseconds=1))


def _interval(v: object) -> str:
    if isinstance(v, timedelta):  # no months part
        v = Interval(0, v.days, v.seconds * _MICRO + v.microseconds)
    if isinstance(v, str):
        v = parse_iso_interval(v)
    assert isinstance(v, Interval)
    return f"{v.months}m{v.days}d{v.microseconds}us"


def _uuid(v: object) -> str:
    return str(v if isinstance(v, UUID) else UUID(str(v)))


def _json(v: object) -> str:
    """Parsed and re-rendered: jsonb reorders keys and respaces, MariaDB keeps the text."""
    if isinstance(v, bytes | bytearray | memoryview):
        v = bytes(v).decode()
    parsed = json.loads(v, parse_float=Decimal) if isinstance(v, str) else v
    return _json_value(parsed)


def _json_value(v: object) -> str:
    if isinstance(v, dict):
        items = sorted(v.items())
        return "{" + ",".join(json.dumps(k) + ":" + _json_value(x) for k, x in items) + "}"
    if isinstance(v, list):
        return "[" + ",".join(_json_value(x) for x in v) + "]"
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, int | float | Decimal):
        return _decimal(Decimal(str(v)))
    return json.dumps(v, ensure_ascii=False)


def _set(v: object) -> str:
    # PyMySQL may hand back a Python set; the canonical value is comma-joined text.
    members = v if isinstance(v, set | frozenset) else (_text(v).split(",") if v != "" else [])
    return ",".join(sorted(members))


def _bit(length: int | None) -> Render:
    def render(v: object) -> str:
        if isinstance(v, bytes | bytearray):  # MySQL BIT(n) through PyMySQL: big-endian bytes
            n = int.from_bytes(v, "big")
            return format(n, f"0{length or 1}b")
        return _text(v)

    return render


_BY_KIND: dict[Kind, Render] = {
    Kind.TINYINT: _int,
    Kind.SMALLINT: _int,
    Kind.MEDIUMINT: _int,
    Kind.INTEGER: _int,
    Kind.BIGINT: _int,
    Kind.YEAR: _int,
    Kind.NUMERIC: _decimal,
    Kind.REAL: _real,
    Kind.DOUBLE: _double,
    Kind.TEXT: _text,
    Kind.VARCHAR: _text,
    Kind.CHAR: _char,
    Kind.ENUM: _text,
    Kind.SET: _set,
    Kind.BOOLEAN: _bool,
    Kind.DATE: _date,
    Kind.TIME: _time,
    Kind.TIMESTAMP: _timestamp,
    Kind.TIMESTAMPTZ: _timestamptz,
    Kind.INTERVAL: _interval,
    Kind.DURATION: _duration,
    Kind.UUID: _uuid,
    Kind.JSON: _json,
    Kind.JSONB: _json,
    Kind.BYTES: _bytes,
    Kind.PG_TEXT: _text,  # the PostgreSQL text form, as the source printed it
}


def renderer(ct: ColumnType) -> Render:
    """The canonical text function for values of a (target) column type."""
    base = _bit(ct.length) if ct.kind is Kind.BIT else _BY_KIND[ct.kind]
    if not ct.array_dims:
        return base

    def array(v: object) -> str:
        assert isinstance(v, list | tuple)
        return "{" + ",".join(_NULL if x is None else array_or(x) for x in v) + "}"

    def array_or(x: object) -> str:
        # Quoted so that an element's text cannot fake an element boundary.
        return array(x) if isinstance(x, list | tuple) else json.dumps(base(x))

    return array


# -- the row digest: one generated function per table ----------------------------------------
#
# A row's digest is ``hash(str(hash(items)))``: ``items`` holds one str (or None for NULL) per
# column, in a form that is equal exactly when the column's canonical texts (``renderer``) are
# equal. Strings hash with SipHash under the per-process seed, so the items' hashes are
# random-looking; the tuple hash of such items never collides for rows that differ in one
# column and collides with ~2**-64 otherwise; and the outer string hash makes each digest a
# pseudo-random function of the row, so the chunk checksums (sums) cannot cancel out
# structurally (summing raw tuple hashes could: values swapped between rows). Never raw
# ints, Decimals or datetimes in ``items``: Python hashes numbers modulo 2**61 - 1 and
# hash(-1) == hash(-2).
#
# Where a kind's canonical text is costly (numeric, timestamps), the item is another text of
# the same equivalence: equal exactly when the canonical texts are equal. A column's item is
# made by the same code for both sides' values, so the forms never mix within a column.

_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[])
"""normalize() under this context never rounds (the default context keeps 28 digits)."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_US = timedelta(microseconds=1)


def number_item(v: object) -> str:
    """NUMERIC by value: 12.50 and 12.5 (and 0 and -0) alike, every digit kept; NaN and the
    infinities by their text. Not ``_decimal``'s form: only ever compared with itself."""
    d = v if isinstance(v, Decimal) else Decimal(str(v))
    return str(d.normalize(_EXACT)) if d else "0"


def instant_item(v: object) -> str:
    """TIMESTAMP / TIMESTAMPTZ: microseconds since the epoch of the UTC instant; a naive
    value is UTC already (as ``_timestamp`` / ``_timestamptz`` treat it)."""
    assert isinstance(v, datetime)
    return str((v - (_NAIVE_EPOCH if v.tzinfo is None else _EPOCH)) // _US)


_INT_KINDS = (Kind.TINYINT, Kind.SMALLINT, Kind.MEDIUMINT, Kind.INTEGER, Kind.BIGINT, Kind.YEAR)

# Per kind: the item expression of one value ``{v}`` (a parameter name); ``{r}`` names the
# column's fallback (a full renderer or an item function) for values of unusual types.
_ITEM: dict[Kind, str] = {
    **dict.fromkeys(_INT_KINDS, "None if {v} is None else str(int({v}))"),
    **dict.fromkeys(
        (Kind.TEXT, Kind.VARCHAR, Kind.ENUM, Kind.PG_TEXT),
        "{v} if {v}.__class__ is str else (None if {v} is None else {r}({v}))",
    ),
    Kind.CHAR: "None if {v} is None else ({v}.rstrip(' ') if {v}.__class__ is str else {r}({v}))",
    Kind.BOOLEAN: "None if {v} is None else ('t' if {v} else 'f')",
    Kind.NUMERIC: "None if {v} is None else "
    "(((str({v}.normalize(_EXACT)) if {v} else '0') if {v}.__class__ is Decimal else {r}({v})))",
    **dict.fromkeys(
        (Kind.TIMESTAMP, Kind.TIMESTAMPTZ),
        "None if {v} is None else (str(({v} - (_NAIVE_EPOCH if {v}.tzinfo is None else _EPOCH))"
        " // _US) if {v}.__class__ is datetime else {r}({v}))",
    ),
}
_FALLBACK: dict[Kind, Render] = {
    Kind.NUMERIC: number_item,
    Kind.TIMESTAMP: instant_item,
    Kind.TIMESTAMPTZ: instant_item,
}


def compile_row_digest(types: Sequence[ColumnType]) -> Callable[..., int]:
    """A function of a row's values (as positional arguments, for ``starmap``) to its digest.
    Generated once per table: no per-value dispatch, one hash per row."""
    names: dict[str, object] = {
        "_EXACT": _EXACT,
        "_EPOCH": _EPOCH,
        "_NAIVE_EPOCH": _NAIVE_EPOCH,
        "_US": _US,
        "Decimal": Decimal,
        "datetime": datetime,
    }
    params, items = [], []
    for i, ct in enumerate(types):
        v, r = f"c{i}", f"_r{i}"
        params.append(v)
        template = None if ct.array_dims or ct.kind is Kind.BIT else _ITEM.get(ct.kind)
        if template is None:
            names[r] = renderer(ct)
            items.append(f"None if {v} is None else {r}({v})")
        else:
            names[r] = _FALLBACK.get(ct.kind) or renderer(ct)
            items.append(template.format(v=v, r=r))
    body = "hash(str(hash((" + "".join(f"({e}), " for e in items) + "))))"
    code = f"lambda {', '.join(params)}: {body}"
    # The code holds only the templates above and c<i> / _r<i> names: nothing from a schema.
    fn: Callable[..., int] = eval(
        code, {"__builtins__": {"str": str, "int": int, "hash": hash}, **names}
    )
    return fn


class RowDigest:
    """Digests of rows of one target-shaped schema (see ``compile_row_digest``), and the
    canonical text of a row (for keys).

    Digests are compared only within one process, never stored, so the per-process seed of
    Python's string hash is harmless.
    """

    __slots__ = ("_fast", "_renders")

    def __init__(self, types: Sequence[ColumnType]) -> None:
        self._renders = tuple(renderer(t) for t in types)
        self._fast = compile_row_digest(types)

    def text(self, row: Sequence[object]) -> str:
        # repr of a tuple of str is unambiguous: quotes and escapes delimit every value.
        return repr(
            tuple([_NULL if v is None else r(v) for r, v in zip(self._renders, row, strict=True)])
        )

    def __call__(self, row: Sequence[object]) -> int:
        if len(row) != len(self._renders):
            raise ValueError(f"a row of {len(row)} values for {len(self._renders)} columns")
        return self._fast(*row)

    def many(self, rows: Iterable[Sequence[object]]) -> Iterator[int]:
        """The digests of rows of the right width (unchecked: the hot path)."""
        return starmap(self._fast, rows)


def key_digest(text: object) -> int:
    """64 bits of a rendered key: the compact form kept for every key of a table scanned
    without key order (about 70 bytes per key in a Python set). Per process, as above."""
    return hash(text)


def parse_iso_interval(text: str) -> Interval:
    """``Interval.to_iso`` output back (as a MySQL target keeps intervals: VARCHAR)."""
    try:
        body = text.removeprefix("P")
        date_part, _, time_part = body.partition("T")
        months = days = 0
        num = ""
        for ch in date_part:
            if ch in "-0123456789":
                num += ch
                continue
            n, num = int(num), ""
            if ch == "Y":
                months += n * 12
            elif ch == "M":
                months += n
            elif ch == "D":
                days = n
            elif ch == "W":
                days = n * 7
        micros = 0
        num = ""
        for ch in time_part:
            if ch in "-.0123456789":
                num += ch
                continue
            d = Decimal(num)
            num = ""
            scale = {"H": 3600, "M": 60, "S": 1}[ch]
            micros += int(d * scale * _MICRO)
        return Interval(months, days, micros)
    except (ValueError, KeyError, InvalidOperation):
        raise ValueError("not an ISO 8601 interval") from None
