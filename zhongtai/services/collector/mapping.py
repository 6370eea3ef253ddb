"""Segment-like messages → zhongtai's event envelope (pure: no clients, no clock; docs/collector.md).

A message is one ``track``, ``identify`` or ``page`` call as Segment's HTTP API shapes it::

    {"type": "track", "messageId": "...", "event": "Order Completed", "userId": "u1",
     "anonymousId": "a1", "timestamp": "2026-12-07T10:00:00.123Z", "properties": {...}, "context": {...}}

:func:`to_envelope` maps it onto the envelope of docs/semantics.md, or returns the :class:`Rejection` of the
first field that cannot be mapped. The envelope's own checks (types, lengths, identifiers, price and qty,
clock skew) are left to the job's decode, which the collector runs on the mapped bytes: what it accepts, the
job accepts.

Mapping (each pinned by tests/unit/test_collector_mapping.py):
  * ``messageId`` → ``event_id`` (required: the job deduplicates by it, so a retried request counts once).
  * ``track``: ``event`` → ``event_type`` by :func:`event_type_of` (``Order Completed`` → ``order_completed``,
    ``addToCart`` → ``add_to_cart``); ``properties`` → ``props``. ``page``: ``event_type`` ``page_view``,
    ``props`` = ``properties`` plus ``page`` = ``name`` when given. ``identify``: ``event_type`` ``identify``,
    ``props`` = ``{"traits": traits}``.
  * ``userId`` → ``ids.user_id``, ``anonymousId`` → ``ids.cookie_id``, ``context.device.id`` →
    ``ids.device_id``; an ``ids`` object (zhongtai's extension: ``phone``, ``email``, ``openid``, ...) is
    merged in; the same type given two different values is rejected (``conflict:ids.<type>``).
  * ``timestamp`` (ISO-8601 with a zone, or epoch milliseconds) → ``ts``, corrected for the sender's
    clock when ``sentAt`` is given, as Segment does: ``ts = received - (sentAt - timestamp)``; no
    ``timestamp``: the time the collector received it.
  * ``context.campaign.name`` (UTM campaign) → ``props.campaign_id`` unless ``properties`` has one.
  * ``source`` comes from the write key, never from the message; ``context`` is kept as it is.

Numbers keep their literal text end to end (the request is read with :class:`JsonNumber` like the decode
reads a record, and written back as that text), so ``"price": 12.50`` reaches Kafka as ``12.50``; the
envelope is compact UTF-8 JSON (orjson: five times faster than ``compact_json`` here, same value).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from operators.envelope import ID_PRIORITY, JsonNumber

__all__ = ["KINDS", "Mapped", "Rejection", "event_type_of", "explain", "parse_json", "parse_time", "to_envelope"]

#: The message types the collector takes, and the ``event_type`` of the two that have a fixed one.
KINDS = ("track", "identify", "page")
FIXED_TYPES = {"identify": "identify", "page": "page_view"}

_EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}", re.ASCII)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])", re.ASCII)
_NOT_WORD = re.compile(r"[^a-z0-9]+", re.ASCII)
_EPOCH_MS = re.compile(r"-?[0-9]{1,15}", re.ASCII)
_EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_JSON = json.JSONDecoder(parse_float=JsonNumber, parse_int=JsonNumber, parse_constant=_reject_constant)


def parse_json(body: bytes) -> Any:
    """A request body as JSON, numbers kept as their literal text (:class:`JsonNumber`); ``ValueError`` when
    it is not UTF-8 JSON."""
    try:
        return _JSON.decode(body.decode("utf-8"))
    except (UnicodeDecodeError, RecursionError) as e:
        raise ValueError(str(e)) from None


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message was not accepted: a DLQ-style ``reason`` (``missing_field:messageId``, or the job's own
    reason such as ``wrong_type:props.price``) and what the sender should do."""

    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Mapped:
    """A message as the envelope (``value``: compact JSON bytes) and its ordering key's preference:
    ``anonymous`` is ``cookie_id:<anonymousId>`` when the message has one (a browser's events keep one
    order across ``identify``), else None (the collector keys by the decoded anchor)."""

    value: bytes
    anonymous: str | None


