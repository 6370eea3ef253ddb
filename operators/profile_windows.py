"""Rolling profile windows evaluated from bucketed counters (pure).

A person's profile hash (Redis ``{prefix}:profile:{person}``, see connectors/redis_profile.lua) holds
lifetime totals and event-time buckets: ``m:{minute}`` (the absolute per-minute row
``views,carts,purchases,events,gmv_cents,first,last,last_purchase``), ``hv:{hour}`` / ``hc:{hour}``
(views / carts per hour), ``dp:{day}`` / ``dg:{day}`` (purchases / GMV cents per UTC day).
Buckets are epoch minutes / hours / days. Windows are aligned to buckets (docs/semantics.md):
``views_1h`` covers the 60 minute buckets ending with the minute of ``as_of``, and so on.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000

#: How long each bucket kind must be kept so that every window can be evaluated.
KEEP_MINUTES = 90 * 1440  # minute rows double as the exact base for replays (see the Lua script)
KEEP_HOURS = 168
KEEP_DAYS = 90


def cents_to_str(cents: int) -> str:
    return str((Decimal(cents) / 100).quantize(Decimal("0.01")))


def _int(h: Mapping[str, str], field: str) -> int:
    v = h.get(field)
    return int(v) if v not in (None, "") else 0


def _sum(h: Mapping[str, str], kind: str, end: int, n: int) -> int:
    return sum(_int(h, f"{kind}:{b}") for b in range(end - n + 1, end + 1))


def _minute_views(h: Mapping[str, str], end: int, n: int) -> int:
    total = 0
    for m in range(end - n + 1, end + 1):
        row = h.get(f"m:{m}")
        if row:
            total += int(row.split(",", 1)[0])
    return total


def evaluate(h: Mapping[str, str], as_of: int | None = None) -> dict[str, object]:
    """The profile summary: lifetime fields and rolling windows as of ``as_of`` (default last_seen).

    ``h`` is the decoded profile hash (str → str). Returns ints, money as 2-decimal strings, and
    ``last_purchase`` only when the person has purchased.
    """
    if not h:
        return {}
    last_seen = _int(h, "last_seen")
    t = last_seen if as_of is None else as_of
    minute, hour, day = t // MINUTE_MS, t // HOUR_MS, t // DAY_MS
    out: dict[str, object] = {
        "first_seen": _int(h, "first_seen"),
        "last_seen": last_seen,
        "events": _int(h, "events"),
        "views": _int(h, "views"),
        "carts": _int(h, "carts"),
        "purchases": _int(h, "purchases"),
        "gmv": cents_to_str(_int(h, "gmv_cents")),
        "views_1h": _minute_views(h, minute, 60),
        "views_24h": _sum(h, "hv", hour, 24),
        "views_7d": _sum(h, "hv", hour, 168),
        "carts_7d": _sum(h, "hc", hour, 168),
        "purchases_30d": _sum(h, "dp", day, 30),
        "gmv_30d": cents_to_str(_sum(h, "dg", day, 30)),
        "purchases_90d": _sum(h, "dp", day, 90),
        "gmv_90d": cents_to_str(_sum(h, "dg", day, 90)),
    }
    if _int(h, "last_purchase"):
        out["last_purchase"] = _int(h, "last_purchase")
    return out
