"""Property tests: mask never reveals too much, hash is a stable keyed digest, phones normalise."""

from __future__ import annotations

import hmac
import string

import phonenumbers
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cdc_sync.config.rules import Hash, Phone
from cdc_sync.records import ColumnType, Kind
from cdc_sync.transforms.privacy import hash_fn, mask_text
from cdc_sync.transforms.text import phone_fn

# No example database: it would write .hypothesis/ into the working tree.
FAST = settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
TEXT = ColumnType(Kind.TEXT)
keys = st.text(alphabet=string.printable, min_size=16, max_size=80)


@FAST
@given(st.text(max_size=40), st.integers(0, 8), st.integers(0, 8), st.characters())
def test_mask_keeps_length_and_reveals_only_the_ends(s: str, first: int, last: int, c: str) -> None:
    out = mask_text(s, first, last, c)
    assert len(out) == len(s)
    if len(s) > first + last:
        assert out[:first] == s[:first]
        assert out[len(s) - last :] == s[len(s) - last :]
        assert set(out[first : len(s) - last]) == {c}
    else:
        assert out == c * len(s)  # short: nothing revealed


def _hash(key: str, value: object) -> object:
    fn, _ = hash_fn(Hash(kind="hash", key=key), "c", TEXT)  # type: ignore[arg-type]
    return fn(value)


@FAST
@given(keys, st.text(max_size=60))
def test_hash_is_hmac_sha256_hex(key: str, value: str) -> None:
    out = _hash(key, value)
    assert out == _hash(key, value)
    assert out == hmac.new(key.encode(), value.encode(), "sha256").hexdigest()
    assert isinstance(out, str) and len(out) == 64 and set(out) <= set("0123456789abcdef")


@FAST
@given(keys, keys, st.text(max_size=30))
def test_different_keys_give_different_hashes(k1: str, k2: str, value: str) -> None:
    assume(k1 != k2)
    assert _hash(k1, value) != _hash(k2, value)


@FAST
@given(keys, st.integers(-(2**70), 2**70))
def test_an_integer_and_its_text_hash_alike(key: str, n: int) -> None:
    assert _hash(key, n) == _hash(key, str(n))


_TYPES = [phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE]
_REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)


@settings(max_examples=120, deadline=None, database=None)
@given(st.sampled_from(_REGIONS), st.sampled_from(_TYPES))
def test_all_written_forms_of_a_number_normalise_alike(region: str, kind: int) -> None:
    number = phonenumbers.example_number_for_type(region, kind)
    assume(number is not None and phonenumbers.is_valid_number(number))
    assert number is not None
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    fn, _ = phone_fn(Phone(kind="phone", region=region), "c", TEXT)
    intl = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    forms = [
        e164,
        intl,
        f"  {intl.replace(' ', '-')} ",
        intl.replace(" ", "."),
        phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL),
        phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.RFC3966),
    ]
    for form in forms:
        assert fn(form) == e164, form
    digits, _ = phone_fn(Phone(kind="phone", region=region, format="digits"), "c", TEXT)
    assert digits(e164) == e164[1:]
