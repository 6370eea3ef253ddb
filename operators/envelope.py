"""The event envelope: one record's bytes → the validated event, or the DLQ reason of the first failing check.

This is the Python reference of the job's decode (the JVM's ``io.zhongtai.flink.decode.DecodeEvent``;
tests/pipeline/test_decode_sql.py and tests/integration/test_decode_jvm.py run both on the same records),
the ground truth's decode (``zhongtai.devtools.generator.oracle``), and the collector's validation, so an
event the collector accepts is one the job accepts. It uses the standard library only.

Readings of the contract where docs/semantics.md leaves room (tests/unit/test_oracle.py pins each):
  * "JSON": RFC 8259, strictly (docs/semantics.md "What JSON is"): exactly one value with optional
    white space around it (``{...}garbage`` and two objects are malformed), no ``NaN``/``Infinity``, no
    comments, trailing commas, leading zeros or raw control characters; an escape that denotes a lone
    UTF-16 surrogate (``"\\ud800"``) is malformed; nesting deeper than :data:`MAX_JSON_DEPTH` is
    malformed; duplicate keys: the last wins; a leading BOM is malformed. A Kafka tombstone (no value)
    is malformed.
  * String-typed fields (event_id, event_type, identifier values, source, props.campaign_id,
    props.channel) take a JSON number as its literal text (``12`` → ``"12"``, ``1e3`` → ``"1e3"``) and a
    boolean as ``"true"``/``"false"``; an object or array is never a value. "Empty" means the empty
    string. Lengths count code points.
  * ``event_type`` an object or array → ``wrong_type:event_type`` (present, not null, not empty).
  * ``ts``: an integer — a JSON integer literal or a string ``-?digits``, of any length (a 16-digit
    value is an integer, far in the future: ``future_ts``) — or exactly
    ``YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)`` with three fraction digits if any, a real calendar date,
    hours 00–23, offsets up to ±23:59. Not ``1.0``, not ``1e3``.
  * An identifier value longer than ``identity.max_identifier_length`` code points → ``too_long:ids``.
  * "Numbers given as JSON strings" apply to ``props.price`` and ``props.qty`` only. A number
    string is ``[+-]?(digits[.digits]|.digits)([eE][+-]?digits)?`` (no blanks, no NaN); an integer
    is a JSON integer literal or a string of ``[+-]?digits``; ``2.0`` is not an integer.
  * ``props`` that is not an object counts as empty; ``props.price``/``props.qty`` null count as absent.
  * A purchase without a price has amount 0.00. ``out_of_range:amount``: the price rounded to cents,
    the qty or their product is 10^16 or more in absolute value (the amount is a DECIMAL(18, 2)).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from config.schema import MAX_LIST_ITEMS, EventSchema, PropSpec
from config.settings import JobSettings, PiiSettings, Settings
from operators.pii import pseudonymise

__all__ = ["ID_PRIORITY", "DecodedFields", "JsonNumber", "Pseudonyms", "ValidEvent", "compact_json", "decode",
           "decode_full", "check_props", "parse_ts", "typed_props"]

#: Identifier types, strongest first (the person key takes the first present).
ID_PRIORITY = ("user_id", "unionid", "openid", "phone", "email", "device_id", "cookie_id")
NONE = "(none)"
CENT = Decimal("0.01")
ZERO = Decimal("0.00")
MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000

_EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}", re.ASCII)
_ISO = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{3}))?"
    r"(?:(Z)|([+-])([0-9]{2}):([0-9]{2}))",
    re.ASCII,
)
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_TEXT = re.compile(r"-?[0-9]+", re.ASCII)
#: Deepest nesting of a record's JSON (the outermost object is depth 1).
MAX_JSON_DEPTH = 64
EVENT_ID_MAX_CHARS = 128
#: Integers beyond ±10^18 are saturated to this (far outside any record timestamp ± skew).
_SATURATED = 1 << 62
#: Absolute values of price (in cents), qty and amount must stay below this (amount: DECIMAL(18, 2)).
AMOUNT_LIMIT = Decimal(10) ** 16


class JsonNumber(str):
    """A JSON number, kept as its literal text (``1e3`` stays ``"1e3"``, ``-0`` stays ``"-0"``)."""

    __slots__ = ()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_JSON = json.JSONDecoder(parse_float=JsonNumber, parse_int=JsonNumber, parse_constant=_reject_constant)


def _check_tree(obj: Any) -> bool:
    """True when no container is nested deeper than :data:`MAX_JSON_DEPTH` and no string (key or
    value) holds a lone surrogate (``json`` turns an unpaired ``\\ud800`` escape into one)."""
    todo = [(obj, 1)]
    while todo:
        v, depth = todo.pop()
        if depth > MAX_JSON_DEPTH:
            return False
        items = v.items() if isinstance(v, dict) else enumerate(v)
        for k, x in items:
            if isinstance(k, str) and _has_surrogate(k):
                return False
            if isinstance(x, dict | list):
                todo.append((x, depth + 1))
            elif isinstance(x, str) and type(x) is str and _has_surrogate(x):
                return False
    return True


def _has_surrogate(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _text(v: Any) -> str | None:
    """A string-typed field's value: strings as they are, numbers as their literal, booleans as their JSON text."""
    if isinstance(v, str):  # also JsonNumber
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | Decimal):
        return str(v)
    return None


