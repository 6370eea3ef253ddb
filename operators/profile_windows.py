"""Rolling profile windows evaluated from a stored profile hash (pure): the readers' side of the one
profile model, ``operators.profile``.

A person's profile hash (Redis ``{prefix}:profile:{person}``, see connectors/redis_profile.lua; HBase's
minute cells through ``connectors.hbase_store.derive_profile_hash``) holds lifetime totals and event-time
buckets: ``m:{minute}`` (the absolute per-minute row ``views,carts,purchases,events,gmv_cents,first,last,
last_purchase``), ``hv:{hour}`` / ``hc:{hour}`` (views / carts per hour), ``dp:{day}`` / ``dg:{day}``
(purchases / GMV cents per UTC day). :func:`evaluate` reads it into ``operators.profile.Profile`` and asks
for its fields: the windows are defined once, there (docs/semantics.md "Person profile").
"""

from __future__ import annotations

from collections.abc import Mapping

from operators.profile import DAY_MS, HOUR_MS, KEEP_DAYS, MINUTE_MS, cents_to_str, from_hash

__all__ = ["DAY_MS", "HOUR_MS", "KEEP_DAYS", "KEEP_HOURS", "KEEP_MINUTES", "MINUTE_MS", "cents_to_str", "evaluate"]

#: How long each bucket kind must be kept so that every window can be evaluated.
KEEP_MINUTES = KEEP_DAYS * 1440  # minute rows double as the exact base for replays (see the Lua script)
KEEP_HOURS = 168


def evaluate(h: Mapping[str, str], as_of: int | None = None) -> dict[str, object]:
    """The profile summary: lifetime fields and rolling windows as of ``as_of`` (default last_seen).

    ``h`` is the decoded profile hash (str → str). Returns ints, money as 2-decimal strings, and
    ``last_purchase`` only when the person has purchased.
    """
    if not h:
        return {}
    p, rows = from_hash(h)
    if p.life[3] <= 0 and not p.last:
        return {}
    return p.fields(as_of, rows, complete=True)
