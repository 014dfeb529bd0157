"""Privacy rules: mask (keep first / last characters), keyed hash (HMAC-SHA256), redact."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from cdc_sync.config.rules import Hash, Mask
from cdc_sync.records import ColumnType, Kind
from cdc_sync.transforms.errors import Problem
from cdc_sync.transforms.values import TEXT, TEXT_KINDS, canonical_text, type_text

Fn = Callable[[object], object]

HASH_TYPE = ColumnType(Kind.VARCHAR, length=64)
_BLOCK = 64  # SHA-256 block size, for the HMAC pads


def mask_text(s: str, first: int, last: int, char: str) -> str:
    """Length kept; a value no longer than ``first + last`` is masked whole, so a short value
    is never revealed in full."""
    n = len(s)
    if n <= first + last:
        return char * n
    return s[:first] + char * (n - first - last) + (s[n - last :] if last else "")


def mask_fn(cfg: Mask, col: str, t: ColumnType) -> tuple[Fn, ColumnType]:
    if t.array_dims:
        raise Problem(f"mask applies to scalar columns, {col!r} is {type_text(t)}")
    first, last, char = cfg.keep_first, cfg.keep_last, cfg.char

    def mask(v: object) -> object:
        return mask_text(v if type(v) is str else canonical_text(v), first, last, char)

    # Masked text is no enum label / JSON document; other kinds become their text.
    keep = t.kind in TEXT_KINDS and t.kind not in (Kind.ENUM, Kind.SET)
    return mask, (t if keep else TEXT)


def hmac_hex(key: bytes) -> Callable[[str], str]:
    """``text → HMAC-SHA256(key, text utf-8)`` as lowercase hex, identical to
    ``hmac.new(key, text, 'sha256').hexdigest()`` but with the keyed pads hashed once: copying
    two prepared SHA-256 states halves the cost of a per-value ``hmac.new``."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def digest(text: str) -> str:
        i = inner.copy()
        i.update(text.encode())
        o = outer.copy()
        o.update(i.digest())
        return o.hexdigest()

    return digest


def hash_fn(cfg: Hash, col: str, t: ColumnType) -> tuple[Fn, ColumnType]:
    if t.array_dims:
        raise Problem(f"hash applies to scalar columns, {col!r} is {type_text(t)}")
    digest = hmac_hex(cfg.key.get_secret_value().encode())

    def hash_(v: object) -> object:
        # Canonical text: int 42 from MySQL and bigint 42 from PostgreSQL hash alike.
        return digest(v if type(v) is str else canonical_text(v))

    return hash_, HASH_TYPE


def redact(_v: object) -> object:
    return None
