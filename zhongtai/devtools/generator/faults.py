"""How one clean event becomes a bad record, a boundary case or a conflicting duplicate.

Each function takes the event as a fresh ``dict`` (or its serialised bytes) and a
``random.Random`` seeded per record, so the result depends on the seed only. A DLQ mutator makes
exactly its own check fail and leaves every earlier check passing; whether later checks also fail is
the caller's choice (compound faults). Edge cases (:func:`apply_edge`) stay valid.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import orjson

_dumps = orjson.dumps

#: Byte sequences that are not UTF-8 (each fails a strict decoder wherever it sits between ASCII).
BAD_UTF8: tuple[bytes, ...] = (
    b"\xff",
    b"\x80",
    b"\xc3(",
    "été".encode("latin-1"),
    b"\xed\xa0\x80",  # an encoded surrogate (CESU-8)
    b"\xc0\xaf",  # overlong '/'
    b"\xe4\xb8",  # a 3-byte sequence cut short
    "南京路店".encode("gbk"),  # a legacy point-of-sale system
    b"\xf4\x90\x80\x80",  # beyond U+10FFFF
)
_UTF8_MARK = "@@NOT_UTF8@@"
_NAN_MARK = "@@NAN@@"


def _props(d: dict[str, Any]) -> dict[str, Any]:
    p = d.get("props")
    if not isinstance(p, dict):
        p = d["props"] = {}
    return p


def pad_to(d: dict[str, Any], size: int, field: str = "note") -> bytes:
    """Serialise ``d`` with an ASCII ``props.<field>`` that makes it exactly ``size`` bytes long."""
    p = _props(d)
    p[field] = ""
    base = len(_dumps(d))
    if base > size:
        raise ValueError(f"event is already {base} bytes, cannot pad to {size}")
    p[field] = "x" * (size - base)
    out = _dumps(d)
    assert len(out) == size
    return out


# --- DLQ reasons checked on the parsed payload (checks 4–14) -------------------------------------------


def _missing(field: str) -> Callable[[dict[str, Any], random.Random, int], None]:
    def mutate(d: dict[str, Any], rnd: random.Random, ts: int) -> None:
        how = rnd.randrange(3 if field in ("event_id", "event_type") else 2)
        if how == 0:
            d.pop(field, None)
        elif how == 1:
            d[field] = None
        else:
            d[field] = ""

    return mutate


def _wrong_event_id(d: dict[str, Any], rnd: random.Random, ts: int) -> None:
    eid = d["event_id"]
    d["event_id"] = rnd.choice([{"id": eid}, [eid], (eid + "-" + "x" * 300)[: rnd.randint(129, 300)]])


def _wrong_event_type(d: dict[str, Any], rnd: random.Random, ts: int) -> None:
    d["event_type"] = rnd.choice(
        [
            5,
            {"name": "page_view"},
            "Page View",
            "PAGE_VIEW",
            "page-view",
            "1st_visit",
            "_page_view",
            "a" * 65,
            "页面浏览",
            "page_view ",
            "page_view\n",
        ]
    )


def _wrong_ts(d: dict[str, Any], rnd: random.Random, ts: int) -> None:
    d["ts"] = rnd.choice(
        [
            "yesterday",
            "",
            ts + 0.5,
            True,
            {"ms": ts},
            "2026-11-20T01:02:03",  # no offset
            "2026-11-20 01:02:03Z",  # space instead of T
            "2026-11-20T25:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-11-20T01:02:03.456+0800",  # offset without colon
            "20261120T010203Z",
        ]
    )


def _wrong_ids(d: dict[str, Any], rnd: random.Random, ts: int) -> None:
    ids = d.get("ids") or {}
    first = next(iter(ids.values()), "d-1")
    d["ids"] = rnd.choice([first, [first], 42, True])


def _no_identifier(d: dict[str, Any], rnd: random.Random, ts: int) -> None:
    d["ids"] = rnd.choice(
        [
            {},
            {"device_id": ""},
            {"device_id": "", "user_id": None},
            {"imei": "860000000000001"},
            {"cookie_id": "", "phone": "", "email": None},
        ]
    )


def _wrong_price(d: dict[str, Any], rnd: random.Random, ts: int) -> None:
    _props(d)["price"] = rnd.choice(["cheap", "12,50", "¥12.50", "NaN", True, {"amount": 12.5}, [12.5]])


def _wrong_qty(d: dict[str, Any], rnd: random.Random, ts: int) -> None:
    _props(d)["qty"] = rnd.choice([1.5, "two", "1.5", True, [2], 2.5])


PAYLOAD_MUTATORS: dict[str, Callable[[dict[str, Any], random.Random, int], None]] = {
    "missing_field:event_id": _missing("event_id"),
    "wrong_type:event_id": _wrong_event_id,
    "missing_field:event_type": _missing("event_type"),
    "wrong_type:event_type": _wrong_event_type,
    "missing_field:ts": _missing("ts"),
    "wrong_type:ts": _wrong_ts,
    "missing_field:ids": _missing("ids"),
    "wrong_type:ids": _wrong_ids,
    "no_identifier": _no_identifier,
    "wrong_type:props.price": _wrong_price,
    "wrong_type:props.qty": _wrong_qty,
}


# --- DLQ reasons checked on the bytes (checks 1–3) ------------------------------------------------


def prepare_not_utf8(d: dict[str, Any]) -> None:
    """Mark where :func:`break_utf8` puts the invalid bytes (a text field, as a bad encoder would)."""
    _props(d)["title"] = _UTF8_MARK


def break_utf8(v: bytes, rnd: random.Random) -> bytes:
    bad = rnd.choice(BAD_UTF8)
    mark = _UTF8_MARK.encode()
    return v.replace(mark, bad, 1) if mark in v else v + bad


def prepare_malformed(d: dict[str, Any]) -> None:
    _props(d)["price"] = _NAN_MARK


def break_json(v: bytes, d: dict[str, Any], rnd: random.Random) -> bytes:
    """Not a JSON object: cut short (at a character boundary), NaN, trailing comma, an array, a string,
    a Python repr, a scalar, empty or blank."""
    how = rnd.randrange(10)
    if how in (0, 1, 2):
        cuts = [i for i in range(1, len(v)) if v[i] & 0xC0 != 0x80]
        return v[: rnd.choice(cuts)]
    if how == 3:
        return v.replace(f'"{_NAN_MARK}"'.encode(), b"NaN", 1)
    v = v.replace(f'"{_NAN_MARK}"'.encode(), b"1.00", 1)
    if how == 4:
        return v[:-1] + b",}"
    if how == 5:
        return b"[" + v + b"]"
    if how == 6:
        return _dumps(v.decode("utf-8", "surrogateescape"))
    if how == 7:
        return str(d).encode("utf-8", "surrogateescape")
    return rnd.choice([b"42", b"null", b"", b"   ", b"true"])


def oversize(v: bytes | None, d: dict[str, Any], rnd: random.Random, max_bytes: int) -> bytes:
    """Longer than ``max_bytes``: just over (max+1), far over, or junk. ``v`` is an already broken
    serialisation (compound fault) that is padded with blanks instead."""
    if v is not None:
        return v + b" " * max(0, max_bytes + 1 - len(v) + rnd.randrange(100))
    how = rnd.randrange(4)
    if how == 0:
        return pad_to(d, max_bytes + 1)
    if how == 1:
        return pad_to(d, rnd.randint(max_bytes + 2, 2 * max_bytes))
    if how == 2:
        chunk = b"<html><body>502 Bad Gateway</body></html>\n"
        return chunk * (max_bytes // len(chunk) + 1)
    p = _props(d)
    p["review"] = ""
    base = len(_dumps(d))
    p["review"] = "好评" * ((max_bytes + 1 - base) // 6 + 1)
    return _dumps(d)


# --- valid boundary cases -----------------------------------------------------------------------


def apply_edge(
    edge: str, d: dict[str, Any], rnd: random.Random, price_cents: int, max_bytes: int
) -> bytes | None:
    """Turn ``d`` into the boundary case ``edge`` (still valid). Returns the bytes when the case is
    about the serialisation itself, else None (the caller serialises ``d``)."""
    p = _props(d)
    ids = d["ids"]
    if edge == "exact_max_bytes":
        return pad_to(d, max_bytes)
    if edge == "event_id_128_chars":
        d["event_id"] = (d["event_id"] + "-" + "0" * 128)[:128]
    elif edge == "event_type_64_chars":
        d["event_type"] = "custom_" + "x" * 57
    elif edge == "source_missing":
        d.pop("source", None)
    elif edge == "campaign_empty":
        p["campaign_id"] = ""
    elif edge == "channel_empty":
        p["channel"] = ""
    elif edge in ("price_half_up", "qty_and_price_as_strings", "price_integer"):
        d["event_type"] = "purchase"
        p.setdefault("order_id", f"SO{rnd.randrange(10**11, 10**12)}")
        if edge == "price_half_up":
            p["price"] = (price_cents * 10 + 5) / 1000
            p.pop("qty", None)
        elif edge == "qty_and_price_as_strings":
            p["price"] = f"{price_cents // 100}.{price_cents % 100:02d}"
            p["qty"] = str(rnd.randint(1, 3))
        else:
            p["price"] = max(1, price_cents // 100)
            p["qty"] = rnd.randint(1, 3)
    elif edge == "empty_stronger_ids":
        d["ids"] = {"user_id": "", "unionid": None, **{k: v for k, v in ids.items() if k != "user_id"}}
        if not any(d["ids"].get(k) for k in ("openid", "phone", "email", "device_id", "cookie_id")):
            d["ids"]["device_id"] = "d-edge"
    elif edge == "unknown_id_type":
        ids["imei"] = "86" + str(rnd.randrange(10**12, 10**13))
    # delay_equals_lateness, ts_equals_skew: only the timing differs (timeline.py).
    return None


# --- same event_id, other content ---------------------------------------------------------------


def conflict(d: dict[str, Any], rnd: random.Random, ts: int, max_shift_ms: int) -> None:
    """A valid event with ``d``'s event_id and different content (type, price, time, campaign or ids).
    The event time moves forward by at most ``max_shift_ms`` (keeps it within skew and lateness)."""
    p = _props(d)
    how = rnd.randrange(5)
    if how == 0:
        d["event_type"] = "add_to_cart" if d["event_type"] != "add_to_cart" else "purchase"
        p.setdefault("price", 99.0)
    elif how == 1:
        p["price"] = round(rnd.uniform(1, 999), 2)
        p["qty"] = rnd.randint(1, 3)
    elif how == 2:
        d["ts"] = ts + rnd.randint(1, max(1, min(30_000, max_shift_ms)))
    elif how == 3:
        p["campaign_id"] = "cmp-retarget"
        p["channel"] = "sms"
    else:
        d["ids"] = {**d["ids"], "user_id": f"u9{rnd.randrange(10**7):07d}"}
