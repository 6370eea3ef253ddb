"""Conversions attributed to the last delivered action before a purchase (pure)."""

from __future__ import annotations

from decimal import Decimal

from operators.rules.attribution import (
    AttributionConfig,
    AttributionState,
    Conversion,
    Delivery,
    attribution_step,
    delivery_from,
)
from operators.rules.model import Event

MIN, DAY = 60_000, 86_400_000
T0 = 1_767_261_600_000
CFG = AttributionConfig(window_ms=7 * DAY, receipt_delay_ms=5 * MIN)


def receipt(aid: str, ts: int, channel: str = "coupon", status: str = "delivered") -> dict:
    return {"action_id": aid, "person_id": "p1", "channel": channel, "status": status, "attempts": 1,
            "ts_ms": ts, "rule_id": f"rule_{aid}", "campaign": "vip_winback"}


def buy(eid: str, ts: int, price: float = 100, qty: int = 1) -> Event:
    return Event(eid, "purchase", ts, "p1", {"price": price, "qty": qty})


def run(items: list, cfg: AttributionConfig = CFG) -> tuple[list[Conversion], AttributionState | None]:
    """Feed items in arrival order; fire every requested timer at the end, in time order."""
    st, timers, out = None, set(), []
    for it in items:
        item = delivery_from(it) if isinstance(it, dict) else it
        if item is None:
            continue
        st, conv, new = attribution_step(st, item, 0, cfg, person_id="p1")
        out += conv
        timers |= set(new)
    for t in sorted(timers):
        st, conv, _ = attribution_step(st, None, t, cfg)
        out += conv
    return out, st


def test_purchase_within_the_window_converts_the_delivered_coupon():
    out, st = run([receipt("a1", T0), buy("b1", T0 + 2 * DAY, 99.5, 2)])
    assert [c.to_json() for c in out] == [{
        "purchase_event_id": "b1", "person_id": "p1", "action_id": "a1", "rule_id": "rule_a1",
        "campaign": "vip_winback", "channel": "coupon", "delivered_ts_ms": T0, "purchase_ts_ms": T0 + 2 * DAY,
        "lag_ms": 2 * DAY, "amount": "199.00"}]
    assert st is None  # everything decided and forgotten


def test_no_conversion_before_delivery_or_after_the_window():
    assert run([buy("b0", T0 - 1), receipt("a1", T0)])[0] == []
    assert run([receipt("a1", T0), buy("b1", T0 + 7 * DAY + 1)])[0] == []
    assert [c.action_id for c in run([receipt("a1", T0), buy("b1", T0 + 7 * DAY)])[0]] == ["a1"]  # inclusive


def test_last_touch_and_channel_filter():
    items = [receipt("a1", T0), receipt("a2", T0 + DAY, "push"), buy("b1", T0 + 2 * DAY)]
    assert [c.action_id for c in run(items)[0]] == ["a2"]
    coupons_only = AttributionConfig(window_ms=7 * DAY, receipt_delay_ms=5 * MIN, channels=frozenset({"coupon"}))
    assert [c.action_id for c in run(items, coupons_only)[0]] == ["a1"]
    assert run([receipt("a1", T0, status="failed"), buy("b1", T0 + DAY)])[0] == []  # never delivered


def test_receipt_arriving_after_the_purchase_still_counts_until_decided():
    st, conv, timers = attribution_step(None, buy("b1", T0 + MIN), 0, CFG)
    assert conv == () and timers == (T0 + 6 * MIN,)
    st, _, _ = attribution_step(st, delivery_from(receipt("a1", T0)), 0, CFG)
    st, conv, _ = attribution_step(st, None, T0 + 6 * MIN - 1, CFG)
    assert conv == ()  # not decided yet
    st, conv, _ = attribution_step(st, None, T0 + 6 * MIN, CFG)
    assert [c.action_id for c in conv] == ["a1"]


def test_a_receipt_after_the_decision_does_not_reopen_it():
    st, _, _ = attribution_step(None, buy("b1", T0 + MIN), 0, CFG)
    st, _, _ = attribution_step(st, delivery_from(receipt("a0", T0 - DAY)), 0, CFG)
    st, conv, _ = attribution_step(st, None, T0 + 6 * MIN, CFG)
    assert [c.action_id for c in conv] == ["a0"] and st.decided_until == T0 + MIN
    st, conv, timers = attribution_step(st, Delivery("a1", T0, "coupon", "r", "c"), 0, CFG)
    assert conv == () and st.late_receipts == 1 and timers == (T0 + 7 * DAY + 5 * MIN,)
    st, conv, _ = attribution_step(st, None, T0 + 7 * DAY + 5 * MIN, CFG)
    assert conv == () and st is None


def test_amounts_follow_the_money_rules():
    def amount(**props) -> str | None:
        st, _, _ = attribution_step(None, Delivery("a", T0, "coupon", "r", "c"), 0, CFG, person_id="p1")
        st, _, _ = attribution_step(st, Event("b", "purchase", T0 + 1, "p1", props), 0, CFG)
        return attribution_step(st, None, T0 + 1 + 5 * MIN, CFG)[1][0].amount

    assert amount(price="12.345", qty=2) == "24.70"  # half-up to cents first, then times qty
    assert amount(price=10) == "10.00" and amount(price="7.5", qty="3") == "22.50"
    assert amount(price="abc") is None and amount(price=float("nan")) is None and amount() is None
    assert amount(price=True) is None and amount(price=5, qty=1.5) is None and amount(price=10**40) is None


def test_duplicates_and_malformed_receipts():
    out, _ = run([receipt("a1", T0), receipt("a1", T0), buy("b1", T0 + DAY), buy("b1", T0 + DAY)])
    assert [c.purchase_event_id for c in out] == ["b1"]
    assert delivery_from({"status": "delivered", "action_id": 3, "ts_ms": T0}) is None
    assert delivery_from({"status": "delivered", "action_id": "a", "ts_ms": True}) is None
    assert attribution_step(None, None, T0, CFG) == (None, (), ())
    assert attribution_step(None, Event("v", "page_view", T0, "p1", {}), T0, CFG) == (None, (), ())


def test_the_jobs_amount_prop_is_taken_as_it_is():
    def amount(value: object) -> str | None:
        st, _, _ = attribution_step(None, Delivery("a", T0, "coupon", "r", "c"), 0, CFG, person_id="p1")
        st, _, _ = attribution_step(st, Event("b", "purchase", T0 + 1, "p1", {"amount": value, "price": 1}), 0, CFG)
        return attribution_step(st, None, T0 + 1 + 5 * MIN, CFG)[1][0].amount

    assert amount(Decimal("24.70")) == "24.70" and amount("0.00") == "0.00" and amount(7) == "7.00"
    assert amount(None) is None  # the job had no amount: not the price prop


def test_the_jobs_state_codec_round_trips_and_names_an_unknown_version():
    import pytest

    from state.attribution import decode_state, encode_state

    st = AttributionState("p1", (Delivery("a1", T0, "coupon", "r", "c"),), (("b1", T0 + 1, "9.99"), ("b2", T0 + 2, None)),
                          T0 - 1, 2)
    assert decode_state(encode_state(st)) == st and decode_state(None) is None and decode_state("") is None
    with pytest.raises(ValueError, match="attribution-person-v1: unknown codec version 2"):
        decode_state("\x02{}")
