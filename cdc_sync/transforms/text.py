"""Text rules: lower / upper / trim / regex, e-mail validation, phone normalisation."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

from cdc_sync.config.rules import Phone, Regex, Validate
from cdc_sync.records import ColumnType, Kind
from cdc_sync.transforms.errors import Problem, RuleError
from cdc_sync.transforms.values import INT_KINDS, TEXT, TEXT_KINDS, type_text

Fn = Callable[[object], object]

# The WHATWG HTML "valid e-mail address" production (what <input type=email> accepts),
# https://html.spec.whatwg.org/multipage/input.html#valid-e-mail-address :
#   /^[a-zA-Z0-9.!#$%&'*+\/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?
#     (?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/
# widened to internationalised addresses (RFC 6531 local parts, IDNA U-label domains):
# any non-ASCII character counts as a letter, as mail systems with SMTPUTF8 accept
# "zoë@example.com" / "用户@例子.中国". CRMs hold such addresses; refusing them would
# dead-letter real customers. A regex rather than email-validator, which costs ~18 µs an
# address on the hot path.
_U = "\u00a1-\U0010ffff"  # not C1 controls or no-break space


@functools.cache
def _email() -> re.Pattern[str]:
    # Compiled on first use (~30 ms): a pipeline without an e-mail rule does not pay at start.
    return re.compile(
        rf"[a-zA-Z0-9.!#$%&'*+/=?^_`{{|}}~{_U}-]+@[a-zA-Z0-9{_U}](?:[a-zA-Z0-9{_U}-]{{0,61}}"
        rf"[a-zA-Z0-9{_U}])?(?:\.[a-zA-Z0-9{_U}](?:[a-zA-Z0-9{_U}-]{{0,61}}[a-zA-Z0-9{_U}])?)*"
    )


_EMAIL_MAX = 254  # RFC 5321 path limit (256) minus the angle brackets
_LOCAL_MAX = 64  # RFC 5321 local-part limit

# PhoneNumberFormat members by name: phonenumbers (~30 ms to import) loads with the first
# number, so pipelines without a phone rule do not pay for it at start-up.
_FORMATS = {
    "e164": "E164",
    "international": "INTERNATIONAL",
    "national": "NATIONAL",
    "digits": "E164",
}


def require_text(rule: str, col: str, t: ColumnType) -> None:
    if t.kind not in TEXT_KINDS or t.array_dims:
        # A PostgreSQL type carried as its text (citext, inet…) becomes text by a cast first
        hint = "; a `cast: text` rule before it makes it text" if t.kind is Kind.PG_TEXT else ""
        raise Problem(f"{rule} applies to text columns, {col!r} is {type_text(t)}{hint}")


def _loose_text(t: ColumnType) -> ColumnType:
    """Rewritten text is no longer an enum label / set member / blank-padded char."""
    if t.kind in (Kind.ENUM, Kind.SET):
        return TEXT
    if t.kind is Kind.CHAR:
        return ColumnType(Kind.VARCHAR, length=t.length)
    return t


def case_fn(rule: str, col: str, t: ColumnType) -> tuple[Fn, ColumnType]:
    """lower / upper / trim: str methods, called unbound (no per-row attribute lookup)."""
    require_text(rule, col, t)
    methods: dict[str, Callable[[str], str]] = {
        "lower": str.lower,
        "upper": str.upper,
        "trim": str.strip,
    }
    # Case keeps a char(n) value's padding; trimmed values must not be re-padded by char(n).
    out = t if rule != "trim" and t.kind is Kind.CHAR else _loose_text(t)
    return methods[rule], out  # type: ignore[return-value]


def regex_fn(cfg: Regex, col: str, t: ColumnType) -> tuple[Fn, ColumnType]:
    require_text("regex", col, t)
    sub = re.compile(cfg.pattern).sub
    replace = cfg.replace

    def regex(v: object) -> object:
        return sub(replace, v)  # type: ignore[call-overload]

    # A replacement can lengthen the value past varchar(n): the target gets text.
    return regex, TEXT


def email_fn(_cfg: Validate, col: str, t: ColumnType) -> tuple[Fn, ColumnType]:
    require_text("validate", col, t)
    match = _email().fullmatch

    def validate_email(v: object) -> object:
        s = v if isinstance(v, str) else ""
        if len(s) > _EMAIL_MAX or match(s) is None or s.index("@") > _LOCAL_MAX:
            raise RuleError("validate", col, "not a valid e-mail address")
        return v

    return validate_email, t


# E.164 (and its digits) has no room for an extension ("650-253-0000 x99"): formatting
# would drop it without a word.
_NO_EXTENSION = ("e164", "digits")


@functools.lru_cache(maxsize=65536)
def normalise_phone(text: str, region: str, fmt: str, drop_extension: bool = False) -> str | bool:
    """The number in ``fmt``; False when it is not a valid number, True when it has an
    extension ``fmt`` cannot hold (and it may not be dropped). Memoised: parsing costs
    ~50 µs and updates carry the same numbers again and again."""
    import phonenumbers  # noqa: PLC0415  (see _FORMATS)

    try:
        n = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return False
    if not phonenumbers.is_valid_number(n):
        return False
    if n.extension and fmt in _NO_EXTENSION and not drop_extension:
        return True
    out = phonenumbers.format_number(n, getattr(phonenumbers.PhoneNumberFormat, _FORMATS[fmt]))
    return out[1:] if fmt == "digits" else out


def phone_fn(cfg: Phone, col: str, t: ColumnType) -> tuple[Fn, ColumnType]:
    if t.array_dims or t.kind not in TEXT_KINDS | INT_KINDS:
        raise Problem(f"phone applies to text or integer columns, {col!r} is {type_text(t)}")
    region, fmt, drop = cfg.region, cfg.format, cfg.extension == "drop"
    reason = f"not a valid phone number for region {region}"
    ext = (
        f"the number has an extension, which format {fmt} cannot hold (format: national or "
        "international keeps it; extension: drop drops it)"
    )

    def phone(v: object) -> object:
        out = normalise_phone(v if type(v) is str else str(v), region, fmt, drop)
        if type(out) is not str:
            raise RuleError("phone", col, ext if out else reason)
        return out

    # Formatted numbers are at most ~25 characters; 32 leaves room.
    out_t = TEXT if t.kind is Kind.TEXT else ColumnType(Kind.VARCHAR, length=max(t.length or 0, 32))
    return phone, out_t
