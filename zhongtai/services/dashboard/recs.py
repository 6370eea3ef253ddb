"""The dashboard's top recommendation pairs: the most similar item pairs in ``{prefix}:rec:item:*``.

Reads at most ``scan_limit`` item keys (a SCAN, then one pipelined round trip for each item's best
neighbours), so the panel costs the same on a catalogue of a million items; with more items than that
the pairs are the best among the items scanned (``scanned`` says how many, ``complete`` whether all).
"""

from __future__ import annotations

from itertools import islice
from typing import Any


def top_pairs(store: Any, n: int = 20, *, scan_limit: int = 10_000, per_item: int = 3) -> dict[str, Any]:
    """``{pairs: [{item, similar, score}], scanned, complete}``: the ``n`` best pairs, best first (ties by
    item ids), each unordered pair once (with its larger direction's score)."""
    head = store.rec_item_key("")
    keys = list(islice(store.client.scan_iter(match=head + "*", count=1000), scan_limit + 1))
    complete = len(keys) <= scan_limit
    keys = sorted(keys[:scan_limit])
    pipe = store.client.pipeline(transaction=False)
    for k in keys:
        pipe.zrange(k, -per_item, -1, withscores=True)
    best: dict[tuple[str, str], float] = {}
    for k, members in zip(keys, pipe.execute() if keys else [], strict=True):
        item = k[len(head):]
        for other, score in members:
            pair = (min(item, other), max(item, other))
            best[pair] = max(best.get(pair, 0.0), float(score))
    ranked = sorted(best.items(), key=lambda ps: (-ps[1], ps[0]))[:n]
    return {"pairs": [{"item": a, "similar": b, "score": s} for (a, b), s in ranked], "scanned": len(keys),
            "complete": complete}
