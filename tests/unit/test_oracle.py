"""The ground-truth oracle against hand-written streams whose answers are worked out by hand.

Each test builds a few records, runs :func:`zhongtai.devtools.generator.oracle.expected` and asserts exact
values. Where docs/semantics.md leaves room, the reading the oracle takes is pinned here (see the
oracle's module docstring); a change of reading must change a test.
"""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from config.settings import JobSettings, PiiSettings
from operators.pii import hmac_key
from zhongtai.devtools.generator.model import DLQ_REASONS, Record
from zhongtai.devtools.generator.oracle import Oracle, expected

T0 = 1_795_132_800_000  # 2026-11-20T00:00:00Z
MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000
JOB = JobSettings()
PII = PiiSettings()


_DROP = object()  # leave the field out
_DEFAULT = object()


def ev(
    event_id: object = "e1",
    event_type: object = "page_view",
    ts: object = T0,
    ids: object = _DEFAULT,
    props: object = None,
    source: object = "web",
    **extra: object,
) -> dict:
    """An event dict; pass ``_DROP`` to leave a field out."""
    d = {
        "event_id": event_id,
        "event_type": event_type,
        "ts": ts,
        "ids": {"device_id": "d1"} if ids is _DEFAULT else ids,
        "source": source,
    }
    if props is not None:
        d["props"] = props
    d.update(extra)
    return {k: v for k, v in d.items() if v is not _DROP}


def rec(event: dict | bytes, record_ts: int | None = None) -> Record:
    """A record of ``event`` arriving at ``record_ts`` (default: its own int ts, i.e. no delay)."""
    value = event if isinstance(event, bytes) else json.dumps(event, ensure_ascii=False).encode()
    if record_ts is None:
        record_ts = event["ts"] if isinstance(event, dict) and isinstance(event["ts"], int) else T0
    return Record("zt.events.web", 0, b"k", value, record_ts, "?")


def run(*records: Record) -> dict:
    return expected(records, JOB, PII)


def kinds(*records: Record) -> list[str]:
    o = Oracle(JOB, PII)
    return [o.feed(r.value, r.timestamp_ms) for r in records]


def hashed(id_type: str, normalised: str) -> str:
    """HMAC-SHA256 written out with hashlib, independently of operators.pii.pseudonymise."""
    key = hmac_key(PII.hmac_secret.get_secret_value())
    return hmac.new(key, f"{id_type}:{normalised}".encode(), hashlib.sha256).hexdigest()


# --- rolling windows and buckets ---------------------------------------------------------------------


def test_views_1h_counts_minutes_59_back_but_not_60():
    last = T0 + 2 * HOUR + 30_000  # minute 120 (02:00) after T0
    out = run(
        rec(ev("a", ts=T0 + 60 * MIN + 10_000)),  # minute 60: 60 minutes back → outside
        rec(ev("b", ts=T0 + 61 * MIN)),  # minute 61: 59 minutes back → inside
        rec(ev("c", ts=last)),
    )
    p = out["profiles"]["device_id:d1"]
    assert p["views_1h"] == 2
    assert p["views_24h"] == 3 and p["views"] == 3
    minute_buckets = {k: v for k, v in p.items() if k.startswith("b:views:m:")}
    assert minute_buckets == {"b:views:m:202611200101": 1, "b:views:m:202611200200": 1}
    assert {k: v for k, v in p.items() if k.startswith("b:views:h:")} == {
        "b:views:h:2026112001": 2,
        "b:views:h:2026112002": 1,
    }


def test_views_24h_and_7d_hour_edges():
    last = T0 + 200 * HOUR + 59 * MIN  # hour 200
    out = run(
        rec(ev("h-168", ts=T0 + 32 * HOUR)),  # 168 hours back → outside 7d
        rec(ev("h-167", ts=T0 + 33 * HOUR + 59 * MIN)),  # inside 7d
        rec(ev("h-24", ts=T0 + 176 * HOUR + 30 * MIN)),  # outside 24h, inside 7d
        rec(ev("h-23", ts=T0 + 177 * HOUR)),  # inside 24h
        rec(ev("cart", "add_to_cart", ts=T0 + 33 * HOUR)),  # hour 33 = 167 back → inside carts_7d
        rec(ev("cart2", "add_to_cart", ts=T0 + 32 * HOUR + 59 * MIN)),  # hour 32 → outside
        rec(ev("last", ts=last)),
    )
    p = out["profiles"]["device_id:d1"]
    assert (p["views_24h"], p["views_7d"], p["views"]) == (2, 4, 5)
    assert (p["carts_7d"], p["carts"]) == (1, 2)
    assert "b:views:h:2026112108" not in p  # hour 32 fell out of the kept buckets
    assert p["b:views:h:2026112109"] == 1 and p["b:carts:h:2026112109"] == 1


