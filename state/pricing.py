"""Keyed state of the pricing stage (``pipelines.pricing``) and its store rows: declarations and codecs.

Declarations (pyflink imported lazily):

* ``pricing-item-v1`` ValueState STRING, key = item: ``operators.pricing.step.ItemState`` (catalog, stock per
  store, competitor prices, demand buckets of the last two demand windows, unsettled inputs, the list price
  and its hour anchor). Dropped by the step ``pricing.item_ttl_ms`` after the item's last input (event time).
* ``pricing-control-log-v1`` broadcast MapState STRING → STRING: the accepted control messages of kind
  ``pricing`` by zero-padded control version (``operators.pricing.control``); the step keeps the last 16.

No Flink TTL: the step forgets by event time, which a replay reproduces. Codec: one version character
(chr(1)), then compact JSON.

Store rows (``connectors.redis_store`` / ``connectors.hbase_store``): ``pr`` (key = item, ``bucket`` = the
tick, ``n1`` = the list price in cents, ``s1`` = the change's record) and ``po`` (key = person, ``bucket`` =
the request's time, ``n1`` = the offer price in cents or 0 when refused, ``s1`` = the offer's record).
"""

from __future__ import annotations

from typing import Any

import orjson

from operators.pricing.offers import OfferRequest
from operators.pricing.step import ItemInput, ItemState

ITEM = "pricing-item-v1"
CONTROL_LOG = "pricing-control-log-v1"
_V = "\x01"


class PricingCodecError(ValueError):
    """A state value of an unknown codec version."""


def _pending(m: ItemInput | OfferRequest) -> list[Any]:
    if isinstance(m, OfferRequest):
        return ["o", m.ts_ms, m.offer_id, m.person, m.item, m.rule_id, m.discount_pct, m.valid_ms, m.pickup_city]
    return ["i", m.ts_ms, m.event_id, m.event_type, m.store, m.qty, m.cost_cents, m.base_cents, m.map_cents,
            m.category, m.competitor, m.competitor_cents]


def _unpending(e: list[Any]) -> ItemInput | OfferRequest:
    if e[0] == "o":
        return OfferRequest(*e[1:])
    return ItemInput(*e[1:])


def encode_item(s: ItemState) -> str:
    return _V + orjson.dumps([
        s.item, s.category, list(s.catalog) if s.catalog else None,
        {k: list(v) for k, v in s.stock.items()}, {k: list(v) for k, v in s.competitors.items()},
        [[b, w] for b, w in sorted(s.demand.items())], [_pending(m) for m in s.pending],
        s.price, s.price_ts, s.hour, s.hour_open, s.last_ts, s.policy, s.variant, s.held, s.last_tick,
    ]).decode()


def decode_item(raw: str | None) -> ItemState | None:
    if not raw:
        return None
    if raw[0] != _V:
        raise PricingCodecError(f"state {ITEM}: unknown codec version {ord(raw[0])}; this job reads version 1 "
                                "(restore from a checkpoint of a compatible job, or start it fresh)")
    (item, category, catalog, stock, comps, demand, pending, price, price_ts, hour, hour_open, last_ts, policy,
     variant, held, last_tick) = orjson.loads(raw[1:])
    return ItemState(item, category, tuple(catalog) if catalog else None,  # type: ignore[arg-type]
                     {k: tuple(v) for k, v in stock.items()},  # type: ignore[misc]
                     {k: tuple(v) for k, v in comps.items()},  # type: ignore[misc]
                     {int(b): float(w) for b, w in demand}, tuple(_unpending(e) for e in pending), price, price_ts,
                     hour, hour_open, last_ts, policy, variant, held, last_tick)


def descriptors() -> dict[str, Any]:
    from pyflink.common import Types
    from pyflink.datastream.state import ValueStateDescriptor

    return {ITEM: ValueStateDescriptor(ITEM, Types.STRING())}


def control_log_state() -> Any:
    from pyflink.common import Types
    from pyflink.datastream.state import MapStateDescriptor

    return MapStateDescriptor(CONTROL_LOG, Types.STRING(), Types.STRING())