def _int_value(text: str) -> int:
    """The value of an integer literal ``[+-]?digits``, saturated to ±2^62 beyond 18 digits (no huge ``int()``)."""
    neg = text.startswith("-")
    digits = text.lstrip("+-").lstrip("0") or "0"
    if len(digits) > 18:
        return -_SATURATED if neg else _SATURATED
    return -int(digits) if neg else int(digits)


def parse_ts(v: Any) -> int | None:
    """Epoch ms of a ``ts`` value, or None when it is neither an integer nor the ISO-8601 form."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return max(-_SATURATED, min(_SATURATED, v))
    if not isinstance(v, str):
        return None
    if _EPOCH_TEXT.fullmatch(v):  # an integer literal, or a JSON string of digits: epoch ms
        return _int_value(v)
    if isinstance(v, JsonNumber):  # 1.0, 1e3: not an integer
        return None
    m = _ISO.fullmatch(v)
    if m is None:
        return None
    y, mo, d, h, mi, s, frac, z, sign, oh, om = m.groups()
    if z is None:
        if int(oh) > 23 or int(om) > 59:
            return None
        off = timedelta(hours=int(oh), minutes=int(om)) * (1 if sign == "+" else -1)
    else:
        off = timedelta(0)
    try:
        dt = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=timezone(off))
    except ValueError:
        return None
    return (dt - _EPOCH) // timedelta(milliseconds=1) + (int(frac) if frac else 0)


def _number(v: Any) -> Decimal | None:
    """A price: its value rounded half-up to cents, ``OUT_OF_RANGE`` when that is 10^16 or more in
    absolute value, None when it is not a number."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int | Decimal):
        v = str(v)
    if isinstance(v, str) and _NUMBER.fullmatch(v):
        return _cents(v)
    return None


