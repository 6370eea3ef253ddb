"""The collector's mapping of Segment-like messages onto the envelope (pure), and the job's decode of the result."""

from __future__ import annotations

import json

import pytest

from config.settings import IdentitySettings, JobSettings, PiiSettings
from operators.envelope import Pseudonyms, decode_full
from zhongtai.services.collector.mapping import (
    Mapped,
    Rejection,
    event_type_of,
    explain,
    parse_json,
    parse_time,
    to_envelope,
)

NOW = 1_796_637_602_000  # 2026-12-07T10:00:02.000Z
ISO_NOW = "2026-12-07T10:00:02.000Z"


def _map(msg: dict, kind: str | None = "track", received: int = NOW, sent_at=None) -> Mapped | Rejection:
    return to_envelope(parse_json(json.dumps(msg).encode()), kind, "web", received, sent_at)


def _envelope(msg: dict, kind: str | None = "track", **kw) -> dict:
    out = _map(msg, kind, **kw)
    assert isinstance(out, Mapped), out
    return json.loads(out.value)


@pytest.mark.parametrize("name,expected", [
    ("Order Completed", "order_completed"), ("addToCart", "add_to_cart"), ("add_to_cart", "add_to_cart"),
    ("page-view", "page_view"), ("  Signed Up!  ", "signed_up"), ("HTMLParser", "htmlparser"),
    ("v2Checkout", "v2_checkout"), ("purchase", "purchase"), ("A" * 64, "a" * 64),
    ("下单", None), ("1st visit", None), ("", None), ("___", None), ("A" * 65, None),
])  # fmt: skip
def test_event_names_become_snake_case_or_are_refused(name: str, expected: str | None) -> None:
    assert event_type_of(name) == expected


@pytest.mark.parametrize("value,expected", [
    ("2026-12-07T10:00:02.000Z", NOW), ("2026-12-07T10:00:02Z", NOW), ("2026-12-07T18:00:02.000+08:00", NOW),
    ("2026-12-07T10:00:02.000999Z", NOW), (NOW, NOW),
    ("2026-12-07T10:00:02", None), ("2026-12-07", None), ("yesterday", None), (True, None), (1.5, None),
    (str(NOW), None),
])  # fmt: skip
def test_timestamps_need_a_zone_or_are_epoch_ms(value, expected) -> None:
    assert parse_time(parse_json(json.dumps(value).encode())) == expected


def test_track_maps_onto_the_envelope_exactly() -> None:
    body = (b'{"type": "track", "messageId": "m1", "event": "Add To Cart", "userId": "u1", "anonymousId": "a1", '
            b'"timestamp": "2026-12-07T10:00:00.000Z", "properties": {"item_id": "sku-1", "price": 12.50, "qty": 2}, '
            b'"context": {"campaign": {"name": "spring", "medium": "email"}, "device": {"id": "d1"}}}')
    out = to_envelope(parse_json(body), "track", "web", NOW)
    assert isinstance(out, Mapped)
    # numbers keep their literal text (12.50, not 12.5); context kept; campaign from UTM; source from the key
    assert out.value.decode() == (
        '{"event_id":"m1","event_type":"add_to_cart","ts":1796637600000,'
        '"ids":{"user_id":"u1","cookie_id":"a1","device_id":"d1"},'
        '"props":{"item_id":"sku-1","price":12.50,"qty":2,"campaign_id":"spring"},"source":"web",'
        '"context":{"campaign":{"name":"spring","medium":"email"},"device":{"id":"d1"}}}')
    assert out.anonymous == "cookie_id:a1"


def test_identify_puts_traits_under_props_traits_and_page_is_a_page_view() -> None:
    ident = _envelope({"messageId": "m2", "userId": "u1", "traits": {"tier": "gold", "city": "杭州"}}, "identify")
    assert (ident["event_type"], ident["props"], ident["ids"]) == ("identify", {"traits": {"tier": "gold",
                                                                                             "city": "杭州"}},
                                                                   {"user_id": "u1"})
    page = _envelope({"type": "page", "messageId": "m3", "anonymousId": "a1", "name": "Home",
                      "properties": {"path": "/"}}, None)
    assert (page["event_type"], page["props"]) == ("page_view", {"path": "/", "page": "Home"})
    assert _map({"messageId": "m4", "userId": "u1"}, "page").anonymous is None  # type: ignore[union-attr]


def test_clock_skew_is_corrected_with_sent_at() -> None:
    # the sender's clock is 1 h ahead: it stamped 11:00:00 and sent at 11:00:01; received at 10:00:02
    msg = {"messageId": "m1", "event": "x", "anonymousId": "a", "timestamp": "2026-12-07T11:00:00.000Z"}
    assert _envelope(msg, sent_at="2026-12-07T11:00:01.000Z")["ts"] == NOW - 1000
    assert _envelope({**msg, "sentAt": "2026-12-07T11:00:00.500Z"}, sent_at="2026-12-07T11:00:01.000Z")["ts"] == NOW - 500
    assert _envelope(msg)["ts"] == NOW + 3_598_000  # no sentAt: as stamped (the decode then says future_ts)
    assert _envelope({"messageId": "m1", "event": "x", "anonymousId": "a"})["ts"] == NOW  # none: received