def test_purchase_days_are_utc_and_30_90_day_edges():
    d0 = T0 - 30 * DAY  # 2026-10-21
    out = run(
        rec(ev("p90", "purchase", ts=T0 - 90 * DAY, props={"price": 1})),  # 90 days back → outside
        rec(ev("p89", "purchase", ts=T0 - 89 * DAY, props={"price": 2})),
        rec(ev("p30", "purchase", ts=d0 + DAY - 1, props={"price": 4})),  # 2026-10-21T23:59:59.999Z
        rec(ev("p29", "purchase", ts=d0 + DAY, props={"price": 8})),  # 2026-10-22T00:00Z: 29 back
        rec(ev("today", "purchase", ts=T0 + 5 * HOUR, props={"price": "16.00"})),
    )
    p = out["profiles"]["device_id:d1"]
    assert (p["purchases"], p["gmv"]) == (5, "31.00")
    assert (p["purchases_30d"], p["gmv_30d"]) == (2, "24.00")
    assert (p["purchases_90d"], p["gmv_90d"]) == (4, "30.00")
    assert p["last_purchase"] == T0 + 5 * HOUR
    assert {k: v for k, v in p.items() if k.startswith("b:")} == {
        "b:purchases:d:20260823": 1,
        "b:purchases:d:20261021": 1,
        "b:purchases:d:20261022": 1,
        "b:purchases:d:20261120": 1,
        "b:gmv:d:20260823": "2.00",
        "b:gmv:d:20261021": "4.00",
        "b:gmv:d:20261022": "8.00",
        "b:gmv:d:20261120": "16.00",
    }


def test_iso_ts_with_offset_lands_in_the_utc_minute_and_day():
    # 07:59:59.999 at +08:00 is 23:59:59.999Z the day before.
    out = run(
        rec(
            ev("x", "purchase", ts="2026-11-21T07:59:59.999+08:00", props={"price": 5}),
            record_ts=T0 + DAY - 1,
        )
    )
    assert out["counters"] == {
        "(none)|web:202611202359": {
            "views": 0,
            "carts": 0,
            "purchases": 1,
            "revenue": "5.00",
            "persons": 1,
            "events": 1,
        },
        "all:202611202359": {
            "views": 0,
            "carts": 0,
            "purchases": 1,
            "revenue": "5.00",
            "persons": 1,
            "events": 1,
        },
    }
    p = out["profiles"]["device_id:d1"]
    assert p["first_seen"] == p["last_seen"] == p["last_purchase"] == T0 + DAY - 1
    assert "b:purchases:d:20261120" in p


@pytest.mark.parametrize(
    ("ts", "ms"),
    [
        ("2026-11-20T00:00:00Z", T0),
        ("2026-11-20T00:00:00.001Z", T0 + 1),
        ("2026-11-20T08:00:00.000+08:00", T0),
        ("2026-11-19T19:00:00-05:00", T0),
        ("2026-11-20T05:30:00.250+05:30", T0 + 250),
    ],
)
def test_iso_forms_parse_to_epoch_ms(ts, ms):
    out = run(rec(ev(ts=ts), record_ts=ms))
    assert out["profiles"]["device_id:d1"]["first_seen"] == ms


# --- money ------------------------------------------------------------------------------------------


