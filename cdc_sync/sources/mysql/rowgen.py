"""Per-table row-image decoders generated as Python source: the column loop unrolled."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import cast

from cdc_sync.records import Row
from cdc_sync.sources.mysql import columns as ct
from cdc_sync.sources.mysql.columns import ColumnSpec
from cdc_sync.sources.mysql.rows import _FSP_BYTES, _INT_STRUCTS, ZeroDateError, decimal_layout

Image = Callable[[bytes, int, int], tuple[Row, int]]  # (data, offset, image number)
Images = Callable[[bytes], list[Row]]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CACHE_SIZE = 1024  # values per cached column
_STRUCT_CODES = {1: "B", 2: "H", 4: "I"}  # DECIMAL digit groups by byte size


def _inline(i: int, spec: ColumnSpec, env: dict[str, object]) -> list[str] | None:
    """Straight-line code reading column ``i`` into ``v{i}`` (advancing ``o``), for the
    common types; None: call its :func:`reader` instead. Must equal what the reader does."""
    t = spec.type
    st = _INT_STRUCTS.get((t, spec.unsigned and t not in (ct.FLOAT, ct.DOUBLE)))
    if st is not None:
        env[f"u{i}"] = st.unpack_from
        return [f"v{i} = u{i}(d, o)[0]", f"o += {st.size}"]
    if t in (ct.VARCHAR, ct.STRING) and not spec.binary:
        env[f"e{i}"] = spec.encoding
        length = "d[o]" if spec.max_length <= 255 else "d[o] | d[o + 1] << 8"
        p = 1 if spec.max_length <= 255 else 2
        return [f"n = {length}", f"v{i} = d[o + {p} : o + {p} + n].decode(e{i})", f"o += {p} + n"]
    if t == ct.NEWDECIMAL and spec.precision >= 1:
        return _inline_decimal(i, spec.precision, spec.decimals, env)
    if t == ct.TIMESTAMP2 and 0 <= spec.decimals <= 6:
        n = _FSP_BYTES[spec.decimals]
        # Epoch + timedelta: exact integer arithmetic, and half the cost of
        # fromtimestamp(secs, UTC).replace(microsecond=us).
        env["EPOCH"], env["timedelta"] = _EPOCH, timedelta
        env["ZeroDateError"] = ZeroDateError
        us = "0"
        if n:
            mult = (10_000, 100, 1)[n - 1]
            us = f"int.from_bytes(k[4:], 'big') * {mult}"
        return _cached(i, 4 + n, env, [
            "secs = int.from_bytes(k[:4], 'big')",
            f"us = {us}",
            "if not (secs or us):",
            "    raise ZeroDateError",
            # The binlog holds the instant as UTC seconds, whatever the writer's time_zone.
            f"v{i} = EPOCH + timedelta(0, secs, us)",
        ])  # fmt: skip
    if t == ct.DATETIME2 and 0 <= spec.decimals <= 6:
        n = _FSP_BYTES[spec.decimals]
        env["datetime"], env["ZeroDateError"] = datetime, ZeroDateError
        lines = [
            "x = int.from_bytes(k[:5], 'big') - 0x8000000000",
            "ymd, hms = x >> 17, x & 0x1FFFF",
            "year, month = divmod(ymd >> 5, 13)",
            "if not (year and month and ymd & 31):",
            "    raise ZeroDateError",
        ]
        us = "0"
        if n:
            mult = (10_000, 100, 1)[n - 1]
            us = f"int.from_bytes(k[5:], 'big', signed=True) * {mult}"
        lines.append(
            f"v{i} = datetime(year, month, ymd & 31, hms >> 12, (hms >> 6) & 63, hms & 63, {us})"
        )
        return _cached(i, 5 + n, env, lines)
    return None


def _cached(i: int, size: int, env: dict[str, object], compute: list[str]) -> list[str]:
    """``compute`` (reading the value's ``size`` bytes from ``k`` into ``v{i}``) behind a
    per-column cache keyed by those bytes: the rows of one statement mostly share their
    timestamps (``DEFAULT CURRENT_TIMESTAMP``, ``NOW()``), and a hit costs a slice and a dict
    lookup instead of ~1 µs of date arithmetic. Bounded: cleared when full."""
    env[f"c{i}"] = {}
    return [
        f"k = d[o : o + {size}]",
        f"v{i} = c{i}.get(k)",
        f"if v{i} is None:",
        *[f"    {line}" for line in compute],
        f"    if len(c{i}) >= {_CACHE_SIZE}:",
        f"        c{i}.clear()",
        f"    c{i}[k] = v{i}",
        f"o += {size}",
    ]


def _inline_decimal(i: int, precision: int, scale: int, env: dict[str, object]) -> list[str]:
    """:func:`decimal_reader` unrolled for one (precision, scale): same layout, same value.

    The digit groups fold into one unscaled integer (the integral groups times
    10**scale plus the fractional ones), and ``Decimal("<unscaled>E-<scale>")`` has the
    same coefficient, exponent and sign as ``Decimal("<int>.<frac>")``: half the cost of
    formatting the two parts. Groups of 1, 2 or 4 bytes (most layouts, e.g. DECIMAL(12,2))
    are unpacked by one struct call instead of shifting and masking one big integer."""
    size, int_groups, frac_groups = decimal_layout(precision, scale)
    groups = int_groups + frac_groups
    weights, w = [], 1
    for _, _, p in reversed(groups):  # least significant first: its weight is 1
        weights.append(w)
        w *= p
    weights.reverse()
    exp = f"E-{scale}" if scale else ""
    env["Decimal"] = Decimal

    def unscaled(parts: list[str]) -> str:
        return " + ".join(
            f"{x} * {wt}" if wt > 1 else x for x, wt in zip(parts, weights, strict=True)
        )

    sizes = [(mask.bit_length() + 7) // 8 for _, mask, _ in groups]
    if all(n in _STRUCT_CODES for n in sizes):
        # Big-endian unsigned groups; the first one carries the sign in its top bit, and a
        # negative value stores every bit complemented.
        env[f"s{i}"] = struct.Struct(">" + "".join(_STRUCT_CODES[n] for n in sizes)).unpack_from
        names = [f"q{j}" for j in range(len(groups))]
        top = 1 << (8 * sizes[0] - 1)
        masks = [(1 << (8 * n)) - 1 for n in sizes]
        pos = [f"({names[0]} ^ {top})", *names[1:]]
        neg = [f"({names[0]} ^ {masks[0] ^ top})"]
        neg += [f"({m} - {q})" for q, m in zip(names[1:], masks[1:], strict=True)]
        return [
            f"{', '.join(names)}, = s{i}(d, o)",
            f"if {names[0]} & {top}:",
            f"    v{i} = Decimal(f'{{{unscaled(pos)}}}{exp}')",
            "else:",
            f"    v{i} = Decimal(f'-{{{unscaled(neg)}}}{exp}')",
            f"o += {size}",
        ]
    top, ones = 1 << (8 * size - 1), (1 << (8 * size)) - 1
    parts = [f"((x >> {sh}) & {mask})" if sh else f"(x & {mask})" for sh, mask, _ in groups]
    return [
        f"x = int.from_bytes(d[o : o + {size}], 'big')",
        f"if x & {top}:",
        f"    x ^= {top}",
        f"    v{i} = Decimal(f'{{{unscaled(parts)}}}{exp}')",
        "else:",
        f"    x ^= {ones ^ top}",
        f"    v{i} = Decimal(f'-{{{unscaled(parts)}}}{exp}')",
        f"o += {size}",
    ]


def generate(specs: Sequence[ColumnSpec], readers: Sequence[object], checked: Image) -> Images:
    """The decoder of one table version: every row image of a rows event's body, in one
    call (no call and no (row, offset) tuple per image).

    NOT NULL columns skip their null bit: one test up front sends an image that sets the bit
    of a NOT NULL column (the table map and the image disagree) to the generic loop, which
    reads it as it always did. The source text holds only numbers taken from the binlog's
    column metadata (sizes, precisions, offsets), never a name or a value, so nothing from
    the data can reach ``exec``."""
    env: dict[str, object] = {"checked": checked}
    nb = (len(specs) + 7) // 8
    nulls = "d[o]" if nb == 1 else f"int.from_bytes(d[o : o + {nb}], 'little')"
    not_null = sum(1 << i for i, spec in enumerate(specs) if not spec.nullable)
    body = [
        "def images(d):",
        "    out = []",
        "    append = out.append",
        "    o, end = 0, len(d)",
        "    while o < end:",
        "        start = o",
        "        try:",
        f"            nulls = {nulls}",
        f"            if nulls & {not_null}:",
        "                row, o = checked(d, o, len(out))",
        "                append(row)",
        "                continue",
        f"            o += {nb}",
    ]
    for i, spec in enumerate(specs):
        lines = _inline(i, spec, env)
        if lines is None:
            env[f"r{i}"] = readers[i]
            lines = [f"v{i}, o = r{i}(d, o)"]
        if spec.nullable:
            body += [f"            if nulls >> {i} & 1:", f"                v{i} = None"]
            body += ["            else:", *[f"                {line}" for line in lines]]
        else:
            body += [f"            {line}" for line in lines]
    values = "".join(f"v{i}, " for i in range(len(specs)))
    body += [
        # The generic loop re-reads the image: it names the column of what cannot be
        # decoded (raising), or returns the row with its zero dates as None (a problem).
        "        except Exception:",
        "            row, o = checked(d, start, len(out))",
        "            append(row)",
        "            continue",
        f"        append(({values}))",
        "    return out",
    ]
    exec("\n".join(body), env)  # our own source text, built above
    return cast(Images, env["images"])
