"""Item–item co-occurrence, updated per event: three pure steps and the top-K read.

The similarity is the **asymmetric cosine** (Aiolli 2013) of the items' person vectors, time-decayed::

    sim(a → b) = C(a, b) / (N(a) ** (1 − β) · N(b) ** β)

``C(a, b) = Σ_persons v[a] · v[b]`` is the co-occurrence, ``N(x) = Σ_persons v[x]²`` the squared norm,
``v[x]`` the weight (``RecsConfig.weights``: a view 1, a cart 3, a purchase 5 by default) of a person's
events on ``x`` *inside their recent window* (``window_items`` events within ``window_ms`` of each other).
``β = 0.5`` is the plain cosine; a larger ``β`` (``damping``) damps popular neighbours further. Why cosine
and not raw counts or Jaccard: raw counts rank the best sellers next to everything; cosine divides by
both items' activity, is bounded by 1 (so the lists of different items can be summed for a person), and
it can be kept **exactly and incrementally** from one event: when a person adds ``w`` to ``v[x]``,
``C(x, y)`` grows by ``w · v[y]`` for every ``y`` in their window and ``N(x)`` by ``2 · w · v[x] + w²``.

Every aggregate decays by event time with half-life ``half_life_ms`` (each is stored as its value at a
reference time; adding is commutative, so the arrival order of a key's updates does not change it, up to
float rounding). Scores are ratios of equally decayed sums: the decay weights recent co-occurrence over
old, and does not shrink a list that stops changing.

The steps, in the job one keyed operator each (``pipelines.recs``)::

    person_step    key person   PersonWindow   ItemEvent → NormDelta(x), PairDelta(x, y), PairDelta(y, x)
    norm_step      key item     ItemNorm       NormDelta(x) → SelfNorm(x);  PairDelta(a, b) → NormedPair(a, b, N(b))
    neighbour_step key item     Neighbours     SelfNorm / NormedPair → the item's neighbour list (top_neighbours)

A pair is keyed by its *second* item in ``norm_step`` (which knows ``N(b)``) and by its first in
``neighbour_step``: no operator needs another key's state and the graph has no loop. ``N(b)`` travels as
a snapshot with each pair update, so a neighbour's norm is as of its last co-occurrence with ``a``.

Bounds: a person window holds at most ``window_items`` events and ``max_purchased`` purchases (dropped
``person_ttl_ms`` after the person's last event); a neighbour list at most ``max_neighbours`` (+ a quarter of
slack, pruned by lowest score: popular, damped neighbours go first) and no pair untouched for
``pair_ttl_ms`` (event time); an item norm is dropped ``pair_ttl_ms`` after its last update.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

#: Default weights per event type (docs/recommendations.md).
DEFAULT_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"page_view": 1.0, "add_to_cart": 3.0, "purchase": 5.0}
)
_DAY = 86_400_000


class RecsConfigError(ValueError):
    """A recommender setting is out of range; the message names the key and what to use."""


@dataclass(frozen=True)
class RecsConfig:
    """The recommender's parameters (``recs.*`` in config/defaults.yaml)."""

    weights: Mapping[str, float] = field(default_factory=lambda: DEFAULT_WEIGHTS)
    purchase_types: frozenset[str] = frozenset({"purchase"})
    window_items: int = 50
    window_ms: int = 30 * _DAY
    half_life_ms: int = 30 * _DAY
    damping: float = 0.5
    max_neighbours: int = 100
    top_k: int = 50
    pair_ttl_ms: int = 60 * _DAY
    person_ttl_ms: int = 60 * _DAY
    max_purchased: int = 50

    def __post_init__(self) -> None:
        if not self.weights or any(w <= 0 for w in self.weights.values()):
            raise RecsConfigError(
                "recs.weights: give at least one event type with a weight > 0 "
                f"(e.g. page_view: 1, add_to_cart: 3, purchase: 5); got {dict(self.weights)}"
            )
        if not 0.0 <= self.damping <= 1.0:
            raise RecsConfigError(f"recs.damping must be within [0, 1] (0.5 = cosine); got {self.damping}")
        for name in ("window_items", "max_neighbours", "top_k", "max_purchased"):
            if getattr(self, name) < 1:
                raise RecsConfigError(f"recs.{name} must be ≥ 1; got {getattr(self, name)}")
        if self.top_k > self.max_neighbours:
            raise RecsConfigError(
                f"recs.top_k ({self.top_k}) must not exceed recs.max_neighbours "
                f"({self.max_neighbours}): the list is cut from the kept neighbours"
            )
        for name in ("window_ms", "pair_ttl_ms", "person_ttl_ms"):
            if getattr(self, name) <= 0:
                raise RecsConfigError(f"recs.{name} must be > 0 ms; got {getattr(self, name)}")
        if self.half_life_ms < 0:
            raise RecsConfigError(f"recs.half_life_ms must be ≥ 0 (0 = no decay); got {self.half_life_ms}")