def test_price_rounds_half_up_before_multiplying():
    out = run(
        rec(ev("a", "purchase", props={"price": 19.995})),  # → 20.00
        rec(ev("b", "purchase", props={"price": 0.125, "qty": 2})),  # 0.13 × 2 = 0.26
        rec(ev("c", "purchase", props={"price": 2.675})),  # the decimal text 2.675 → 2.68
        rec(ev("d", "purchase", props={"price": "12.345", "qty": "3"})),  # strings: 12.35 × 3 = 37.05
    )
    assert out["profiles"]["device_id:d1"]["gmv"] == "59.99"
    assert out["counters"]["all:202611200000"]["revenue"] == "59.99"
    # Negative control: binary floats, or rounding after multiplying, give another total.
    naive = round(19.995, 2) + round(0.125 * 2, 2) + round(2.675, 2) + round(12.345 * 3, 2)
    assert f"{naive:.2f}" != "59.99"


def test_qty_defaults_to_1_and_only_purchases_make_revenue():
    out = run(
        rec(ev("a", "purchase", props={"price": 10})),
        rec(ev("b", "purchase", props={"price": "1.5", "qty": 2})),
        rec(ev("c", "add_to_cart", props={"price": 99, "qty": 3})),
        rec(ev("d", "page_view", props={"price": 99})),
        rec(ev("e", "purchase")),  # no price: amount 0.00
    )
    c = out["counters"]["all:202611200000"]
    assert c == {"views": 1, "carts": 1, "purchases": 3, "revenue": "13.00", "persons": 1, "events": 5}
    assert out["profiles"]["device_id:d1"]["gmv"] == "13.00"


# --- identity ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ids", "person"),
    [
        (
            {
                "cookie_id": "c",
                "device_id": "d",
                "email": "e@x.cn",
                "phone": "13800138000",
                "openid": "o",
                "unionid": "un",
                "user_id": "u",
            },
            "user_id:u",
        ),
        ({"cookie_id": "c", "device_id": "d", "openid": "o", "unionid": "un"}, "unionid:un"),
        # identity.priority: phone and e-mail outrank openid (an openid is per app, a phone per person)
        ({"cookie_id": "c", "device_id": "d", "openid": "o", "phone": "138"}, "phone:" + hashed("phone", "+138")),
        ({"cookie_id": "c", "device_id": "d", "openid": "o"}, "openid:o"),
        ({"cookie_id": "0", "device_id": "null", "user_id": "undefined", "openid": "o"}, "openid:o"),
        (
            {"cookie_id": "c", "device_id": "d", "email": "x@y.z", "phone": "+86-138-0013-8000"},
            "phone:" + hashed("phone", "+8613800138000"),
        ),
        (
            {"cookie_id": "c", "device_id": "d", "email": " Foo.Bar@Example.COM "},
            "email:" + hashed("email", "foo.bar@example.com"),
        ),
        ({"cookie_id": "c", "device_id": "d"}, "device_id:d"),
        ({"cookie_id": "c"}, "cookie_id:c"),
        ({"user_id": "", "unionid": None, "imei": "86000", "device_id": "d"}, "device_id:d"),
        ({"user_id": 12345}, "user_id:12345"),  # reading: numbers as their text
    ],
)
def test_person_is_the_strongest_identifier(ids, person):
    out = run(rec(ev(ids=ids)))
    assert list(out["profiles"]) == [person]


@pytest.mark.parametrize(
    "spelling",
    [
        "13800138000",
        "138 0013 8000",
        "+86-138-0013-8000",
        "0086 13800138000",
        "(+86) 138 0013 8000",
        "86 138 0013 8000",
    ],
)
def test_phone_spellings_are_one_person(spelling):
    out = run(rec(ev(ids={"phone": spelling})))
    assert list(out["profiles"]) == ["phone:" + hashed("phone", "+8613800138000")]


# --- duplicates -----------------------------------------------------------------------------------


def test_first_read_wins_for_same_id_with_other_content():
    out = run(
        rec(ev("e1", "page_view", ts=T0)),
        rec(ev("e1", "purchase", ts=T0 + 5_000, props={"price": 100}), record_ts=T0 + 9_000),
        rec(ev("e1", "page_view", ts=T0)),  # exact re-send
    )
    assert out["stats"] == {"received": 3, "valid": 3, "unique": 1, "duplicates": 2, "dlq": 0}
    assert out["counters"]["all:202611200000"]["views"] == 1
    assert out["counters"]["all:202611200000"]["purchases"] == 0
    assert out["profiles"]["device_id:d1"]["events"] == 1


