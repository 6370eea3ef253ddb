"""docs/semantics.md decode for the hand-written consumers: an orjson fast path for the common shape,
the oracle's own :func:`zhongtai.devtools.generator.oracle.decode` for everything else.

The fast path only returns a result when every field has the plain type (strings, integer ``ts`` or
ISO string, integer/decimal-string/short-float price, ...) for which its answer is, by construction,
the oracle's; anything unusual (a number where a string is expected, an orjson parse error, a float
with more than 15 significant digits, a missing identifier, ...) is re-decoded by the oracle. So the
consumers are exact by construction, and ``bench.check`` verifies it against the oracle's output.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import orjson

from config.settings import JobSettings
from operators.envelope import (
    _EVENT_TYPE,
    AMOUNT_LIMIT,
    CENT,
    ID_PRIORITY,
    NONE,
    ZERO,
    ValidEvent,
    _default_max_id_chars,
    _default_rules,
    _integer,
    _number,
    decode,
    parse_ts,
)

_loads = orjson.loads
_JSONError = orjson.JSONDecodeError


def _short_float(f: float) -> Decimal | None:
    """The JSON text's decimal value of a float parsed from it, when that is certain (≤ 15 digits)."""
    r = repr(f)
    if "n" in r:  # inf / nan
        return None
    mant = r.split("e")[0].lstrip("-").replace(".", "").lstrip("0")
    return Decimal(r) if len(mant) <= 15 else None


def fast_decode(value: bytes, record_ts: int, job: JobSettings, pseudonyms: Any) -> ValidEvent | str:
    """Same contract as the oracle's ``decode``: the valid event or the DLQ reason."""
    if len(value) > job.max_event_bytes:
        return "oversized"
    try:
        obj = _loads(value)
    except _JSONError:
        return decode(value, record_ts, job, pseudonyms)
    if type(obj) is not dict:
        return decode(value, record_ts, job, pseudonyms)
    eid = obj.get("event_id")
    et = obj.get("event_type")
    ts = obj.get("ts")
    ids = obj.get("ids")
    if (
        type(eid) is not str or not eid or len(eid) > 128
        or type(et) is not str or not _EVENT_TYPE.fullmatch(et)
        or type(ids) is not dict
    ):
        return decode(value, record_ts, job, pseudonyms)
    if type(ts) is not int:
        ts = parse_ts(ts) if type(ts) is str else None
        if ts is None:
            return decode(value, record_ts, job, pseudonyms)
    # Only flat events (no container inside ids, props or any other top-level object): deeper ones go
    # through the oracle's nesting-depth check.
    for x in obj.values():
        tx = type(x)
        if tx is list or (tx is dict and any(type(y) in (dict, list) for y in x.values())):
            return decode(value, record_ts, job, pseudonyms)
    max_chars = getattr(pseudonyms, "max_id_chars", None) or _default_max_id_chars()
    found = []
    for t in ID_PRIORITY:
        v = ids.get(t)
        if v is None:
            continue
        if type(v) is not str or len(v) > max_chars:
            return decode(value, record_ts, job, pseudonyms)
        if v:
            found.append((t, pseudonyms(t, v) if t in ("phone", "email") else v))
    # The anchor: the strongest clean identifier (identity.priority, junk dropped), as the job's decode.
    clean = (getattr(pseudonyms, "rules", None) or _default_rules()).clean_ids(found)
    if not clean:
        return decode(value, record_ts, job, pseudonyms)
    person = clean[0]
    props = obj.get("props")
    if type(props) is not dict:
        props = {}
    price = props.get("price")
    if price is not None:
        tp = type(price)
        if tp is int:
            price = Decimal(price)
        elif tp is str:
            price = _number(price)
        elif tp is float:
            price = _short_float(price)
        else:
            price = None
        if price is None or not abs(price) < AMOUNT_LIMIT:  # not a number, or out_of_range:amount
            return decode(value, record_ts, job, pseudonyms)
    qty = props.get("qty")
    if qty is not None:
        qty = qty if type(qty) is int else _integer(qty) if type(qty) is str else None
        if qty is None or not abs(qty) < AMOUNT_LIMIT:
            return decode(value, record_ts, job, pseudonyms)
    if price is not None and not abs(price.quantize(CENT, rounding=ROUND_HALF_UP) * (1 if qty is None else qty)) < AMOUNT_LIMIT:
        return decode(value, record_ts, job, pseudonyms)
    campaign = props.get("campaign_id")
    channel = props.get("channel")
    source = obj.get("source")
    if any(x is not None and type(x) is not str for x in (campaign, channel, source)):
        return decode(value, record_ts, job, pseudonyms)
    if ts > record_ts + job.max_future_skew_ms:
        return "future_ts"
    if record_ts - ts > job.allowed_lateness_ms:
        return "late"
    amount = ZERO
    if et == "purchase":
        unit = price.quantize(CENT, rounding=ROUND_HALF_UP) if price is not None else ZERO
        amount = (unit * (1 if qty is None else qty)).quantize(CENT)
    return ValidEvent(eid, et, ts, person, campaign or NONE, channel or source or NONE, amount, tuple(found))
