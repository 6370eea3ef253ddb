"""Normalisation and keyed hashing of personal identifiers (phone, e-mail).

Pure: no pyflink, no clients. The job computes the same function on the JVM (zhongtai's function
``zt_decode_event``, configured by ``pipelines/decode.py`` with :func:`hmac_pads_hex` and the constants
here); tests/pipeline/test_decode_sql.py and tests/integration/test_decode_jvm.py keep the two in agreement.

The MAC is standard HMAC-SHA256 (RFC 2104) keyed with the configured secret over
``"<type>:<normalised value>"``; the JVM side receives the two padded keys as hex constants.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from config.schema import IdentifierSpec

PII_TYPES = frozenset({"phone", "email"})
#: Everything but the ASCII digits (``\D`` would keep other scripts' digits, which SQL's [^0-9] drops).
_NON_DIGITS = re.compile(r"[^0-9]+")


#: A national number (gets the country code): this many digits, starting with this digit.
NATIONAL_DIGITS = 11
NATIONAL_PREFIX = "1"


def normalise_phone(raw: str, default_country_code: str = "86") -> str:
    """NFKC first (full-width ``１３８`` is ``138``), then ASCII digits only; a leading ``00`` dropped; an
    11-digit number starting with 1 gets the country code.

    >>> normalise_phone(" 138-0000-0000 ")
    '+8613800000000'
    >>> normalise_phone("１３８－００００－００００")
    '+8613800000000'
    """
    digits = _NON_DIGITS.sub("", unicodedata.normalize("NFKC", raw))
    if digits.startswith("00"):
        digits = digits[2:]
    if len(digits) == NATIONAL_DIGITS and digits.startswith(NATIONAL_PREFIX):
        digits = default_country_code + digits
    return "+" + digits


#: ASCII white space, trimmed from e-mail addresses (the SQL implementation trims the same set).
ASCII_SPACE = " \t\n\r\f\v"


def normalise_email(raw: str) -> str:
    """NFKC (a full-width address is the same address), ASCII white space trimmed, lower-cased, every final
    sigma as sigma: ``str.lower`` and Java's ``toLowerCase`` read the final-sigma context differently
    (``"a0Σ\x0bf"``), the only context-dependent lower-casing; σ and ς are the same letter.

    >>> normalise_email(" ＷＡＮＧ@Example.COM ")
    'wang@example.com'
    >>> normalise_email("ΟΔΟΣ@x.gr") == normalise_email("οδοσ@x.gr")
    True
    """
    return unicodedata.normalize("NFKC", raw).strip(ASCII_SPACE).lower().replace("\u03c2", "\u03c3")


def normalise(id_type: str, raw: str, default_country_code: str = "86") -> str:
    if id_type == "phone":
        return normalise_phone(raw, default_country_code)
    if id_type == "email":
        return normalise_email(raw)
    return raw


def hmac_key(secret: str) -> bytes:
    """The HMAC block key K0 (RFC 2104): the secret's UTF-8 bytes, hashed first if longer than 64."""
    key = secret.encode("utf-8")
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    return key.ljust(64, b"\0")


def hmac_pads_hex(secret: str) -> tuple[str, str]:
    """(K0 XOR ipad, K0 XOR opad) in hex, for the SQL implementation of the same HMAC."""
    key = hmac_key(secret)
    return bytes(b ^ 0x36 for b in key).hex(), bytes(b ^ 0x5C for b in key).hex()


def pseudonymise(id_type: str, raw: str, secret: str, default_country_code: str = "86",
                 custom: Mapping[str, IdentifierSpec] | None = None) -> str:
    """The stored form of an identifier value: PII types are normalised and HMAC'd, a custom type
    (``custom``: config/schema.yaml ``identifiers``) normalised as declared and HMAC'd when ``hashed``,
    others unchanged."""
    spec = custom.get(id_type) if custom else None
    if spec is not None:
        value = normalise_email(raw) if spec.normalise == "lower" else raw
        return keyed_hash(f"{id_type}:{value}", secret) if spec.hashed else value
    if id_type not in PII_TYPES:
        return raw
    value = normalise(id_type, raw, default_country_code)
    return keyed_hash(f"{id_type}:{value}", secret)


def keyed_hash(text: str, secret: str) -> str:
    """HMAC-SHA256 of ``text`` keyed with ``secret``, lower-case hex."""
    return hmac.new(secret.encode("utf-8"), text.encode(), hashlib.sha256).hexdigest()