def test_a_rejected_record_does_not_claim_its_event_id():
    assert kinds(
        rec(ev("e1", props={"price": "cheap"})),
        rec(ev("e1")),
        rec(ev("e1")),
    ) == ["wrong_type:props.price", "ok", "dup"]


def test_number_event_id_is_its_text_and_dedups_with_the_string():
    assert kinds(rec(ev(123)), rec(ev("123"))) == ["ok", "dup"]


# --- derived scope ----------------------------------------------------------------------------------


def test_campaign_and_channel_fallbacks():
    out = run(
        rec(ev("a", props={"campaign_id": "c1", "channel": "sms"})),
        rec(ev("b", props={"campaign_id": "c1", "channel": ""}, source="app")),
        rec(ev("c", props={"campaign_id": ""}, source=_DROP)),
        rec(ev("d", ids={"device_id": "d2"}, props={"campaign_id": "c1", "channel": "sms"})),
    )
    assert sorted(out["counters"]) == [
        "(none)|(none):202611200000",
        "all:202611200000",
        "c1|app:202611200000",
        "c1|sms:202611200000",
    ]
    assert out["counters"]["c1|sms:202611200000"]["persons"] == 2
    assert out["counters"]["c1|sms:202611200000"]["events"] == 2
    assert out["counters"]["all:202611200000"]["persons"] == 2


def test_first_and_last_seen_are_event_time_extremes_not_read_order():
    out = run(
        rec(ev("late", ts=T0 + 10 * MIN), record_ts=T0 + 10 * MIN),
        rec(ev("early", ts=T0), record_ts=T0 + 20 * MIN),
    )
    p = out["profiles"]["device_id:d1"]
    assert (p["first_seen"], p["last_seen"]) == (T0, T0 + 10 * MIN)
    assert "last_purchase" not in p and p["gmv"] == "0.00" and p["gmv_30d"] == "0.00"


# --- validation: every DLQ reason, boundaries and check order ---------------------------------------


def _bytes(d: dict) -> bytes:
    return json.dumps(d).encode()


