"""The conversion funnel per campaign x channel from the job's minute counters (pure).

The job writes one hash per scope and event-time minute, ``{prefix}:m:{scope}:{YYYYMMDDHHMM}``
(connectors/redis_store.py), with ``views, carts, purchases, events, persons, revenue``; ``scope``
is ``<campaign>|<channel>`` or ``all``. Here those hashes become per-minute series over a window
of minutes and their sums. Missing minutes count as zero. ``persons`` is distinct per minute, so
it is not summed (a person active in two minutes would count twice): series only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from operators import scopes

ALL = "all"
COUNTS = ("views", "carts", "purchases", "events")


def minute_label(epoch_minute: int) -> str:
    """Epoch minute → ``YYYYMMDDHHMM`` (UTC), the suffix of the counter keys."""
    return dt.datetime.fromtimestamp(epoch_minute * 60, tz=dt.UTC).strftime("%Y%m%d%H%M")


def label_minute(label: str) -> int:
    """``YYYYMMDDHHMM`` (UTC) → epoch minute; inverse of :func:`minute_label`."""
    t = dt.datetime.strptime(label, "%Y%m%d%H%M").replace(tzinfo=dt.UTC)
    return int(t.timestamp()) // 60


def window(end_minute: int, minutes: int) -> list[int]:
    """The ``minutes`` epoch minutes ending with ``end_minute``, oldest first."""
    return list(range(end_minute - minutes + 1, end_minute + 1))


def split_scope(scope: str) -> tuple[str, str]:
    """``"spring|email"`` → ``("spring", "email")``; ``"all"`` → ``("", "")`` (escapes: operators.scopes)."""
    if scope == ALL:
        return "", ""
    return scopes.split_scope(scope)


def join_scope(campaign: str, channel: str) -> str:
    """Inverse of :func:`split_scope` (both empty → ``all``)."""
    return ALL if not campaign and not channel else scopes.scope_key(campaign, channel)


def _int(h: Mapping[str, str], k: str) -> int:
    v = h.get(k)
    return int(v) if v not in (None, "") else 0


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


@dataclass(frozen=True, slots=True)
class Funnel:
    """One scope over a window: per-minute series and sums (revenue as a 2-decimal string)."""

    scope: str
    minutes: tuple[int, ...]
    series: Mapping[str, tuple[int, ...]]  # COUNTS + persons, one value per minute
    revenue_series: tuple[str, ...]
    totals: Mapping[str, int]
    revenue: str

    @property
    def active(self) -> bool:
        return any(self.totals.values())

    def to_json(self, *, with_series: bool = True) -> dict[str, Any]:
        campaign, channel = split_scope(self.scope)
        t = self.totals
        out: dict[str, Any] = {
            "scope": self.scope,
            "campaign": campaign,
            "channel": channel,
            **{k: t[k] for k in COUNTS},
            "revenue": self.revenue,
            "view_to_cart": _ratio(t["carts"], t["views"]),
            "cart_to_purchase": _ratio(t["purchases"], t["carts"]),
            "conversion": _ratio(t["purchases"], t["views"]),
        }
        if with_series:
            out["minutes"] = [minute_label(m) for m in self.minutes]
            out["series"] = {k: list(v) for k, v in self.series.items()}
            out["series"]["revenue"] = list(self.revenue_series)
        return out


def funnel(scope: str, minutes: Sequence[int], hashes: Sequence[Mapping[str, str]]) -> Funnel:
    """The funnel of ``scope`` from its counter hashes, one per minute in ``minutes`` ({} = none)."""
    if len(minutes) != len(hashes):
        raise ValueError(f"funnel {scope!r}: {len(minutes)} minutes but {len(hashes)} counter hashes")
    series = {k: tuple(_int(h, k) for h in hashes) for k in (*COUNTS, "persons")}
    revenue = tuple(Decimal(h.get("revenue") or "0").quantize(Decimal("0.01")) for h in hashes)
    return Funnel(
        scope=scope,
        minutes=tuple(minutes),
        series=series,
        revenue_series=tuple(str(r) for r in revenue),
        totals={k: sum(series[k]) for k in COUNTS},
        revenue=str(sum(revenue, Decimal("0.00")).quantize(Decimal("0.01"))),
    )


def rank(funnels: Sequence[Funnel]) -> list[Funnel]:
    """``all`` first, then campaign|channel scopes by purchases, views (descending), then name."""
    head = [f for f in funnels if f.scope == ALL]
    rest = sorted(
        (f for f in funnels if f.scope != ALL),
        key=lambda f: (-f.totals["purchases"], -f.totals["views"], f.scope),
    )
    return head + rest
