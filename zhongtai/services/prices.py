"""An item's list price and a person's offers, read from Redis (the REST API and the dashboard).

The job writes ``{prefix}:price:{item}`` (the list price in force and the record that explains it) and
``{prefix}:offers:{person}`` (the person's granted offers) when ``pricing.enabled`` (docs/pricing.md). The list
price takes no person: it is the same for everyone (``operators.pricing.policy.LIST_PRICE_POLICY``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from operators.pricing.policy import LIST_PRICE_POLICY
from zhongtai.services.profiles import resolve_person

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import Settings


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def get_price(settings: Settings, item: str, prefix: str | None = None) -> dict[str, Any]:
    """``{item, price, price_cents, since_ms, policy, variant, reasons, explanation, list_price_policy}``;
    ``{}`` when the job has priced nothing for ``item``."""
    from connectors.redis_store import RedisStore

    store = RedisStore(settings.redis, prefix=prefix)
    try:
        h = store.price(item)
    finally:
        store.close()
    if not h:
        return {}
    cents = int(h["price_cents"])
    return {"item": item, "price": _money(cents), "price_cents": cents, "since_ms": int(h["ts_ms"]),
            "policy": h.get("policy", ""), "variant": h.get("variant") or None,
            "reasons": [r for r in h.get("reasons", "").split(",") if r],
            "explanation": orjson.loads(h.get("record") or "{}"), "list_price_policy": LIST_PRICE_POLICY}


def get_offers(settings: Settings, identifier: str, now_ms: int, prefix: str | None = None) -> dict[str, Any]:
    """``identifier`` (``type:value`` or a person id) → ``{identifier, person, offers: [...]}``: the offers
    still valid at ``now_ms``, oldest first; ``{}`` when no person has the identifier."""
    from connectors.redis_store import RedisStore

    store = RedisStore(settings.redis, prefix=prefix)
    try:
        key, pid = resolve_person(settings, store, identifier)
        if pid is None:
            return {}
        offers = [o for o in store.offers(pid) if int(o.get("expires_ms", 0)) > now_ms]
    finally:
        store.close()
    return {"identifier": key, "person": pid,
            "offers": [{**o, "offer_price": _money(int(o["offer_cents"])), "list_price": _money(int(o["list_cents"]))}
                       for o in offers]}