REASON_CASES = [
    (b"{" + b" " * JOB.max_event_bytes + b"}", "oversized"),
    (b'{"event_id": "caf\xe9"}', "not_utf8"),
    (b'{"event_id": "\xed\xa0\x80"}', "not_utf8"),  # encoded surrogate
    (b'{"event_id": "e1", "ts": ', "malformed_json"),
    (b'[{"event_id": "e1"}]', "malformed_json"),
    (b'"just a string"', "malformed_json"),
    (b"", "malformed_json"),
    (b'{"event_id": "e1", "props": {"price": NaN}}', "malformed_json"),
    (b'{"event_id": "e1",}', "malformed_json"),
    (b'\xef\xbb\xbf{"event_id": "e1"}', "malformed_json"),  # BOM
    (_bytes(ev(_DROP)), "missing_field:event_id"),
    (_bytes(ev(None)), "missing_field:event_id"),
    (_bytes(ev("")), "missing_field:event_id"),
    (_bytes(ev({"id": "e1"})), "wrong_type:event_id"),
    (_bytes(ev(["e1"])), "wrong_type:event_id"),
    (_bytes(ev("x" * 129)), "wrong_type:event_id"),
    (_bytes(ev(event_type=_DROP)), "missing_field:event_type"),
    (_bytes(ev(event_type="")), "missing_field:event_type"),
    (_bytes(ev(event_type=5)), "wrong_type:event_type"),
    (_bytes(ev(event_type="Page View")), "wrong_type:event_type"),
    (_bytes(ev(event_type="page_view\n")), "wrong_type:event_type"),
    (_bytes(ev(event_type="a" * 65)), "wrong_type:event_type"),
    (_bytes(ev(event_type={"name": "page_view"})), "wrong_type:event_type"),
    (_bytes(ev(ts=_DROP)), "missing_field:ts"),
    (_bytes(ev(ts=None)), "missing_field:ts"),
    (_bytes(ev(ts="yesterday")), "wrong_type:ts"),
    (_bytes(ev(ts="")), "wrong_type:ts"),
    (_bytes(ev(ts=T0 + 0.5)), "wrong_type:ts"),
    (b'{"event_id":"e1","event_type":"x","ts":1795132800000.0,"ids":{"device_id":"d"}}', "wrong_type:ts"),
    (_bytes(ev(ts=True)), "wrong_type:ts"),
    (_bytes(ev(ts=10**16)), "future_ts"),  # an integer of any length is an integer (issue 12)
    (_bytes(ev(ts="2026-11-20T00:00:00")), "wrong_type:ts"),
    (_bytes(ev(ts="2026-11-20T00:00:00.00Z")), "wrong_type:ts"),  # reading: exactly 3 fraction digits
    (_bytes(ev(ts="2026-02-30T00:00:00Z")), "wrong_type:ts"),
    (_bytes(ev(ts="2026-11-20T00:00:00+0800")), "wrong_type:ts"),
    (_bytes(ev(ids=_DROP)), "missing_field:ids"),
    (_bytes(ev(ids=None)), "missing_field:ids"),
    (_bytes(ev(ids="d1")), "wrong_type:ids"),
    (_bytes(ev(ids=["d1"])), "wrong_type:ids"),
    (_bytes(ev(ids={})), "no_identifier"),
    (_bytes(ev(ids={"device_id": "", "user_id": None, "imei": "1"})), "no_identifier"),
    (_bytes(ev(ids={"device_id": {"v": 1}})), "no_identifier"),
    (_bytes(ev(props={"price": "cheap"})), "wrong_type:props.price"),
    (_bytes(ev(props={"price": "NaN"})), "wrong_type:props.price"),
    (_bytes(ev(props={"price": True})), "wrong_type:props.price"),
    (_bytes(ev(props={"price": " 1.5"})), "wrong_type:props.price"),
    (_bytes(ev(props={"qty": 1.5})), "wrong_type:props.qty"),
    (_bytes(ev(props={"qty": "1.5"})), "wrong_type:props.qty"),
    (_bytes(ev(props={"qty": 2.0})), "wrong_type:props.qty"),  # reading: 2.0 is not an integer
    (_bytes(ev(ts=T0 + DAY)), "future_ts"),
    (_bytes(ev(ts=T0 - 2 * HOUR)), "late"),
]


@pytest.mark.parametrize(("value", "reason"), REASON_CASES)
def test_each_dlq_reason(value, reason):
    assert kinds(Record("t", 0, b"k", value, T0, "?")) == [reason]


def test_reason_cases_cover_every_dlq_reason():
    assert {r for _, r in REASON_CASES} == set(DLQ_REASONS)


_GOOD = _bytes(ev())