def decayed(value: float, ts_ms: int, now_ms: int, half_life_ms: int) -> float:
    """``value`` taken at ``ts_ms``, seen at ``now_ms`` (half-life 0: no decay)."""
    if half_life_ms <= 0 or now_ms == ts_ms:
        return value
    return float(value * 2.0 ** (-(now_ms - ts_ms) / half_life_ms))


def _add(value: float, ts_ms: int, delta: float, at_ms: int, half_life_ms: int) -> tuple[float, int]:
    """``value`` (at ``ts_ms``) plus ``delta`` (at ``at_ms``), at the later of the two times."""
    ref = max(ts_ms, at_ms)
    return decayed(value, ts_ms, ref, half_life_ms) + decayed(delta, at_ms, ref, half_life_ms), ref


# ---- messages --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ItemEvent:
    """A person's event on an item (``zt_person_events`` with ``item_id``)."""

    person: str
    item: str
    event_type: str
    ts_ms: int


@dataclass(frozen=True, slots=True)
class NormDelta:
    item: str
    delta: float
    ts_ms: int


@dataclass(frozen=True, slots=True)
class PairDelta:
    """``C(a, b)`` grows by ``delta`` at ``ts_ms`` (keyed by ``b`` in ``norm_step``)."""

    a: str
    b: str
    delta: float
    ts_ms: int


@dataclass(frozen=True, slots=True)
class SelfNorm:
    """``N(item)`` is ``norm`` at ``ts_ms`` (to ``neighbour_step`` keyed by ``item``)."""

    item: str
    norm: float
    ts_ms: int


@dataclass(frozen=True, slots=True)
class NormedPair:
    """A ``PairDelta`` with ``N(b)`` at ``norm_ts_ms`` (to ``neighbour_step`` keyed by ``a``)."""

    a: str
    b: str
    delta: float
    ts_ms: int
    norm_b: float
    norm_ts_ms: int


# ---- person window ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Seen:
    item: str
    ts_ms: int
    weight: float


@dataclass(frozen=True, slots=True)
class PersonWindow:
    """A person's last ``window_items`` weighted events (oldest first) and purchased items (item, ts)."""

    recent: tuple[Seen, ...]
    purchased: tuple[tuple[str, int], ...] = ()

    @property
    def last_ts(self) -> int:
        return max([s.ts_ms for s in self.recent] + [t for _, t in self.purchased], default=0)


def person_step(
    state: PersonWindow | None, event: ItemEvent | None, now_ms: int, cfg: RecsConfig
) -> tuple[PersonWindow | None, tuple[NormDelta | PairDelta, ...]]:
    """One event of the person (or ``None``: a timer at ``now_ms``, which drops the window
    ``person_ttl_ms`` after its last event). Events without an item or of an unweighted type change
    nothing. Returns the window and the updates: ``NormDelta`` of the event's item first, then both
    directions of every pair with the other items of the window (in item order)."""
    if event is None:
        if state is None or now_ms - state.last_ts < cfg.person_ttl_ms:
            return state, ()
        return None, ()
    w = cfg.weights.get(event.event_type)
    if not w or not event.item:
        return state, ()
    x, ts = event.item, event.ts_ms
    recent = state.recent if state is not None else ()
    v: dict[str, float] = {}
    for s in recent:
        if abs(ts - s.ts_ms) <= cfg.window_ms:
            v[s.item] = v.get(s.item, 0.0) + s.weight
    vx = v.get(x, 0.0)
    outs: list[NormDelta | PairDelta] = [NormDelta(x, 2.0 * w * vx + w * w, ts)]
    for y in sorted(v):
        if y != x:
            d = w * v[y]
            outs.append(PairDelta(x, y, d, ts))
            outs.append(PairDelta(y, x, d, ts))
    kept = sorted((*recent, Seen(x, ts, w)), key=lambda s: (s.ts_ms, s.item))[-cfg.window_items :]
    purchased = state.purchased if state is not None else ()
    if event.event_type in cfg.purchase_types:
        purchased = tuple(
            sorted(
                {**dict(purchased), x: max(ts, dict(purchased).get(x, ts))}.items(),
                key=lambda p: (p[1], p[0]),
            )
        )[-cfg.max_purchased :]
    return PersonWindow(tuple(kept), purchased), tuple(outs)


# ---- item norm -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ItemNorm:
    norm: float
    ts_ms: int


