"""A table's column rules generated as one straight-line Python function per table."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

from cdc_sync.records import UNCHANGED

Row = tuple[object, ...]
HotStep = tuple[Callable[[object], object], int, bool]  # (fn, provenance bit, sees NULL)
Hot = tuple[int, tuple[HotStep, ...] | None, object, int]  # (src index, steps, constant, bit)
RowFn = Callable[[Row, int], tuple[Row, int]]


def generate(hot: Sequence[Hot]) -> RowFn:
    """``(source row, provenance bits) → (target row, bits)`` for the compiled plans.

    What the per-column loop over ``hot`` did, unrolled: no loop, no tuple unpacking and no
    list per row (the loop cost more than the rules themselves, measured on the #4 example
    set). A step runs unless the value is UNCHANGED (TOAST) or it is NULL and the step does
    not see NULLs; a step's bit is set when it changed the value (``type`` too: a map 1 → True
    changes the value although 1 == True); a constant's bit when it differs from the source
    value. Functions and constants live in the namespace; the source text holds only indexes
    and bits, never a name or a value from the configuration or the data."""
    env: dict[str, object] = {"UNCHANGED": UNCHANGED}
    body = ["def row(r, bits):"]
    for n, (idx, steps, const, vbit) in enumerate(hot):
        if steps is None:  # a constant, compared with the source column it replaces
            env[f"c{n}"] = const
            if idx >= 0:
                body += [f"    if r[{idx}] != c{n}:", f"        bits |= {vbit}"]
            body.append(f"    o{n} = c{n}")
            continue
        body.append(f"    o{n} = v = r[{idx}]")
        if not steps:
            continue
        body.append("    if v is not UNCHANGED:")
        for k, (fn, bit, on_null) in enumerate(steps):
            env[f"f{n}_{k}"] = fn
            pad = "        "
            if not on_null:
                body.append(f"{pad}if v is not None:")
                pad += "    "
            body += [
                f"{pad}nv = f{n}_{k}(v)",
                f"{pad}if nv is not v and (nv != v or type(nv) is not type(v)):",
                f"{pad}    bits |= {bit}",
                f"{pad}v = nv",
            ]
        body.append(f"        o{n} = v")
    values = "".join(f"o{n}, " for n in range(len(hot)))
    body.append(f"    return ({values}), bits")
    exec("\n".join(body), env)  # our own source text, built above
    return cast(RowFn, env["row"])
