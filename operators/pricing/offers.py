"""Personal offers: a time-limited discount for one person on one item, apart from the list price.

An offer is asked for by a rule (an action of channel ``coupon`` whose params carry ``offer: true``:
docs/pricing.md) and decided by the item's pricing step at its next tick, against the list price in force
at the request's time and the rails of the item's category: at most ``max_offer_discount`` below the list
price, never below the floor (cost × (1 + min margin)). A request for an item with no list price yet, or
with nothing left to give, is refused, and the refusal is recorded like a grant. With ``pickup_city`` the
offer is "claim online, pick up in store": it names a store of that city holding the item in stock, and is
refused when none does (the source document's retail case, docs/pricing.md).

The list price never depends on the person (``operators.pricing.policy.LIST_PRICE_POLICY``); an offer does,
and says so: who, why (the rule), how much, until when.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from operators.pricing.policy import Rails, round_cents

_EPS = 1e-9


@dataclass(frozen=True)
class OfferRequest:
    """A rule's request: ``discount_pct`` off ``item`` for ``person`` from ``ts_ms`` for ``valid_ms``."""

    ts_ms: int
    offer_id: str
    person: str
    item: str
    rule_id: str
    discount_pct: float
    valid_ms: int
    pickup_city: str | None = None


@dataclass(frozen=True)
class Offer:
    """The decision on a request (``granted`` or not); ``record`` explains it."""

    offer_id: str
    person: str
    item: str
    ts_ms: int
    granted: bool
    record: Mapping[str, Any]


def store_city(store: str) -> str:
    """A store's city: the part of its id before the first ``-`` (``sh-001`` → ``sh``), the generator's and
    the retail schema's convention (docs/pricing.md)."""
    return store.split("-", 1)[0]


def decide_offer(req: OfferRequest, item: str, list_cents: int | None, rails: Rails, cost: int | None,
                 stock: Mapping[str, tuple[int, str, int]], policy: str) -> Offer:
    reasons: list[str] = []
    record: dict[str, Any] = {"offer_id": req.offer_id, "person": req.person, "item": item, "ts_ms": req.ts_ms,
                              "rule_id": req.rule_id, "policy": policy, "requested_pct": req.discount_pct,
                              "list_cents": list_cents, "expires_ms": req.ts_ms + req.valid_ms}

    def refuse(reason: str) -> Offer:
        return Offer(req.offer_id, req.person, item, req.ts_ms, False, {**record, "granted": False,
                                                                      "reasons": [reason]})

    if list_cents is None or cost is None:
        return refuse("no_list_price")
    store = None
    if req.pickup_city:
        in_stock = sorted(s for s, (_, _, q) in stock.items() if q > 0 and s and store_city(s) == req.pickup_city)
        if not in_stock:
            return refuse("not_in_stock_nearby")
        store = in_stock[0]
        record["pickup_store"] = store
        reasons.append("pickup_in_store")
    pct = max(0.0, req.discount_pct) / 100.0
    if pct > rails.max_offer_discount:
        pct = rails.max_offer_discount
        reasons.append("max_offer_discount")
    offer = round_cents(list_cents * (1 - pct))
    floor = math.ceil(cost * (1 + rails.min_margin) - _EPS)
    if offer < floor:
        offer = floor
        reasons.append("floor")
    if offer >= list_cents:
        return refuse("no_discount_left")
    return Offer(req.offer_id, req.person, item, req.ts_ms, True,
                 {**record, "granted": True, "offer_cents": offer, "discount_pct": round(pct * 100, 4),
                  "reasons": reasons or ["rule"]})
