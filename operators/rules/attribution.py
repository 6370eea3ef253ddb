"""Conversions attributed to the delivered action that preceded them (pure, per person).

The channel workers write a receipt to ``zt.delivery`` for every action they settle
(``action_id, person_id, channel, status, ts_ms, rule_id, campaign, ...``; ``ts_ms`` is when it was
delivered). The job feeds the person's ``delivered`` receipts and purchase events through::

    attribution_step(state | None, item | None, now_ms, config) -> (state | None, conversions, timers)

Rule (last touch): a purchase ``p`` converts the most recently delivered action ``d`` of the person
with ``d.ts <= p.ts <= d.ts + window`` and ``d.channel`` in ``channels`` (ties: the larger action id).
Every purchase converts at most one action; an action can convert several purchases.

Receipts come back later than the purchases they precede (worker, Kafka, the job's own lag), so a
purchase is only decided once the watermark passes ``p.ts + receipt_delay``: it is buffered and a
timer at that time is asked for; any receipt with ``d.ts <= p.ts`` that has arrived by then counts.
Receipts are kept for ``window + receipt_delay`` after their delivery time, then forgotten; a
receipt that arrives after the purchases it could have converted were decided does not reopen
them (``late_receipts`` counts receipts whose delivery time was already behind the decided time,
for a counter).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from operators.messages import DeliveryReceipt, MessageDecodeError
from operators.rules.model import Event

__all__ = ["AttributionConfig", "AttributionState", "Conversion", "Delivery", "attribution_step", "delivery_from"]


@dataclass(frozen=True, slots=True)
class AttributionConfig:
    window_ms: int = 7 * 86_400_000
    receipt_delay_ms: int = 300_000
    channels: frozenset[str] | None = None  # None: every channel
    purchase_type: str = "purchase"


@dataclass(frozen=True, slots=True)
class Delivery:
    """A delivered action (from a ``zt.delivery`` receipt with status ``delivered``)."""

    action_id: str
    ts_ms: int
    channel: str
    rule_id: str
    campaign: str


@dataclass(frozen=True, slots=True)
class Conversion:
    """A purchase attributed to an action; ``purchase_event_id`` makes it unique."""

    purchase_event_id: str
    person_id: str
    action_id: str
    rule_id: str
    campaign: str
    channel: str
    delivered_ts_ms: int
    purchase_ts_ms: int
    amount: str | None  # price × qty, 2 decimals; None if the purchase has no usable price

    def to_json(self) -> dict[str, Any]:
        return {"purchase_event_id": self.purchase_event_id, "person_id": self.person_id,
                "action_id": self.action_id, "rule_id": self.rule_id, "campaign": self.campaign,
                "channel": self.channel, "delivered_ts_ms": self.delivered_ts_ms,
                "purchase_ts_ms": self.purchase_ts_ms, "lag_ms": self.purchase_ts_ms - self.delivered_ts_ms,
                "amount": self.amount}


@dataclass(frozen=True, slots=True)
class AttributionState:
    """``deliveries`` kept while they can still convert; ``pending`` purchases waiting for their
    receipts (event id, ts, amount); ``decided_until``: purchases up to this ts are decided."""

    person_id: str
    deliveries: tuple[Delivery, ...] = ()
    pending: tuple[tuple[str, int, Any], ...] = ()
    decided_until: int | None = None
    late_receipts: int = 0


def delivery_from(receipt: Mapping[str, Any]) -> Delivery | None:
    """The delivery of a ``zt.delivery`` receipt (:class:`~operators.messages.DeliveryReceipt`'s JSON),
    or None if it was not delivered (or malformed)."""
    try:
        r = DeliveryReceipt.from_json(receipt)
    except MessageDecodeError:
        return None
    if r.status != "delivered":
        return None
    return Delivery(r.action_id, r.ts_ms, r.channel, r.rule_id, r.campaign or "")


_CENT = Decimal("0.01")


def _amount(props: Mapping[str, Any]) -> str | None:
    """``price × qty`` as a 2-decimal string, the price rounded half-up first (docs/semantics.md).

    An ``amount`` prop (the event job's decoded ``price × qty``, a Decimal or a decimal string, None when
    the event has none) is taken as it is, to cents: that is what the job's person events carry."""
    if "amount" in props:
        return _amount({"price": props["amount"]})
    price, qty = props.get("price"), props.get("qty", 1)
    if isinstance(qty, str) and qty.isdigit():
        qty = int(qty)
    if isinstance(price, bool) or not isinstance(price, (int, float, str, Decimal)) or not isinstance(qty, int) \
            or isinstance(qty, bool):
        return None
    try:
        p = Decimal(str(price))
        return str((p.quantize(_CENT, ROUND_HALF_UP) * qty).quantize(_CENT)) if p.is_finite() else None
    except InvalidOperation:  # not a number, or more digits than a money amount has
        return None


def attribution_step(state: AttributionState | None, item: Delivery | Event | None, now_ms: int,
                     config: AttributionConfig, person_id: str | None = None,
                     ) -> tuple[AttributionState | None, tuple[Conversion, ...], tuple[int, ...]]:
    """Record a delivery, buffer a purchase, or (``item`` None: a timer at ``now_ms``) decide the
    purchases whose ``ts + receipt_delay <= now_ms``. ``person_id`` names the person when the state
    is new and the item a delivery. Returns (state, conversions, timers); None clears the key."""
    pid = state.person_id if state else (item.person_id if isinstance(item, Event) else person_id or "")
    st = state or AttributionState(pid)
    if isinstance(item, Delivery):
        if config.channels is not None and item.channel not in config.channels:
            return state, (), ()
        if st.decided_until is not None and item.ts_ms <= st.decided_until:
            st = AttributionState(pid, st.deliveries, st.pending, st.decided_until, st.late_receipts + 1)
        if any(d.action_id == item.action_id for d in st.deliveries):
            return st, (), ()
        forget = item.ts_ms + config.window_ms + config.receipt_delay_ms
        return (AttributionState(pid, st.deliveries + (item,), st.pending, st.decided_until, st.late_receipts),
                (), (forget,))
    if isinstance(item, Event):
        if item.event_type != config.purchase_type or any(e == item.event_id for e, _, _ in st.pending):
            return state, (), ()
        pending = (*st.pending, (item.event_id, item.ts_ms, _amount(item.props)))
        return (AttributionState(pid, st.deliveries, pending, st.decided_until, st.late_receipts),
                (), (item.ts_ms + config.receipt_delay_ms,))
    if state is None:
        return None, (), ()
    cutoff = now_ms - config.receipt_delay_ms
    due = sorted((p for p in st.pending if p[1] <= cutoff), key=lambda p: (p[1], p[0]))
    conversions = []
    for eid, ts, amount in due:
        candidates = [d for d in st.deliveries if d.ts_ms <= ts <= d.ts_ms + config.window_ms]
        if candidates:
            d = max(candidates, key=lambda d: (d.ts_ms, d.action_id))
            conversions.append(Conversion(eid, pid, d.action_id, d.rule_id, d.campaign, d.channel, d.ts_ms, ts, amount))
    keep_from = cutoff - config.window_ms
    deliveries = tuple(d for d in st.deliveries if d.ts_ms > keep_from)  # may still convert a later purchase
    pending = tuple(p for p in st.pending if p[1] > cutoff)
    decided = cutoff if st.decided_until is None else max(st.decided_until, cutoff)
    if not deliveries and not pending:
        return None, tuple(conversions), ()
    return AttributionState(pid, deliveries, pending, decided, st.late_receipts), tuple(conversions), ()