#: Issue 12: each case failed before the fix (the reason or the person was different); the JVM decode
#: gives the same answers (tests/integration/test_decode_jvm.py runs these through the job's SQL).
ISSUE12_CASES = [
    (_GOOD, "ok"),  # negative control
    (_GOOD + b"garbage", "malformed_json"),
    (_GOOD + b" " + _GOOD, "malformed_json"),
    (_GOOD + b"\n\t ", "ok"),  # white space after the object is fine
    (_bytes(ev(ts=10**15 * 9)), "future_ts"),  # 16 digits: an integer, in the future
    (_bytes(ev(ts=-(10**16))), "late"),
    (_bytes(ev(ts=10**40)), "future_ts"),
    (_bytes(ev(ts="1" * 5000)), "future_ts"),  # a digit string: no int() of 5000 digits
    (_bytes(ev(ts=str(T0))), "ok"),
    (_bytes(ev(ids={"device_id": "a" * 20_000})), "too_long:ids"),
    (_bytes(ev(ids={"device_id": "d" * 257})), "too_long:ids"),
    (_bytes(ev(ids={"device_id": "d1" * 128})), "ok"),
    (_bytes(ev(ids={"device_id": "设备" * 128})), "ok"),  # code points, not bytes
    (_bytes(ev(ids={"user_id": "u1", "cookie_id": "c" * 300})), "too_long:ids"),  # any known type
    (_bytes(ev(ids={"device_id": "d1", "imei": "1" * 300})), "ok"),  # unknown types are not read
    (_bytes(ev(props={"price": 1e308})), "out_of_range:amount"),
    (_bytes(ev("p", "purchase", props={"price": 1e308})), "out_of_range:amount"),
    (_bytes(ev("p", "purchase", props={"price": 1, "qty": 10**30})), "out_of_range:amount"),
    (_bytes(ev("p", "purchase", props={"price": "1e999999999999999999999"})), "out_of_range:amount"),
    (_bytes(ev("p", "purchase", props={"price": 10**15, "qty": 10})), "out_of_range:amount"),
    (_bytes(ev("p", "purchase", props={"price": "9999999999999999.995"})), "out_of_range:amount"),
    (_bytes(ev("p", "purchase", props={"price": "9999999999999999.994"})), "ok"),
    (_bytes(ev("p", "purchase", props={"price": "1e-999999999999999999999"})), "ok"),
    (_bytes(ev("p", "purchase", props={"price": 10**15, "qty": 9})), "ok"),
    (_bytes(ev("p", "purchase", props={"price": 0, "qty": 10**16})), "out_of_range:amount"),
    (_bytes(ev(props={"qty": "-" + "9" * 17})), "out_of_range:amount"),
    (b'{"event_id":"e1","event_type":"page_view","ts":%d,"ids":{"user_id":"\\ud800"}}' % T0, "malformed_json"),
    (b'{"event_id":"e1","event_type":"page_view","ts":%d,"ids":{"device_id":"d"},"x":"\\udc00"}' % T0,
     "malformed_json"),  # anywhere in the record, even in a field nobody reads
    (b'{"event_id":"e1","event_type":"page_view","ts":%d,"ids":{"device_id":"d"},"\\ud83d":1}' % T0,
     "malformed_json"),  # in a key
    (b'{"event_id":"e1","event_type":"page_view","ts":%d,"ids":{"user_id":"\\ud83d\\ude00"}}' % T0, "ok"),
    (None, "malformed_json"),  # a tombstone
    (b'{"a":' * 64 + b"1" + b"}" * 64, "missing_field:event_id"),  # depth 64: still JSON
    (b'{"a":' * 65 + b"1" + b"}" * 65, "malformed_json"),  # depth 65
    (b'{"event_id":"e1","event_type":"page_view","ts":%d,"ids":{"device_id":"d"},"x":[' % T0
     + b"[" * 62 + b"]" * 63 + b"}", "ok"),
]


@pytest.mark.parametrize(("value", "kind"), ISSUE12_CASES)
def test_issue12_readings(value, kind):
    assert kinds(Record("t", 0, b"k", value, T0, "?")) == [kind]


def test_full_width_phone_is_the_same_person():
    from zhongtai.devtools.generator.oracle import _Pseudonyms, decode

    pseudo = _Pseudonyms(PiiSettings())
    ascii_ = decode(_bytes(ev(ids={"phone": "138-0013-8000"})), T0, JOB, pseudo)
    wide = decode(_bytes(ev(ids={"phone": "１３８－００１３－８０００"})), T0, JOB, pseudo)
    mail = decode(_bytes(ev(ids={"email": "ＡＢＣ@Ｅｘａｍｐｌｅ.ｃｏｍ "})), T0, JOB, pseudo)
    assert ascii_.person == wide.person and ascii_.person.startswith("phone:")
    assert mail.person == decode(_bytes(ev(ids={"email": "abc@example.com"})), T0, JOB, pseudo).person
    # other scripts' digits are not ASCII digits after NFKC: dropped, so no phone at all
    assert decode(_bytes(ev(ids={"phone": "١٣٨"})), T0, JOB, pseudo) == "no_identifier"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"[" + b" " * JOB.max_event_bytes + b"\xff]", "oversized"),
        (b'{"event_id": "\xff", "ts":', "not_utf8"),
        (_bytes(ev(None, event_type="Bad", ts="nope")), "missing_field:event_id"),
        (_bytes(ev(event_type="Bad", ts="nope", ids=[])), "wrong_type:event_type"),
        (_bytes(ev(ts="nope", ids=[])), "wrong_type:ts"),
        (_bytes(ev(ts=T0 - 2 * HOUR, ids={}, props={"price": "x"})), "no_identifier"),
        (_bytes(ev(ts=T0 + DAY, props={"price": "x", "qty": "y"})), "wrong_type:props.price"),
        (_bytes(ev(ts=T0 - 2 * HOUR, props={"qty": "y"})), "wrong_type:props.qty"),
    ],
)
def test_first_failing_check_wins(value, reason):
    assert kinds(Record("t", 0, b"k", value, T0, "?")) == [reason]