def norm_step(
    state: ItemNorm | None, msg: NormDelta | PairDelta | None, now_ms: int, cfg: RecsConfig
) -> tuple[ItemNorm | None, tuple[SelfNorm | NormedPair, ...]]:
    """Keyed by item: a ``NormDelta`` updates ``N(item)`` and sends it on (``SelfNorm``); a ``PairDelta``
    whose ``b`` is this item goes on with ``N(b)`` attached (dropped while ``N(b)`` is unknown: the
    person step sends an item's norm before any pair naming it). ``None``: a timer, which drops the norm
    ``pair_ttl_ms`` after its last update."""
    if msg is None:
        if state is not None and now_ms - state.ts_ms >= cfg.pair_ttl_ms:
            return None, ()
        return state, ()
    if isinstance(msg, NormDelta):
        norm, ts = _add(
            state.norm if state else 0.0,
            state.ts_ms if state else msg.ts_ms,
            msg.delta,
            msg.ts_ms,
            cfg.half_life_ms,
        )
        new = ItemNorm(norm, ts)
        return new, (SelfNorm(msg.item, norm, ts),)
    if state is None:
        return None, ()
    return state, (NormedPair(msg.a, msg.b, msg.delta, msg.ts_ms, state.norm, state.ts_ms),)


# ---- neighbours ------------------------------------------------------------------------------------
@dataclass(slots=True)
class Neighbours:
    """One item's neighbour list. Mutable on purpose: ``neighbour_step`` updates the state it is given
    and returns it (a list of up to ~125 pairs is updated once per pair event; copying it each time
    cost 20× the step). ``pairs``: neighbour → ``[C, C's ts, N(b), N(b)'s ts]``."""

    norm: float = 0.0
    norm_ts: int = 0
    last_ts: int = 0
    pairs: dict[str, list[float]] = field(default_factory=dict)


def neighbour_step(
    state: Neighbours | None, msg: SelfNorm | NormedPair | None, now_ms: int, cfg: RecsConfig
) -> tuple[Neighbours | None, bool]:
    """Keyed by item ``a``: a ``SelfNorm`` sets ``N(a)``, a ``NormedPair`` adds to ``C(a, b)`` and keeps
    the newer ``N(b)``. ``None``: a timer at ``now_ms``, which drops pairs untouched for ``pair_ttl_ms``
    and the whole state when none is left. Returns the state (``None``: clear the key) and whether the
    list may have changed (then the caller writes :func:`top_neighbours`)."""
    if msg is None:
        if state is None:
            return None, False
        before = len(state.pairs)
        _prune(state, max(now_ms, state.last_ts), cfg, ttl_only=True)
        if not state.pairs and now_ms - state.norm_ts >= cfg.pair_ttl_ms:
            return None, True
        return state, len(state.pairs) != before
    st = state if state is not None else Neighbours()
    if isinstance(msg, SelfNorm):
        if msg.ts_ms >= st.norm_ts:
            st.norm, st.norm_ts = msg.norm, msg.ts_ms
        st.last_ts = max(st.last_ts, msg.ts_ms)
        return st, bool(st.pairs)
    e = st.pairs.get(msg.b)
    if e is None:
        st.pairs[msg.b] = [msg.delta, msg.ts_ms, msg.norm_b, msg.norm_ts_ms]
    else:
        e[0], e[1] = _add(e[0], int(e[1]), msg.delta, msg.ts_ms, cfg.half_life_ms)
        if msg.norm_ts_ms >= e[3]:
            e[2], e[3] = msg.norm_b, msg.norm_ts_ms
    st.last_ts = max(st.last_ts, msg.ts_ms)
    if len(st.pairs) > cfg.max_neighbours + cfg.max_neighbours // 4:
        _prune(st, st.last_ts, cfg, ttl_only=False)
    return st, True


def _score(st: Neighbours, e: list[float], now_ms: int, cfg: RecsConfig) -> float:
    h = cfg.half_life_ms
    na = decayed(st.norm, st.norm_ts, now_ms, h)
    nb = decayed(e[2], int(e[3]), now_ms, h)
    if na <= 0.0 or nb <= 0.0:
        return 0.0
    return decayed(e[0], int(e[1]), now_ms, h) / (na ** (1.0 - cfg.damping) * nb**cfg.damping)


def _prune(st: Neighbours, now_ms: int, cfg: RecsConfig, *, ttl_only: bool) -> None:
    for b in [b for b, e in st.pairs.items() if now_ms - int(e[1]) >= cfg.pair_ttl_ms]:
        del st.pairs[b]
    if not ttl_only and len(st.pairs) > cfg.max_neighbours:
        keep = heapq.nlargest(
            cfg.max_neighbours, st.pairs, key=lambda b: (_score(st, st.pairs[b], now_ms, cfg), b)
        )
        st.pairs = {b: st.pairs[b] for b in keep}


def top_neighbours(
    state: Neighbours | None, cfg: RecsConfig, k: int | None = None
) -> tuple[tuple[str, float], ...]:
    """The item's ``k`` (default ``top_k``) most similar items with their scores (rounded to 1e-6, so a
    replay writes the same values), best first, ties by item id; empty for no state."""
    if state is None or not state.pairs:
        return ()
    now = state.last_ts
    scored = [(round(_score(state, e, now, cfg), 6), b) for b, e in state.pairs.items()]
    best = heapq.nsmallest(k or cfg.top_k, ((-s, b) for s, b in scored if s > 0.0))
    return tuple((b, -s) for s, b in best)
