"""One item's pricing step: inputs are absorbed as they come, prices and offers are decided at ticks.

``step(state | None, input, now, ctx) -> (state | None, outputs)``, keyed by item (``pipelines.pricing``):

* an :class:`ItemInput` (a view, cart or purchase: demand; an ``inventory`` event: stock per store, cost, base
  price, MAP, category; a ``competitor_price`` event) or an :class:`OfferRequest` is **absorbed**: demand
  adds its weight to the tick bucket of its event time (commutative); the others wait in ``pending``;
* a :class:`Tick` at ``T`` (an event-time timer on a multiple of ``ctx.tick_ms``) first **settles** the
  pending inputs with ``ts < T`` in (ts, event id) order: the latest inventory per store, the latest cost /
  base / MAP / category, the latest price per competitor, and each offer request against the list price in
  force at its time; then it **reprices** from the state as of ``T`` (demand buckets before ``T`` only).

So the prices and offers are a function of the inputs' event times and ids, not of their arrival order:
a replay, or the same stream at another parallelism, gives the same prices (tests/unit/test_pricing.py).
Ticks only go forward: an input later than a tick that already ran is settled at the next tick (the caller
asks for one after the watermark), and that one result depends on when it arrived.

Every price change is a :class:`PriceChange` whose ``record`` holds the inputs and the reasons
(:mod:`docs/pricing.md <operators.pricing>`); it is emitted only when the price changes (or is first set).
State is dropped ``ctx.item_ttl_ms`` after the item's last input (the caller's timer: :func:`expired`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from operators.pricing.offers import Offer, OfferRequest, decide_offer
from operators.pricing.policy import Policies, PricingPolicy, Rails, round_cents

HOUR_MS = 3_600_000
INVENTORY = "inventory"
COMPETITOR = "competitor_price"
_EPS = 1e-9


@dataclass(frozen=True)
class ItemInput:
    """One event on the item, as the job delivers it (money in cents; None: the event did not say)."""

    ts_ms: int
    event_id: str
    event_type: str
    store: str = ""
    qty: int | None = None
    cost_cents: int | None = None
    base_cents: int | None = None
    map_cents: int | None = None
    category: str | None = None
    competitor: str = ""
    competitor_cents: int | None = None


@dataclass(frozen=True)
class Tick:
    """Reprice at ``ts_ms`` (a multiple of the tick)."""

    ts_ms: int


@dataclass(frozen=True)
class PricingContext:
    """What every step reads besides the state: the policies in force (by event time: the latest of
    ``versions`` whose effective time is ≤ the tick), the tick, and the item → variant assignment of the
    configured pricing experiment (None: the item is not in it), used while the set in force names an
    experiment (a control message can turn it off with ``experiment: null``)."""

    versions: tuple[tuple[int, Policies], ...]
    tick_ms: int = 900_000
    item_ttl_ms: int = 90 * 24 * HOUR_MS
    variant_of: Callable[[str, int], str | None] = field(default=lambda item, ts: None)  # noqa: ARG005

    def policies_at(self, ts_ms: int) -> Policies:
        chosen = self.versions[0][1]
        for eff, p in self.versions:
            if eff <= ts_ms:
                chosen = p
        return chosen


@dataclass(frozen=True)
class PriceChange:
    """The item's new list price from ``ts_ms`` on; ``record`` explains it (inputs, bounds, reasons)."""

    item: str
    ts_ms: int
    price_cents: int
    record: Mapping[str, Any]


@dataclass(frozen=True)
class ItemState:
    """One item. ``stock``: store → (ts, event id, qty) (``""`` = the online warehouse); ``competitors``:
    name → (ts, event id, cents); ``catalog``: (ts, event id, cost, base, MAP) latest; ``demand``: tick bucket
    start → weight; ``pending``: inputs not yet settled; ``price``/``price_ts`` the list price in force;
    ``hour``/``hour_open``: the clock hour of the last tick and the price carried into it (the step limit's
    anchor); ``last_ts``: the latest input (for the TTL); ``held``: the step limit held the price back from its
    target at the last tick (so the next tick moves on); ``last_tick``: the last tick run (ticks only go forward)."""

    item: str
    category: str | None = None
    catalog: tuple[int, str, int | None, int | None, int | None] | None = None
    stock: Mapping[str, tuple[int, str, int]] = field(default_factory=dict)
    competitors: Mapping[str, tuple[int, str, int]] = field(default_factory=dict)
    demand: Mapping[int, float] = field(default_factory=dict)
    pending: tuple[ItemInput | OfferRequest, ...] = ()
    price: int | None = None
    price_ts: int = 0
    hour: int = -1
    hour_open: int | None = None
    last_ts: int = 0
    policy: str = ""
    variant: str | None = None
    held: bool = False
    last_tick: int = 0

    @property
    def cost(self) -> int | None:
        return self.catalog[2] if self.catalog else None

    @property
    def base(self) -> int | None:
        return self.catalog[3] if self.catalog else None

    @property
    def map_price(self) -> int | None:
        return self.catalog[4] if self.catalog else None