def test_boundaries_are_inclusive():
    max_bytes = JOB.max_event_bytes
    base = _bytes(ev(props={"note": ""}))
    exact = _bytes(ev(props={"note": "x" * (max_bytes - len(base))}))
    assert len(exact) == max_bytes
    just_over = _bytes(ev(props={"note": "x" * (max_bytes - len(base) + 1)}))
    skew, lateness = JOB.max_future_skew_ms, JOB.allowed_lateness_ms
    records = [
        Record("t", 0, b"k", exact, T0, "?"),
        Record("t", 0, b"k", just_over, T0, "?"),
        rec(ev("f0", ts=T0 + skew), record_ts=T0),
        rec(ev("f1", ts=T0 + skew + 1), record_ts=T0),
        rec(ev("l0", ts=T0 - lateness), record_ts=T0),
        rec(ev("l1", ts=T0 - lateness - 1), record_ts=T0),
        rec(ev("i" * 128)),
        rec(ev("t", event_type="c" * 64)),
    ]
    assert kinds(*records) == ["ok", "oversized", "ok", "future_ts", "ok", "late", "ok", "ok"]


def test_stats_count_every_reason():
    out = run(
        rec(ev("a")),
        rec(ev("a")),
        rec(ev("b", ts="nope")),
        rec(ev("c", ts="nope")),
        Record("t", 0, b"k", b"\xff", T0, "?"),
    )
    assert out["stats"] == {
        "received": 5,
        "valid": 2,
        "unique": 1,
        "duplicates": 1,
        "dlq": 3,
        "dlq:not_utf8": 1,
        "dlq:wrong_type:ts": 2,
    }


def test_readings_of_loose_ends_are_pinned():
    """Where the doc is silent (see the oracle's docstring); a change of reading must change this test."""
    assert kinds(
        rec(ev("bool-type", event_type=True)),  # booleans/numbers read as their JSON text: "true"
        rec(ev("neg-qty", "purchase", props={"price": 5, "qty": -1})),  # any integer is an integer
        rec(ev("props-list", props=["x"])),  # props that is not an object counts as empty
        rec(ev("null-price", props={"price": None, "qty": None})),  # null counts as absent
    ) == ["ok", "ok", "ok", "ok"]
    # A phone without digits normalises to "+", the form of the junk values ("n/a", "null"): it is
    # junk (identity.blocklist_values), so the next identifier anchors the event.
    out = run(rec(ev(ids={"phone": "n/a", "device_id": "d"})))
    assert list(out["profiles"]) == ["device_id:d"]


# --- identity observations ---------------------------------------------------------------------------


def test_valid_event_carries_every_identifier_stored():
    from zhongtai.devtools.generator.oracle import observations

    e = ev(ids={"user_id": "", "device_id": "d1", "phone": "138 0013 8000", "email": " A@B.cn ", "imei": "86", "openid": 7})
    (o,) = observations([rec(e)], JOB, PII)
    assert o.ids == (
        ("openid", "7"),
        ("phone", hashed("phone", "+8613800138000")),
        ("email", hashed("email", "a@b.cn")),
        ("device_id", "d1"),
    )
    assert (o.ts_ms, o.event_id) == (T0, "e1")


def test_identity_observations_first_read_wins_and_skip_rejected():
    from zhongtai.devtools.generator.oracle import observations

    first = ev(ids={"device_id": "a"})
    again = ev(ids={"device_id": "b"})  # same event_id, other content: a duplicate
    bad = ev(event_id="e2", ids={"device_id": "c"}, ts="yesterday")
    obs = observations([rec(first), rec(again), rec(bad)], JOB, PII)
    assert [o.ids for o in obs] == [(("device_id", "a"),)]
