"""Pricing policies: the guard rails per category, the demand/stock/competitor rules, and the legal policy.

A policy is data (``pricing.policies`` in config/defaults.yaml, or a control message of kind ``pricing``:
docs/pricing.md). Every number here bounds or moves **the item's list price**, which is one price per item
at a moment, the same for everyone: a policy has no field that names a person, a tag or a segment, and
:func:`policy_from_mapping` refuses one that tries (:data:`PERSONAL_KEYS`). That is the legal policy of
:data:`LIST_PRICE_POLICY` made structural: China's E-commerce Law art. 18 and SAMR's 2021 rules against
big-data price discrimination forbid different list prices for identical trading conditions. Personal
advantages are **offers** (``operators.pricing.offers``): explicit, time-limited, recorded, and bounded by the
same rails.

Money is integer cents everywhere (no float in a stored price); factors are floats and a result is rounded
once, half up, to the cent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

#: What the list-price policy is, in one sentence (stored with every price, shown by the API and docs).
LIST_PRICE_POLICY = ("uniform list price: one price per item at a moment for every buyer; personalised list "
                     "prices for identical conditions are refused (E-commerce Law of the PRC art. 18; SAMR 2021 "
                     "rules on big-data price discrimination); personal advantages are explicit, recorded offers")
#: Keys a list-price policy may never have: they would make the list price depend on who asks.
PERSONAL_KEYS = frozenset({"person", "persons", "person_id", "tag", "tags", "segment", "segments", "audience",
                           "targeting", "profile", "by_person", "by_tag", "by_segment", "user", "users"})
_HOUR = 3_600_000


class PricingPolicyError(ValueError):
    """A pricing policy is malformed or refused; the message names the policy, the key and what to do."""


@dataclass(frozen=True)
class Rails:
    """The guard rails of one category. Bounds of the list price ``p`` of an item with cost ``c``, base
    (the retailer's own list price) ``b`` and minimum advertised price ``m``:

    * floor ``c × (1 + min_margin)``: never sell below cost plus the minimum margin;
    * ``b × (1 − max_discount) ≤ p ≤ b × (1 + max_markup)`` (the ceiling);
    * ``p ≥ m`` when ``respect_map`` (the manufacturer's MAP);
    * within one clock hour (event time, UTC) ``p`` stays within ``max_step_per_hour`` of the price in force
      when the hour began;
    * a personal offer is at most ``max_offer_discount`` below the list price and never below the floor.

    Competitors (``competitor_mode``): ``match`` keeps ``p`` at most ``competitor_tolerance`` above the lowest
    fresh, sane competitor price (the rails above still win); ``ignore`` never looks at them.
    """

    min_margin: float = 0.05
    max_markup: float = 0.20
    max_discount: float = 0.30
    max_step_per_hour: float = 0.10
    max_offer_discount: float = 0.20
    respect_map: bool = True
    competitor_mode: str = "match"
    competitor_tolerance: float = 0.0

    def __post_init__(self) -> None:
        for name in ("min_margin", "max_markup", "competitor_tolerance"):
            if not 0.0 <= getattr(self, name) <= 10.0:
                raise PricingPolicyError(f"rails.{name} must be between 0 and 10, got {getattr(self, name)!r}")
        for name in ("max_discount", "max_step_per_hour", "max_offer_discount"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise PricingPolicyError(f"rails.{name} must be in [0, 1), got {getattr(self, name)!r}")
        if self.competitor_mode not in ("match", "ignore"):
            raise PricingPolicyError(f"rails.competitor_mode must be match or ignore, got {self.competitor_mode!r}")


@dataclass(frozen=True)
class PricingPolicy:
    """How the list price moves from the base price, within the rails of the item's category.

    Demand: the weighted events (``demand_weights``) on the item in the last ``demand_window_ms`` against the
    window before; ``trend = now / max(before, 1)``. At ``trend ≥ surge_trend`` with at least ``min_demand``
    the target is ``base × (1 + surge_pct)``; at ``trend ≤ slump_trend`` ``base × (1 − slump_pct)``.
    Stock (all stores and the warehouse): at most ``low_stock_qty`` adds ``low_stock_pct``; at least
    ``overstock_qty`` takes ``overstock_pct`` off; none at all holds the price (nothing to sell, nothing to
    learn). Competitor prices older than ``competitor_stale_ms`` or outside ``competitor_sane`` × base are
    ignored (and the record says which and why).
    """

    name: str
    version: int = 1
    demand_window_ms: int = _HOUR
    demand_weights: Mapping[str, float] = field(default_factory=lambda: MappingProxyType(
        {"page_view": 1.0, "add_to_cart": 3.0, "purchase": 5.0}))
    min_demand: float = 10.0
    surge_trend: float = 2.0
    surge_pct: float = 0.05
    slump_trend: float = 0.5
    slump_pct: float = 0.05
    low_stock_qty: int = 5
    low_stock_pct: float = 0.05
    overstock_qty: int = 1000
    overstock_pct: float = 0.05
    competitor_stale_ms: int = 24 * _HOUR
    competitor_sane: tuple[float, float] = (0.5, 2.0)
    rails: Mapping[str, Rails] = field(default_factory=lambda: MappingProxyType({"*": Rails()}))

    def __post_init__(self) -> None:
        if not self.name:
            raise PricingPolicyError("a pricing policy needs a name")
        if self.demand_window_ms <= 0 or self.competitor_stale_ms <= 0:
            raise PricingPolicyError(f"policy {self.name!r}: demand_window_ms and competitor_stale_ms must be > 0")
        for pct in ("surge_pct", "slump_pct", "low_stock_pct", "overstock_pct"):
            if not 0.0 <= getattr(self, pct) < 1.0:
                raise PricingPolicyError(f"policy {self.name!r}: {pct} must be in [0, 1), got {getattr(self, pct)!r}")
        lo, hi = self.competitor_sane
        if not 0.0 < lo <= 1.0 <= hi:
            raise PricingPolicyError(f"policy {self.name!r}: competitor_sane must be [low ≤ 1 ≤ high], got "
                                     f"{self.competitor_sane!r}")
        if "*" not in self.rails:
            raise PricingPolicyError(f"policy {self.name!r}: rails need a '*' entry (the default category)")

    def rails_for(self, category: str | None) -> Rails:
        return self.rails.get(category or "*", self.rails["*"])


@dataclass(frozen=True)
class Policies:
    """The policies in force: ``default`` for every item, unless ``experiment`` (an experiment key of the
    experiments module, unit ``item``) assigns the item a variant that ``variants`` maps to another policy."""

    policies: Mapping[str, PricingPolicy]
    default: str
    experiment: str | None = None
    variants: Mapping[str, str] = field(default_factory=dict)
    #: The set's control version (``pricing.version``, or the control message's): recorded with every price.
    version: int = 1

    def __post_init__(self) -> None:
        missing = [p for p in (self.default, *self.variants.values()) if p not in self.policies]
        if missing:
            raise PricingPolicyError(f"pricing: policies {sorted(set(missing))} are named but not defined "
                                     f"(defined: {sorted(self.policies)})")

    def get(self, variant: str | None) -> PricingPolicy:
        return self.policies[self.variants.get(variant or "", self.default)]


def _refuse_personal(raw: Mapping[str, Any], where: str) -> None:
    bad = sorted(k for k in raw if str(k).lower() in PERSONAL_KEYS)
    if bad:
        raise PricingPolicyError(
            f"{where}: {bad} would make the list price depend on who is asking; refused by the list-price "
            "policy (E-commerce Law of the PRC art. 18, SAMR 2021 rules): give those persons an offer instead "
            "(docs/pricing.md, 'Offers')")


def rails_from_mapping(raw: Mapping[str, Any], where: str) -> Rails:
    _refuse_personal(raw, where)
    known = {f.name for f in fields(Rails)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise PricingPolicyError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
    return Rails(**raw)


def policy_from_mapping(raw: Mapping[str, Any]) -> PricingPolicy:
    """A policy from YAML/JSON; raises :class:`PricingPolicyError` (personal keys, unknown keys, ranges)."""
    if not isinstance(raw, Mapping) or not raw.get("name"):
        raise PricingPolicyError("a pricing policy must be a mapping with a name")
    where = f"pricing policy {raw['name']!r}"
    _refuse_personal(raw, where)
    known = {f.name for f in fields(PricingPolicy)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise PricingPolicyError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
    body = dict(raw)
    rails = body.pop("rails", None) or {"*": {}}
    if not isinstance(rails, Mapping):
        raise PricingPolicyError(f"{where}: rails must map a category to its rails")
    body["rails"] = MappingProxyType({str(c): rails_from_mapping(r or {}, f"{where} rails[{c!r}]")
                                      for c, r in rails.items()})
    if "demand_weights" in body:
        body["demand_weights"] = MappingProxyType({str(k): float(v) for k, v in body["demand_weights"].items()})
    if "competitor_sane" in body:
        body["competitor_sane"] = tuple(float(x) for x in body["competitor_sane"])
    try:
        return PricingPolicy(**body)
    except TypeError as e:
        raise PricingPolicyError(f"{where}: {e}") from None


def policies_from_mapping(policies: Sequence[Mapping[str, Any]], default: str, experiment: str | None = None,
                          variants: Mapping[str, str] | None = None, version: int = 1) -> Policies:
    out = {}
    for raw in policies:
        p = policy_from_mapping(raw)
        if p.name in out:
            raise PricingPolicyError(f"pricing: policy {p.name!r} defined twice")
        out[p.name] = p
    return Policies(MappingProxyType(out), default, experiment, MappingProxyType(dict(variants or {})), version)


def round_cents(x: float) -> int:
    """Half up to the cent (prices are positive)."""
    return int(x + 0.5)