@pytest.mark.parametrize("msg,kind,reason", [
    ({"event": "x", "anonymousId": "a"}, "track", "missing_field:messageId"),
    ({"messageId": "", "event": "x", "anonymousId": "a"}, "track", "missing_field:messageId"),
    ({"messageId": "m", "anonymousId": "a"}, "track", "missing_field:event"),
    ({"messageId": "m", "event": "下单", "anonymousId": "a"}, "track", "wrong_type:event"),
    ({"messageId": "m", "event": {"a": 1}, "anonymousId": "a"}, "track", "wrong_type:event"),
    ({"messageId": "m", "event": "Identify", "anonymousId": "a"}, "track", "reserved:event"),
    ({"messageId": "m", "event": "x", "anonymousId": "a", "properties": [1]}, "track", "wrong_type:properties"),
    ({"messageId": "m", "userId": "u", "traits": "gold"}, "identify", "wrong_type:traits"),
    ({"messageId": "m", "event": "x", "userId": {"id": 1}}, "track", "wrong_type:userId"),
    ({"messageId": "m", "event": "x", "userId": "u1", "ids": {"user_id": "u2"}}, "track", "conflict:ids.user_id"),
    ({"messageId": "m", "event": "x", "anonymousId": "a", "ids": ["phone"]}, "track", "wrong_type:ids"),
    ({"messageId": "m", "event": "x", "anonymousId": "a", "timestamp": "2026-12-07"}, "track", "wrong_type:timestamp"),
    ({"messageId": "m", "event": "x", "anonymousId": "a", "timestamp": NOW, "sentAt": "now"}, "track",
     "wrong_type:sentAt"),
    ({"type": "screen", "messageId": "m", "anonymousId": "a"}, None, "wrong_type:type"),
    ({"messageId": "m", "anonymousId": "a"}, None, "wrong_type:type"),
])  # fmt: skip
def test_what_cannot_be_mapped_is_rejected_with_its_reason(msg: dict, kind: str | None, reason: str) -> None:
    out = _map(msg, kind)
    assert isinstance(out, Rejection) and out.reason == reason and out.message
    # negative control: the same message with the offending part fixed maps
    assert isinstance(_map({"messageId": "m", "event": "x", "anonymousId": "a"}, "track"), Mapped)


def test_not_an_object_and_a_lone_surrogate_are_rejected() -> None:
    assert to_envelope([1], "track", "web", NOW).reason == "wrong_type:message"  # type: ignore[union-attr]
    lone = parse_json(b'{"messageId":"m","event":"x","anonymousId":"a","properties":{"k":"\\ud800"}}')
    assert to_envelope(lone, "track", "web", NOW).reason == "malformed_json"  # type: ignore[union-attr]


def test_ids_extension_keeps_extra_types_and_the_same_value_twice_is_no_conflict() -> None:
    env = _envelope({"messageId": "m", "event": "x", "userId": "u1",
                     "ids": {"user_id": "u1", "phone": "13800138000", "member_card": "c9"}})
    assert env["ids"] == {"user_id": "u1", "phone": "13800138000", "member_card": "c9"}


# ---- the job's decode over what the mapping makes: the collector's validation ------------------------


def _decode(msg: dict, kind: str | None = "track"):
    out = _map(msg, kind)
    assert isinstance(out, Mapped), out
    return decode_full(out.value, NOW, JobSettings(), Pseudonyms(PiiSettings(), IdentitySettings()))


def test_decode_accepts_the_mapped_event_with_the_fields_the_job_derives() -> None:
    d = _decode({"messageId": "m1", "event": "purchase", "userId": "u1", "anonymousId": "a1",
                 "timestamp": "2026-12-07T10:00:00.000Z", "properties": {"price": "12.50", "qty": 2},
                 "context": {"campaign": {"name": "spring"}}})
    assert not isinstance(d, str)
    e = d.event
    assert (e.event_id, e.event_type, e.ts, e.person, e.campaign, e.channel, str(e.amount)) == (
        "m1", "purchase", NOW - 2000, "user_id:u1", "spring", "web", "25.00")
    assert e.ids == (("user_id", "u1"), ("cookie_id", "a1"))


@pytest.mark.parametrize("msg,reason", [
    ({"messageId": "m", "event": "x", "anonymousId": "undefined"}, "no_identifier"),
    ({"messageId": "m", "event": "x"}, "no_identifier"),
    ({"messageId": "m" * 129, "event": "x", "anonymousId": "a1"}, "wrong_type:event_id"),
    ({"messageId": "m", "event": "x", "anonymousId": "a1", "properties": {"price": "cheap"}}, "wrong_type:props.price"),
    ({"messageId": "m", "event": "x", "anonymousId": "a1", "properties": {"qty": 1.5}}, "wrong_type:props.qty"),
    ({"messageId": "m", "event": "x", "anonymousId": "a1", "timestamp": "2026-12-07T11:00:00.000Z"}, "future_ts"),
    ({"messageId": "m", "event": "x", "anonymousId": "a1", "timestamp": "2026-12-07T08:00:00.000Z"}, "late"),
    ({"messageId": "m", "event": "x", "anonymousId": "a1", "properties": {"blob": "x" * 40_000}}, "oversized"),
])  # fmt: skip
def test_the_job_decode_rejects_what_the_job_would(msg: dict, reason: str) -> None:
    assert _decode(msg) == reason
    assert explain(reason) != reason  # every decode reason has advice for the sender


def test_explain_passes_unknown_reasons_through() -> None:
    assert explain("wrong_type:props.store_id") == "wrong_type:props.store_id"
