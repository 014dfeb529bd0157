"""Python codecs for MySQL / MariaDB character sets, decoding exactly what the server stores."""

from __future__ import annotations

import codecs
import encodings.cp1252
from typing import TYPE_CHECKING

from pymysql.charset import charset_by_name

if TYPE_CHECKING:
    from typing_extensions import Buffer

# MySQL's latin1 is Windows-1252 except that the five bytes cp1252 leaves undefined (0x81,
# 0x8D, 0x8F, 0x90, 0x9D) are the C1 controls of the same number. MariaDB stores them in
# latin1 columns; Python's cp1252 refuses them, which stopped the pipeline for good.
_LATIN1 = "".join(
    chr(i) if ch == "\ufffe" else ch for i, ch in enumerate(encodings.cp1252.decoding_table)
)
_LATIN1_ENCODING = codecs.charmap_build(_LATIN1)
LATIN1 = "cdc_sync_mysql_latin1"


def _latin1_decode(data: Buffer, errors: str = "strict", /) -> tuple[str, int]:
    return codecs.charmap_decode(data, errors, _LATIN1)


def _latin1_encode(text: str, errors: str = "strict") -> tuple[bytes, int]:
    return codecs.charmap_encode(text, errors, _LATIN1_ENCODING)


def _search(name: str) -> codecs.CodecInfo | None:
    if name != LATIN1:
        return None
    return codecs.CodecInfo(_latin1_encode, _latin1_decode, name=LATIN1)


codecs.register(_search)

# Where PyMySQL's names are not what the server stores: its utf16 / ucs2 / utf32 are
# big-endian (PyMySQL has no codec for them, and the default was UTF-8: wrong text).
_OWN = {
    "latin1": LATIN1,
    "ucs2": "utf-16-be",
    "utf16": "utf-16-be",
    "utf16le": "utf-16-le",
    "utf32": "utf-32-be",
    "utf8mb3": "utf-8",
    "utf8mb4": "utf-8",
    "utf8": "utf-8",
}


def codec(charset: str) -> str | None:
    """The Python codec for a MySQL character set, None when Python has none (swe7, dec8,
    hp8, keybcs2, armscii8, geostd8, macce, eucjpms): those columns are refused by name."""
    own = _OWN.get(charset)
    if own is not None:
        return own
    try:
        cs = charset_by_name(charset)
    except KeyError:
        return None
    if cs is None:
        return None
    try:
        return codecs.lookup(str(cs.encoding)).name
    except LookupError:
        return None


def unsupported_fix(table: object, charset: str) -> str:
    return (
        f"its character set {charset} has no exact decoder here; convert it, e.g. "
        f"ALTER TABLE {table} CONVERT TO CHARACTER SET utf8mb4, or exclude the table"
    )