def event_type_of(name: str) -> str | None:
    """The ``event_type`` of a track call's ``event``: camelCase split into words, lower-cased, every run of
    characters other than ``a-z0-9`` made one ``_``, leading and trailing ``_`` dropped; None when the
    result does not match ``[a-z][a-z0-9_]{0,63}`` (empty, starts with a digit, longer than 64)."""
    snake = _NOT_WORD.sub("_", _CAMEL.sub("_", name).lower()).strip("_")
    return snake if _EVENT_TYPE.fullmatch(snake) else None


def parse_time(v: Any) -> int | None:
    """Epoch ms of a ``timestamp`` / ``sentAt``: a JSON integer (epoch ms, up to 15 digits) or an ISO-8601
    string with a zone (``Z`` or ``±HH:MM``; any fraction of a second, cut to ms); None otherwise."""
    if isinstance(v, JsonNumber) or (isinstance(v, int) and not isinstance(v, bool)):
        text = str.__str__(v) if isinstance(v, JsonNumber) else str(v)
        return int(text) if _EPOCH_MS.fullmatch(text) else None
    if not isinstance(v, str) or len(v) > 40:
        return None
    try:
        dt = datetime.fromisoformat(v)
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    return (dt - _EPOCH) // timedelta(milliseconds=1)


def _literal(v: Any) -> Any:
    """orjson's hook for what it does not write itself: a JSON number as its literal text."""
    if isinstance(v, JsonNumber):
        return orjson.Fragment(str.__str__(v))
    raise TypeError(f"{type(v).__name__} is not a JSON value")


def _text(v: Any) -> str | None:
    """An identifier given as a string or a number, as text; None for anything else."""
    if isinstance(v, str):
        return str.__str__(v)
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return None


def _ids(msg: dict[str, Any]) -> dict[str, Any] | Rejection:
    ids: dict[str, Any] = {}
    extra = msg.get("ids")
    if extra is not None and not isinstance(extra, dict):
        return Rejection("wrong_type:ids", "ids must be an object of identifier type → value "
                                           f"({', '.join(ID_PRIORITY)})")
    device = msg.get("context", {}).get("device") if isinstance(msg.get("context"), dict) else None
    named = (("userId", "user_id", msg.get("userId")), ("anonymousId", "cookie_id", msg.get("anonymousId")),
             ("context.device.id", "device_id", device.get("id") if isinstance(device, dict) else None))
    for field, id_type, raw in named:
        if raw is None or raw == "":
            continue
        value = _text(raw)
        if value is None:
            return Rejection(f"wrong_type:{field}", f"{field} must be a string (or a number)")
        ids[id_type] = value
    for id_type, raw in (extra or {}).items():
        if raw is None or raw == "":
            continue
        given = ids.get(id_type)
        if given is not None and given != _text(raw):
            return Rejection(f"conflict:ids.{id_type}", f"ids.{id_type} differs from the {id_type} the message "
                                                        "already names (userId / anonymousId / context.device.id): "
                                                        "send one value")
        ids[id_type] = raw
    return ids


def _props(kind: str, msg: dict[str, Any]) -> dict[str, Any] | Rejection:
    field = "traits" if kind == "identify" else "properties"
    given = msg.get(field)
    if given is None:
        given = {}
    if not isinstance(given, dict):
        return Rejection(f"wrong_type:{field}", f"{field} must be an object")
    if kind == "identify":
        return {"traits": given}
    props = dict(given)
    if kind == "page" and isinstance(msg.get("name"), str) and msg["name"] and "page" not in props:
        props["page"] = msg["name"]
    context = msg.get("context")
    campaign = context.get("campaign") if isinstance(context, dict) else None
    name = campaign.get("name") if isinstance(campaign, dict) else None
    if isinstance(name, str) and name and props.get("campaign_id") in (None, ""):
        props["campaign_id"] = name
    return props


