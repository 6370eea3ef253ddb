"""The dashboard's price panel: the items whose list price changed last (``{prefix}:price:{item}``, docs/pricing.md).

Reads at most ``scan_limit`` members of ``{prefix}:price:items`` (an SSCAN, then one pipelined round trip for
their price hashes), so the panel costs the same on a catalogue of a million items; ``scanned`` says how many
were read and ``complete`` whether that was all of them.
"""

from __future__ import annotations

from itertools import islice
from typing import Any


def latest_prices(store: Any, n: int = 20, *, scan_limit: int = 10_000) -> dict[str, Any]:
    """``{prices: [{item, price_cents, since_ms, policy, variant, reasons}], scanned, complete}``: the ``n`` most
    recent list prices, newest first (ties by item id)."""
    items = list(islice(store.client.sscan_iter(f"{store.prefix}:price:items", count=1000), scan_limit + 1))
    complete = len(items) <= scan_limit
    items = sorted(items[:scan_limit])
    pipe = store.client.pipeline(transaction=False)
    for item in items:
        pipe.hmget(store.price_key(item), "price_cents", "ts_ms", "policy", "variant", "reasons")
    rows = []
    for item, (cents, ts, policy, variant, reasons) in zip(items, pipe.execute() if items else [], strict=True):
        if cents is None:
            continue
        rows.append({"item": item, "price_cents": int(cents), "since_ms": int(ts or 0), "policy": policy or "",
                     "variant": variant or None, "reasons": [r for r in (reasons or "").split(",") if r]})
    rows.sort(key=lambda r: (-r["since_ms"], r["item"]))
    return {"prices": rows[:n], "scanned": len(items), "complete": complete}
