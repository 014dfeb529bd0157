"""Per-table row-image decoders generated as Python source: the column loop unrolled."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import cast

from cdc_sync.records import Row
from cdc_sync.sources.mysql import columns as ct
from cdc_sync.sources.mysql.columns import ColumnSpec
from cdc_sync.sources.mysql.rows import _FSP_BYTES, _INT_STRUCTS, ZeroDateError, decimal_layout

Image = Callable[[bytes, int], tuple[Row, int]]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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
        # fromtimestamp(secs, UTC).replace(microsecond=us) (one per row image).
        env["EPOCH"], env["timedelta"] = _EPOCH, timedelta
        env["ZeroDateError"] = ZeroDateError
        us = "0"
        if n:
            mult = (10_000, 100, 1)[n - 1]
            us = f"int.from_bytes(d[o + 4 : o + {4 + n}], 'big') * {mult}"
        return [
            "secs = int.from_bytes(d[o : o + 4], 'big')",
            f"us = {us}",
            "if not (secs or us):",
            "    raise ZeroDateError",
            # The binlog holds the instant as UTC seconds, whatever the writer's time_zone.
            f"v{i} = EPOCH + timedelta(0, secs, us)",
            f"o += {4 + n}",
        ]
    if t == ct.DATETIME2 and 0 <= spec.decimals <= 6:
        n = _FSP_BYTES[spec.decimals]
        env["datetime"], env["ZeroDateError"] = datetime, ZeroDateError
        lines = [
            "x = int.from_bytes(d[o : o + 5], 'big') - 0x8000000000",
            "ymd, hms = x >> 17, x & 0x1FFFF",
            "year, month = divmod(ymd >> 5, 13)",
            "if not (year and month and ymd & 31):",
            "    raise ZeroDateError",
        ]
        us = "0"
        if n:
            mult = (10_000, 100, 1)[n - 1]
            us = f"int.from_bytes(d[o + 5 : o + {5 + n}], 'big', signed=True) * {mult}"
        lines += [
            f"v{i} = datetime(year, month, ymd & 31, hms >> 12, (hms >> 6) & 63, hms & 63, {us})",
            f"o += {5 + n}",
        ]
        return lines
    return None


def _inline_decimal(i: int, precision: int, scale: int, env: dict[str, object]) -> list[str]:
    """:func:`decimal_reader` unrolled for one (precision, scale): same layout, same text."""
    size, int_groups, frac_groups = decimal_layout(precision, scale)
    top, ones = 1 << (8 * size - 1), (1 << (8 * size)) - 1

    def fold(part: list[tuple[int, int, int]]) -> str:
        expr = "0"
        for sh, mask, p in part:
            expr = f"({expr}) * {p} + ((x >> {sh}) & {mask})"
        return expr

    env["Decimal"] = Decimal
    iv, fv = fold(int_groups), fold(frac_groups)
    text = f"f'{{sign}}{{{iv}}}.{{{fv}:0{scale}d}}'" if scale else f"f'{{sign}}{{{iv}}}'"
    return [
        f"x = int.from_bytes(d[o : o + {size}], 'big')",
        f"if x & {top}:",
        f"    x ^= {top}",
        "    sign = ''",
        "else:",
        f"    x ^= {ones ^ top}",
        "    sign = '-'",
        f"v{i} = Decimal({text})",
        f"o += {size}",
    ]


def generate(specs: Sequence[ColumnSpec], readers: Sequence[object], checked: Image) -> Image:
    """The decoder of one table version. The source text holds only numbers taken from the
    binlog's column metadata (sizes, precisions, offsets), never a name or a value, so
    nothing from the data can reach ``exec``."""
    env: dict[str, object] = {"checked": checked}
    nb = (len(specs) + 7) // 8
    nulls = "d[o]" if nb == 1 else f"int.from_bytes(d[o : o + {nb}], 'little')"
    body = [
        "def image(d, o):",
        "    try:",
        f"        nulls = {nulls}",
        f"        o += {nb}",
    ]
    for i, spec in enumerate(specs):
        lines = _inline(i, spec, env)
        if lines is None:
            env[f"r{i}"] = readers[i]
            lines = [f"v{i}, o = r{i}(d, o)"]
        body += [f"        if nulls >> {i} & 1:", f"            v{i} = None", "        else:"]
        body += [f"            {line}" for line in lines]
    values = "".join(f"v{i}, " for i in range(len(specs)))
    body += [
        "    except Exception:",
        "        checked(d, start)",
        "        raise",
        f"    return ({values}), o",
    ]
    body.insert(1, "    start = o")
    exec("\n".join(body), env)  # our own source text, built above
    return cast(Callable[[bytes, int], tuple[Row, int]], env["image"])