def to_envelope(msg: Any, kind: str | None, source: str, received_ms: int,
                sent_at: Any = None) -> Mapped | Rejection:
    """The envelope of one message, or why it cannot be mapped.

    ``kind`` is the endpoint's type (``track`` for ``/v1/track``) or None for ``/v1/batch``, where each
    message says its ``type``. ``source`` is the write key's; ``received_ms`` the collector's clock (also the
    Kafka record's timestamp, which the job's future/late checks use); ``sent_at`` the request's ``sentAt``
    (a message's own ``sentAt`` wins).
    """
    if not isinstance(msg, dict):
        return Rejection("wrong_type:message", "each event must be a JSON object")
    kind = kind or msg.get("type")
    if kind not in KINDS:
        return Rejection("wrong_type:type", f"type must be one of {', '.join(KINDS)} (got {msg.get('type')!r})")
    message_id = msg.get("messageId")
    if message_id is None or message_id == "":
        return Rejection("missing_field:messageId", "send a unique messageId per event (the SDKs do): the job "
                                                    "deduplicates by it, so a retried request counts once")
    if kind == "track":
        event = msg.get("event")
        if event is None or event == "":
            return Rejection("missing_field:event", "a track call needs its event name")
        event_type = event_type_of(event) if isinstance(event, str) else None
        if event_type is None:
            return Rejection("wrong_type:event", f"event {str(event)[:80]!r} has no ASCII name: use letters a-z, "
                                                 "digits and separators, starting with a letter (≤ 64)")
        if event_type in FIXED_TYPES.values():
            return Rejection("reserved:event", f"event {event_type!r} is reserved: call identify() or page()")
    else:
        event_type = FIXED_TYPES[kind]

    ids = _ids(msg)
    if isinstance(ids, Rejection):
        return ids
    props = _props(kind, msg)
    if isinstance(props, Rejection):
        return props

    ts = received_ms
    if msg.get("timestamp") is not None:
        stamped = parse_time(msg["timestamp"])
        if stamped is None:
            return Rejection("wrong_type:timestamp", "timestamp must be ISO-8601 with a zone "
                                                     "(2026-12-07T10:00:00.000Z) or epoch milliseconds")
        sent = msg.get("sentAt", sent_at)
        sent_ms = parse_time(sent) if sent is not None else None
        if sent is not None and sent_ms is None:
            return Rejection("wrong_type:sentAt", "sentAt must be ISO-8601 with a zone or epoch milliseconds")
        ts = stamped if sent_ms is None else received_ms - (sent_ms - stamped)

    envelope: dict[str, Any] = {"event_id": message_id, "event_type": event_type, "ts": JsonNumber(ts), "ids": ids,
                                "props": props, "source": source}
    if isinstance(msg.get("context"), dict):
        envelope["context"] = msg["context"]
    try:
        value = orjson.dumps(envelope, default=_literal, option=orjson.OPT_PASSTHROUGH_SUBCLASS)
    except orjson.JSONEncodeError:
        return Rejection("malformed_json", "a string holds a lone UTF-16 surrogate escape (\\ud800...): "
                                           "send whole characters")
    anonymous = ids.get("cookie_id")
    return Mapped(value, f"cookie_id:{anonymous}" if isinstance(anonymous, str) else None)


#: What a sender should do about each reason the job's decode can give (docs/semantics.md's table).
_ADVICE = {
    "oversized": "the event is larger than job.max_event_bytes once mapped: send fewer or smaller properties",
    "malformed_json": "the event is not valid JSON",
    "missing_field:event_id": "send a messageId",
    "wrong_type:event_id": "messageId must be a string of at most 128 characters",
    "wrong_type:event_type": "the event name does not map to [a-z][a-z0-9_]{0,63}",
    "wrong_type:ts": "timestamp must be ISO-8601 with a zone or epoch milliseconds",
    "wrong_type:ids": "ids must be an object",
    "too_long:ids": "an identifier is longer than identity.max_identifier_length characters",
    "no_identifier": "send userId or anonymousId (or ids.*) with a real value: none is given, or each is a "
                     "placeholder such as 'null', 'undefined' or '0'",
    "wrong_type:props.price": "properties.price must be a number (or a string holding one)",
    "wrong_type:props.qty": "properties.qty must be an integer (or a string holding one)",
    "out_of_range:amount": "price, qty or their product is 10^16 or more",
    "future_ts": "timestamp is too far in the future (job.max_future_skew_ms): check the sender's clock or send "
                 "sentAt so the collector can correct it",
    "late": "timestamp is older than job.allowed_lateness_ms: such events are not counted any more",
}


def explain(reason: str) -> str:
    """What the sender should do about a decode reason (the reason itself when it has no advice)."""
    return _ADVICE.get(reason, reason)