def next_tick(ts_ms: int, tick_ms: int) -> int:
    """The first tick strictly after ``ts_ms``: where an input with that time is settled."""
    return (ts_ms // tick_ms + 1) * tick_ms


def expired(state: ItemState, now_ms: int, ctx: PricingContext) -> bool:
    return not state.pending and now_ms >= state.last_ts + ctx.item_ttl_ms


def step(state: ItemState | None, msg: ItemInput | OfferRequest | Tick, now: int, ctx: PricingContext,
         item: str = "") -> tuple[ItemState | None, list[PriceChange | Offer]]:
    """Absorb an input, or settle and reprice at a tick (module docstring). ``item``: the key, for a new state."""
    st = state or ItemState(item=item or getattr(msg, "item", ""))
    if isinstance(msg, Tick):
        return _tick(st, msg.ts_ms, ctx)
    st = replace(st, last_ts=max(st.last_ts, msg.ts_ms))
    if isinstance(msg, ItemInput) and msg.event_type not in (INVENTORY, COMPETITOR):
        weight = ctx.policies_at(msg.ts_ms).get(None).demand_weights.get(msg.event_type, 0.0)
        if weight:
            b = msg.ts_ms // ctx.tick_ms * ctx.tick_ms
            st = replace(st, demand={**st.demand, b: st.demand.get(b, 0.0) + weight})
        return st, []
    return replace(st, pending=(*st.pending, msg)), []


def _order(m: ItemInput | OfferRequest) -> tuple[int, str, int]:
    return (m.ts_ms, m.event_id if isinstance(m, ItemInput) else m.offer_id, isinstance(m, OfferRequest))


def _newer(old: tuple[Any, ...] | None, ts: int, eid: str) -> bool:
    return old is None or (ts, eid) >= (old[0], old[1])


def _settle(st: ItemState, m: ItemInput) -> ItemState:
    if m.event_type == COMPETITOR:
        if m.competitor_cents is None or not _newer(st.competitors.get(m.competitor), m.ts_ms, m.event_id):
            return st
        return replace(st, competitors={**st.competitors, m.competitor: (m.ts_ms, m.event_id, m.competitor_cents)})
    if m.qty is not None and _newer(st.stock.get(m.store), m.ts_ms, m.event_id):
        st = replace(st, stock={**st.stock, m.store: (m.ts_ms, m.event_id, max(0, m.qty))})
    if (m.cost_cents, m.base_cents, m.map_cents, m.category) != (None, None, None, None) \
            and _newer(st.catalog, m.ts_ms, m.event_id):
        old = st.catalog or (0, "", None, None, None)
        st = replace(st, catalog=(m.ts_ms, m.event_id, _or(m.cost_cents, old[2]), _or(m.base_cents, old[3]),
                                  _or(m.map_cents, old[4])), category=m.category or st.category)
    return st


def _or(a: int | None, b: int | None) -> int | None:
    return a if a is not None else b


def _tick(st: ItemState, t: int, ctx: PricingContext) -> tuple[ItemState | None, list[PriceChange | Offer]]:
    if t <= st.last_tick:  # a late input's tick, already passed: its input waits for the next tick
        return st, []
    st = replace(st, last_tick=t)
    outs: list[PriceChange | Offer] = []
    due = sorted((m for m in st.pending if m.ts_ms < t), key=_order)
    st = replace(st, pending=tuple(m for m in st.pending if m.ts_ms >= t))
    for m in due:
        if isinstance(m, OfferRequest):
            pol = _policy(st, m.ts_ms, ctx)
            outs.append(decide_offer(m, st.item, st.price, pol.rails_for(st.category), st.cost, st.stock, pol.name))
        else:
            st = _settle(st, m)
    st, change = reprice(st, t, ctx)
    if change is not None:
        outs.append(change)
    keep_from = t - 2 * _policy(st, t, ctx).demand_window_ms
    st = replace(st, demand={b: w for b, w in st.demand.items() if b >= keep_from})
    if expired(st, t, ctx):
        return None, outs
    return st, outs


def _policy(st: ItemState, ts: int, ctx: PricingContext) -> PricingPolicy:
    pols = ctx.policies_at(ts)
    return pols.get(ctx.variant_of(st.item, ts) if pols.experiment else None)


def bounds(rails: Rails, cost: int, base: int, map_price: int | None) -> tuple[int, int, dict[str, int]]:
    """The list price's hard bounds ``(low, high, parts)``: low = max(floor, maximum discount, MAP), high = the
    ceiling. ``low > high`` (a cost above the ceiling) is possible: then ``low`` wins (never below cost)."""
    parts = {"floor": math.ceil(cost * (1 + rails.min_margin) - _EPS),
             "max_discount": math.ceil(base * (1 - rails.max_discount) - _EPS),
             "ceiling": math.floor(base * (1 + rails.max_markup) + _EPS)}
    if rails.respect_map and map_price is not None:
        parts["map"] = map_price
    low = max(v for k, v in parts.items() if k != "ceiling")
    return low, parts["ceiling"], parts


def reprice(st: ItemState, t: int, ctx: PricingContext) -> tuple[ItemState, PriceChange | None]:
    """The list price at tick ``t`` from the settled state; the state with the new price and hour anchor."""
    pols = ctx.policies_at(t)
    variant = ctx.variant_of(st.item, t) if pols.experiment else None
    pol = pols.get(variant)
    rails = pol.rails_for(st.category)
    hour = t // HOUR_MS
    hour_open = st.price if hour != st.hour else st.hour_open
    st = replace(st, hour=hour, hour_open=hour_open)
    cost, base = st.cost, st.base
    if cost is None or base is None:
        return st, None  # nothing to price from: the retailer's base price and cost come with an inventory event
    reasons: list[str] = []
    w = pol.demand_window_ms
    now_d = sum(v for b, v in st.demand.items() if t - w <= b < t)
    before_d = sum(v for b, v in st.demand.items() if t - 2 * w <= b < t - w)
    trend = now_d / max(before_d, 1.0)
    factor = 1.0
    if now_d >= pol.min_demand and trend >= pol.surge_trend:
        factor *= 1 + pol.surge_pct
        reasons.append("demand_surge")
    elif before_d >= pol.min_demand and trend <= pol.slump_trend:
        factor *= 1 - pol.slump_pct
        reasons.append("demand_slump")
    stores = {s: q for s, (_, _, q) in sorted(st.stock.items())}
    total = sum(stores.values()) if stores else None
    hold = False
    if total == 0:
        hold = True
        reasons.append("out_of_stock_hold")
    elif total is not None and total <= pol.low_stock_qty:
        factor *= 1 + pol.low_stock_pct
        reasons.append("low_stock")
    elif total is not None and total >= pol.overstock_qty:
        factor *= 1 - pol.overstock_pct
        reasons.append("overstock")
    target = float(st.price if hold and st.price is not None else base) * (1.0 if hold else factor)
    used: dict[str, int] = {}
    ignored: dict[str, str] = {}
    lo_sane, hi_sane = pol.competitor_sane
    for name, (ts, _, cents) in sorted(st.competitors.items()):
        if rails.competitor_mode == "ignore":
            ignored[name] = "policy_ignores_competitors"
        elif ts < t - pol.competitor_stale_ms:
            ignored[name] = "stale"
        elif not lo_sane * base <= cents <= hi_sane * base:
            ignored[name] = "absurd"
        else:
            used[name] = cents
    if rails.competitor_mode == "match" and used and not hold:
        cap = min(used.values()) * (1 + rails.competitor_tolerance)
        if target > cap:
            target = cap
            reasons.append("competitor_match")
    price = round_cents(target)
    step_lo = step_hi = None
    low, high, parts = bounds(rails, cost, base, st.map_price)
    unheld = low if low > high else min(max(price, low), high)
    if hour_open is not None:
        step_lo = math.ceil(hour_open * (1 - rails.max_step_per_hour) - _EPS)
        step_hi = math.floor(hour_open * (1 + rails.max_step_per_hour) + _EPS)
        if not step_lo <= price <= step_hi:
            price = min(max(price, step_lo), step_hi)
            reasons.append("step_limit")
    if low > high:
        price = low
        reasons.append("bounds_conflict")
    elif price < low:
        price = low
        reasons.append(next(k for k, v in parts.items() if v == low and k != "ceiling"))
    elif price > high:
        price = high
        reasons.append("ceiling")
    held = price != unheld  # the step limit, not a bound, kept the price from where it is going
    if price == st.price:
        return replace(st, held=held), None
    record = {
        "item": st.item, "ts_ms": t, "price_cents": price, "previous_cents": st.price, "category": st.category,
        "policy": pol.name, "policy_version": pol.version, "policy_set_version": pols.version, "variant": variant,
        "inputs": {"base_cents": base, "cost_cents": cost, "map_cents": st.map_price,
                   "demand": {"now": now_d, "before": before_d, "trend": round(trend, 6), "window_ms": w},
                   "stock": {"total": total, "stores": stores},
                   "competitors": {"used": used, "ignored": ignored}},
        "bounds": {**parts, "low": low, "high": high, "step_low": step_lo, "step_high": step_hi,
                   "hour_open_cents": hour_open},
        "target_cents": round_cents(target), "reasons": reasons or ["base"],
        "list_price_policy": "uniform",  # LIST_PRICE_POLICY: the same for every buyer
    }
    # the first price of an item is its own anchor for the rest of that hour
    return replace(st, price=price, price_ts=t, policy=pol.name, variant=variant, held=held,
                   hour_open=price if hour_open is None else hour_open), PriceChange(st.item, t, price, record)


def needs_tick(st: ItemState, t: int, ctx: PricingContext) -> bool:
    """Whether the item is repriced at the next tick without a new input: the step limit held the price back
    at ``t``, or its demand windows still hold weight from before ``t`` (the price follows demand back as the
    windows slide). A function of the inputs before ``t`` only, so the ticks of an item are the same however
    its inputs arrive; the chain ends at most two demand windows after the last input (plus the hours the
    step limit needs). An input with a later time asks for its own tick."""
    return st.held or any(t - 2 * _policy(st, t, ctx).demand_window_ms <= b < t for b in st.demand)