def _integer(v: Any) -> int | None:
    """A qty: its value (``OUT_OF_RANGE_QTY`` when 10^16 or more in absolute value), None when not an integer."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        v = str(v)
    if isinstance(v, str) and _INTEGER.fullmatch(v):
        digits = v.lstrip("+-").lstrip("0") or "0"
        if len(digits) > 16:
            return OUT_OF_RANGE_QTY
        return -int(digits) if v.startswith("-") else int(digits)
    return None


#: Markers of a price / qty whose absolute value is 10^16 or more (``out_of_range:amount``).
OUT_OF_RANGE = Decimal("Infinity")
OUT_OF_RANGE_QTY = 1 << 80
_NUMBER_PARTS = re.compile(r"[+-]?([0-9]*)(?:\.([0-9]*))?(?:[eE]([+-]?[0-9]+))?", re.ASCII)


def _cents(text: str) -> Decimal:
    """A number string rounded half-up to cents, from its digits and exponent (``1e999999999999`` costs no
    more than ``1``; Python's ``Decimal`` cannot even hold exponents past 10^18)."""
    m = _NUMBER_PARTS.fullmatch(text)
    assert m is not None
    int_part, frac, exp_text = m.group(1), m.group(2) or "", m.group(3) or "0"
    digits = (int_part + frac).lstrip("0")
    if not digits:
        return ZERO
    exp_digits = exp_text.lstrip("+-").lstrip("0") or "0"
    exp = 10**12 if len(exp_digits) > 12 else int(exp_digits)
    if exp_text.startswith("-"):
        exp = -exp
    adjusted = len(digits) - 1 + exp - len(frac)  # the position of the leading digit
    if adjusted >= 16:
        return OUT_OF_RANGE
    if adjusted <= -4:  # |v| < 0.001
        return ZERO
    sign = "-" if text.startswith("-") else ""
    v = Decimal(f"{sign}{digits}E{exp - len(frac)}").quantize(CENT, rounding=ROUND_HALF_UP)
    return OUT_OF_RANGE if abs(v) >= AMOUNT_LIMIT else v + 0  # + 0: -0.00 → 0.00, as on the JVM


@dataclass(frozen=True, slots=True)
class ValidEvent:
    event_id: str
    event_type: str
    ts: int
    person: str
    campaign: str
    channel: str
    #: ``price`` (rounded half-up to cents) × ``qty`` for purchases; 0.00 for other events.
    amount: Decimal
    #: Every non-empty identifier of a known type, ``(type, stored value)``, in ``ID_PRIORITY`` order (then
    #: the schema's custom types).
    ids: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class DecodedFields:
    """A valid record's fields beyond :class:`ValidEvent`, as the job's ``zt_decoded`` view has them."""

    event: ValidEvent
    #: ``props.item_id`` as text, None when absent or empty.
    item_id: str | None
    #: exposures only: ``props.experiment_id`` as text (None when empty) and ``props.variation_id`` when
    #: it is an integer of at most 10 digits in the 32-bit range.
    exp_key: str | None
    variation: int | None
    #: ``props`` as compact JSON (:func:`compact_json`) when it is an object, else None.
    props: str | None


class Pseudonyms:
    """``pseudonymise`` with a cache: the same raw spellings recur on every event of a person."""

    def __init__(self, pii: PiiSettings, identity: Any = None, schema: EventSchema | None = None) -> None:
        from config.settings import IdentitySettings
        from operators.identity import IdentityRules

        #: The declared props' checks (config/schema.yaml), in check order.
        self.schema = schema or EventSchema()
        self.prop_checks = self.schema.prop_checks()

        #: The identity guard rails: junk identifiers are dropped and the anchor (``person``) is the
        #: strongest clean identifier in ``identity.priority`` order, as the job's decode does.
        identity = identity or IdentitySettings()
        self.rules = IdentityRules.from_settings(identity, pii, self.schema)
        #: Identifier types read from ``ids``: the built-in ones, then the schema's custom ones.
        self.id_types = self.schema.id_types()
        self._custom = dict(self.schema.identifiers)
        #: Longest identifier value (code points) an event may carry (``too_long:ids`` beyond).
        self.max_id_chars = identity.max_identifier_length
        self._secret = pii.hmac_secret.get_secret_value()
        self._cc = pii.default_country_code
        self._cache: dict[tuple[str, str], str] = {}

    @classmethod
    def of(cls, settings: Settings) -> Pseudonyms:
        """The decode context of a configuration: its PII key, identity rules and declared schema."""
        return cls(settings.pii, settings.identity, settings.event_schema)

    def __call__(self, id_type: str, raw: str) -> str:
        key = (id_type, raw)
        out = self._cache.get(key)
        if out is None:
            if len(self._cache) > 200_000:
                self._cache.clear()
            out = self._cache[key] = pseudonymise(id_type, raw, self._secret, self._cc, self._custom)
        return out


_DEFAULT_RULES: list[Any] = []


def _default_rules() -> Any:
    """The default identity rules (junk values, priority) for callers passing a bare pseudonym function."""
    if not _DEFAULT_RULES:
        from config.settings import IdentitySettings
        from operators.identity import IdentityRules

        _DEFAULT_RULES.append(IdentityRules.from_settings(IdentitySettings()))
    return _DEFAULT_RULES[0]


def decode(value: bytes | None, record_ts: int, job: JobSettings, pseudonyms: Any) -> ValidEvent | str:
    """The validated event, or the DLQ reason of the first failing check (docs/semantics.md table)."""
    out = _decode(value, record_ts, job, pseudonyms, False)
    return out if isinstance(out, str) else out.event


def decode_full(value: bytes | None, record_ts: int, job: JobSettings, pseudonyms: Any) -> DecodedFields | str:
    """:func:`decode` plus the other fields of the job's ``zt_decoded`` view (the differential tests)."""
    return _decode(value, record_ts, job, pseudonyms, True)


def _decode(value: bytes | None, record_ts: int, job: JobSettings, pseudonyms: Any,
            full: bool) -> DecodedFields | str:
    if value is None:  # a Kafka tombstone: no value, so not a JSON object
        return "malformed_json"
    if len(value) > job.max_event_bytes:
        return "oversized"
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return "not_utf8"
    try:
        obj = _JSON.decode(text)
    except (ValueError, RecursionError):
        return "malformed_json"
    if not isinstance(obj, dict):
        return "malformed_json"
    # Only a \u escape can make a lone surrogate, only that many brackets can nest that deep.
    if ("\\u" in text or text.count("{") + text.count("[") > MAX_JSON_DEPTH) and not _check_tree(obj):
        return "malformed_json"

    raw_id = obj.get("event_id")
    if raw_id is None or raw_id == "":
        return "missing_field:event_id"
    event_id = _text(raw_id)
    if event_id is None or len(event_id) > EVENT_ID_MAX_CHARS:
        return "wrong_type:event_id"

    raw_type = obj.get("event_type")
    if raw_type is None or raw_type == "":
        return "missing_field:event_type"
    event_type = _text(raw_type)
    if event_type is None or not _EVENT_TYPE.fullmatch(event_type):
        return "wrong_type:event_type"

    raw_ts = obj.get("ts")
    if raw_ts is None:
        return "missing_field:ts"
    ts = parse_ts(raw_ts)
    if ts is None:
        return "wrong_type:ts"

    ids = obj.get("ids")
    if ids is None:
        return "missing_field:ids"
    if not isinstance(ids, dict):
        return "wrong_type:ids"
    max_chars = getattr(pseudonyms, "max_id_chars", None) or _default_max_id_chars()
    raw_ids = []
    for id_type in getattr(pseudonyms, "id_types", ID_PRIORITY):
        v = _text(ids.get(id_type))
        if v:
            if len(v) > max_chars:
                return "too_long:ids"
            raw_ids.append((id_type, v))
    found = [(t, pseudonyms(t, v)) for t, v in raw_ids]
    rules = getattr(pseudonyms, "rules", None) or _default_rules()
    clean = rules.clean_ids(found) if found else ()
    if not clean:
        return "no_identifier"
    person = clean[0]

    props = obj.get("props")
    if not isinstance(props, dict):
        props = {}
    price = qty = None
    if props.get("price") is not None:
        price = _number(props["price"])
        if price is None:
            return "wrong_type:props.price"
    if props.get("qty") is not None:
        qty = _integer(props["qty"])
        if qty is None:
            return "wrong_type:props.qty"
    amount = ZERO
    if price is OUT_OF_RANGE or qty == OUT_OF_RANGE_QTY:
        return "out_of_range:amount"
    if price is not None:
        # < 10^16 with two decimals is at most 18 digits: exact in the default 28-digit context
        product = price * (1 if qty is None else qty)
        if abs(product) >= AMOUNT_LIMIT:
            return "out_of_range:amount"
        amount = product.quantize(CENT)

    schema = getattr(pseudonyms, "schema", None)
    if schema is not None:
        if schema.undeclared_events == "reject" and event_type not in schema.events:
            return "undeclared:event_type"
        reason = check_props(event_type, props, pseudonyms.prop_checks)
        if reason is not None:
            return reason

    if ts > record_ts + job.max_future_skew_ms:
        return "future_ts"
    if record_ts - ts > job.allowed_lateness_ms:
        return "late"

    if event_type != "purchase":
        amount = ZERO
    campaign = _text(props.get("campaign_id")) or NONE
    channel = _text(props.get("channel")) or _text(obj.get("source")) or NONE
    event = ValidEvent(event_id, event_type, ts, person, campaign, channel, amount, tuple(found))
    if not full:
        return DecodedFields(event, None, None, None, None)
    exp_key = variation = None
    if event_type == "exposure":
        exp_key = _text(props.get("experiment_id")) or None
        var = _text(props.get("variation_id"))
        if var is not None and _VARIATION.fullmatch(var) and -(2**31) <= int(var) < 2**31:
            variation = int(var)
    raw_props = obj.get("props")
    return DecodedFields(event, _text(props.get("item_id")) or None, exp_key, variation,
                         compact_json(raw_props) if isinstance(raw_props, dict) else None)


def check_props(event_type: str, props: dict[str, Any], checks: list[tuple[str, str, PropSpec]]) -> str | None:
    """The DLQ reason of the first declared prop (``config/schema.yaml``, in check order) that is missing
    or of the wrong type, else None. Types (docs/schema.md): ``string`` a string, number (its literal) or
    boolean (``true``/``false``); ``integer`` a JSON integer or ``[+-]digits`` string, |v| < 10^16;
    ``decimal`` a JSON number or number string, |v| rounded to cents < 10^16; ``boolean`` JSON true/false;
    ``timestamp`` as ``ts``; ``list`` an array of strings (at most 1,000). null counts as absent, and so does
    "" for a ``string``."""
    for et, name, spec in checks:
        if et != "*" and et != event_type:
            continue
        v = props.get(name)
        if v is None or (v == "" and spec.type == "string"):
            if spec.required:
                return f"missing_field:props.{name}"
            continue
        bad = _prop_problem(spec.type, v)
        if bad is not None:
            return f"{bad}:props.{name}"
    return None


def _prop_problem(kind: str, v: Any) -> str | None:
    if kind == "string":
        return None if _text(v) is not None else "wrong_type"
    if kind == "integer":
        n = _integer(v)
        return "wrong_type" if n is None else "out_of_range" if n == OUT_OF_RANGE_QTY else None
    if kind == "decimal":
        d = _number(v)
        return "wrong_type" if d is None else "out_of_range" if d is OUT_OF_RANGE else None
    if kind == "boolean":
        return None if isinstance(v, bool) else "wrong_type"
    if kind == "timestamp":
        return None if parse_ts(v) is not None else "wrong_type"
    if kind == "list":
        ok = isinstance(v, list) and len(v) <= MAX_LIST_ITEMS and all(type(x) is str for x in v)
        return None if ok else "wrong_type"
    raise ValueError(f"unknown prop type {kind!r}")


def typed_props(event_type: str, props_json: str, schema: EventSchema) -> dict[str, Any] | None:
    """The props of a valid event (the decode's compact JSON) with each declared prop as its declared type:
    ``integer`` → int, ``decimal`` → Decimal (exactly as sent), ``timestamp`` → epoch ms, ``string`` → str
    (a number as its literal text), ``boolean`` and ``list`` as they are; undeclared numbers as int or float
    (as a plain JSON reader gives them). None when the schema declares no prop for ``event_type`` (the
    caller reads the JSON as it is). Rules, tags and action params read these."""
    declared = schema.props_of(event_type)
    if not declared:
        return None
    props = _JSON.decode(props_json)
    if not isinstance(props, dict):
        return None
    out: dict[str, Any] = {}
    for name, v in props.items():
        spec = declared.get(name)
        if v is None or spec is None or spec.type in ("boolean", "list"):
            out[name] = _plain(v)
        elif spec.type == "string":
            out[name] = _text(v)
        elif spec.type == "integer":
            out[name] = _integer(v)
        elif spec.type == "decimal":
            out[name] = Decimal(v) if isinstance(v, str) and _NUMBER.fullmatch(v) else _plain(v)
        else:
            out[name] = parse_ts(v)
    return out


def _plain(v: Any) -> Any:
    """A parsed JSON value with numbers as int/float instead of their literal text."""
    if isinstance(v, JsonNumber):
        return int(v) if _INTEGER.fullmatch(v) else float(v)
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


_VARIATION = re.compile(r"[+-]?[0-9]{1,10}", re.ASCII)


def _default_max_id_chars() -> int:
    from config.settings import IdentitySettings

    return IdentitySettings().max_identifier_length


def compact_json(v: Any) -> str:
    """Compact JSON text: no white space, keys in first-seen order, numbers as their literal text, strings
    escaping only ``"``, ``\\`` and U+0000–U+001F (``json.dumps(..., ensure_ascii=False)``'s escapes).
    The JVM's ``StrictJson.write`` gives the same text."""
    if isinstance(v, JsonNumber):
        return str.__str__(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, dict):
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + compact_json(x) for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ",".join(compact_json(x) for x in v) + "]"
    raise TypeError(f"compact_json: {type(v).__name__} is not a JSON value")


