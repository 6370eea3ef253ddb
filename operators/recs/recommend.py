"""A person's recommendations from their recent items, and the three steps chained in one process.

:func:`recommend` is what the API (``GET /v1/recommendations/{identifier}``) and the bench call: each
recent item's similar items (``{prefix}:rec:item:{item}`` in Redis, or :class:`InProcessRecommender`)
summed with the recent item's weight, minus the recent items themselves and the items in ``exclude``
(purchased, out of stock, seen earlier: the caller says which).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from operators.recs.cooccurrence import (
    ItemEvent,
    ItemNorm,
    Neighbours,
    NormDelta,
    NormedPair,
    PersonWindow,
    RecsConfig,
    Seen,
    SelfNorm,
    neighbour_step,
    norm_step,
    person_step,
    top_neighbours,
)


def recommend(
    recent: Sequence[Seen],
    similar: Callable[[str], Sequence[tuple[str, float]]],
    k: int,
    *,
    exclude: Iterable[str] = (),
) -> list[tuple[str, float]]:
    """Up to ``k`` (item, score), best first (ties by item id): ``score(c) = Σ_recent weight · sim(item, c)``
    over the recent items; the recent items themselves and those in ``exclude`` are left out. ``similar(item)`` returns the item's
    neighbours with their similarity."""
    if k < 1:
        raise ValueError(f"recommend: k must be ≥ 1; got {k}")
    skip = {*exclude, *(s.item for s in recent)}
    scores: dict[str, float] = {}
    for s in recent:
        for c, sim in similar(s.item):
            if c not in skip:
                scores[c] = scores.get(c, 0.0) + s.weight * sim
    return sorted(((c, round(v, 6)) for c, v in scores.items()), key=lambda cv: (-cv[1], cv[0]))[:k]


class InProcessRecommender:
    """The job's three keyed steps in one process (tests, the quality bench, the throughput figure):
    the same routing as ``pipelines.recs`` (norm step keyed by a pair's second item, neighbours by its first)."""

    def __init__(self, cfg: RecsConfig) -> None:
        self.cfg = cfg
        self.persons: dict[str, PersonWindow] = {}
        self.norms: dict[str, ItemNorm] = {}
        self.neighbours: dict[str, Neighbours] = {}
        self.pairs = 0  # pair updates applied (each direction counts once)

    def update(self, event: ItemEvent) -> None:
        cfg = self.cfg
        st, outs = person_step(self.persons.get(event.person), event, event.ts_ms, cfg)
        if st is not None:
            self.persons[event.person] = st
        for m in outs:
            key = m.item if isinstance(m, NormDelta) else m.b
            norm, fwd = norm_step(self.norms.get(key), m, m.ts_ms, cfg)
            if norm is not None:
                self.norms[key] = norm
            for f in fwd:
                a = f.item if isinstance(f, SelfNorm) else f.a
                nb, _ = neighbour_step(self.neighbours.get(a), f, f.ts_ms, cfg)
                if nb is not None:
                    self.neighbours[a] = nb
                self.pairs += isinstance(f, NormedPair)

    def similar(self, item: str, k: int | None = None) -> tuple[tuple[str, float], ...]:
        return top_neighbours(self.neighbours.get(item), self.cfg, k)

    def recommend(self, person: str, k: int, *, exclude: Iterable[str] = ()) -> list[tuple[str, float]]:
        """The person's list, minus their purchases and ``exclude``."""
        w = self.persons.get(person)
        if w is None:
            return []
        return recommend(w.recent, self.similar, k, exclude={*exclude, *(i for i, _ in w.purchased)})
