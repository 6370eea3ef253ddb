"""Quality and update throughput of the streaming recommender (operators/recs), against baselines.

``python -m bench.recs_quality [--persons N] [--items N] [--groups N] [--seed S] [--out FILE]``

1. **Stream with planted preferences** (:func:`generate`, seeded): items fall into latent groups; each
   person prefers one group (a third of them two); a person's sessions pick an item of a preferred
   group with probability ``affinity`` (within a group by a Zipf popularity), else any item by the global
   Zipf popularity. A view can lead to a cart, a cart to a purchase.
2. **Time split**: train = events before the 80th percentile of time, test = after. Evaluated: persons with
   train events and at least one test item they had not met in train (the relevant set).
3. **Models**, all asked for 10 items minus the person's train items:
   ``popular`` (most persons in train), ``streaming`` (``InProcessRecommender``: every train event through
   the job's three steps in time order, then the person's window → similar items), ``implicit_itemknn``
   (``implicit`` 0.7 ``CosineRecommender``, K=100) and ``implicit_als`` (``AlternatingLeastSquares``,
   64 factors, 15 iterations, confidence 1 + 10·weight), both on the user × item matrix of summed event
   weights (the streaming model's weights), single-threaded.
4. **Metrics**: hit-rate@10 (share of persons with a relevant item in their 10), NDCG@10 (binary
   relevance), and the streaming model's update throughput (pair updates/s and events/s of the pure steps).

Results: JSON to ``--out`` (default bench/results/recs-quality.json) and a table on stdout;
docs/recommendations.md explains them.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from operators.recs.cooccurrence import DEFAULT_WEIGHTS, ItemEvent, RecsConfig
from operators.recs.recommend import InProcessRecommender

DAY = 86_400_000
K = 10


@dataclass(frozen=True)
class StreamSpec:
    persons: int = 3000
    items: int = 1000
    groups: int = 25
    days: int = 60
    sessions_mean: float = 5.0
    session_len: tuple[int, int] = (3, 8)
    affinity: float = 0.8
    zipf: float = 0.8
    p_cart: float = 0.2
    p_purchase: float = 0.3
    seed: int = 7


def generate(spec: StreamSpec) -> list[ItemEvent]:
    """The planted-preference stream, sorted by (ts, person)."""
    rnd = random.Random(spec.seed)
    items = [f"i{j:04d}" for j in range(spec.items)]
    rnd.shuffle(items)  # group membership does not follow the id order
    groups = [items[g::spec.groups] for g in range(spec.groups)]
    group_w = [[(r + 1) ** -spec.zipf for r in range(len(g))] for g in groups]
    glob_w = [(r + 1) ** -spec.zipf for r in range(len(items))]
    out: list[ItemEvent] = []
    for p in range(spec.persons):
        person = f"p{p:05d}"
        prefs = rnd.sample(range(spec.groups), 2 if rnd.random() < 1 / 3 else 1)
        n_sessions = max(1, _poisson(rnd, spec.sessions_mean))
        for _ in range(n_sessions):
            ts = rnd.randrange(spec.days * DAY)
            for _ in range(rnd.randint(*spec.session_len)):
                if rnd.random() < spec.affinity:
                    g = rnd.choice(prefs)
                    item = rnd.choices(groups[g], group_w[g])[0]
                else:
                    item = rnd.choices(items, glob_w)[0]
                ts += rnd.randrange(10_000, 300_000)
                out.append(ItemEvent(person, item, "page_view", ts))
                if rnd.random() < spec.p_cart:
                    ts += rnd.randrange(5_000, 60_000)
                    out.append(ItemEvent(person, item, "add_to_cart", ts))
                    if rnd.random() < spec.p_purchase:
                        ts += rnd.randrange(5_000, 60_000)
                        out.append(ItemEvent(person, item, "purchase", ts))
    out.sort(key=lambda e: (e.ts_ms, e.person, e.item, e.event_type))
    return out


def _poisson(rnd: random.Random, lam: float) -> int:
    n, p, limit = 0, 1.0, math.exp(-lam)
    while True:
        p *= rnd.random()
        if p <= limit:
            return n
        n += 1


@dataclass(frozen=True)
class Split:
    train: list[ItemEvent]
    seen: dict[str, set[str]]  # person → train items
    relevant: dict[str, set[str]]  # evaluated person → test items not seen in train


def time_split(events: Sequence[ItemEvent], share: float = 0.8) -> Split:
    cut = events[int(len(events) * share)].ts_ms
    train = [e for e in events if e.ts_ms < cut]
    seen: dict[str, set[str]] = defaultdict(set)
    for e in train:
        seen[e.person].add(e.item)
    relevant: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if e.ts_ms >= cut and e.person in seen and e.item not in seen[e.person]:
            relevant[e.person].add(e.item)
    return Split(train, dict(seen), dict(relevant))


def evaluate(split: Split, rec: Callable[[str, set[str]], list[str]]) -> dict[str, float]:
    """hit-rate@10 and NDCG@10 over the evaluated persons (``rec(person, exclude)`` → item ids)."""
    hits, ndcg = 0, 0.0
    for person in sorted(split.relevant):
        rel = split.relevant[person]
        got = rec(person, split.seen[person])[:K]
        assert not set(got) & split.seen[person], f"{person}: a model recommended an item seen in train"
        dcg = sum(1.0 / math.log2(i + 2) for i, item in enumerate(got) if item in rel)
        idcg = sum(1.0 / math.log2(i + 2) for i in range(min(len(rel), K)))
        hits += dcg > 0
        ndcg += dcg / idcg
    n = len(split.relevant)
    return {"hit_rate@10": round(hits / n, 4), "ndcg@10": round(ndcg / n, 4), "persons": n}


def popular_model(split: Split) -> Callable[[str, set[str]], list[str]]:
    persons = Counter(item for _, item in {(e.person, e.item) for e in split.train})
    ranked = [i for i, _ in sorted(persons.items(), key=lambda kv: (-kv[1], kv[0]))]

    def rec(person: str, exclude: set[str]) -> list[str]:
        return [i for i in ranked[: K + len(exclude)] if i not in exclude][:K]

    return rec


def streaming_model(split: Split, cfg: RecsConfig) -> tuple[Callable[[str, set[str]], list[str]], dict[str, Any]]:
    r = InProcessRecommender(cfg)
    t0 = time.perf_counter()
    for e in split.train:
        r.update(e)
    secs = time.perf_counter() - t0
    throughput = {"events": len(split.train), "pair_updates": r.pairs, "seconds": round(secs, 2),
                  "events_per_s": round(len(split.train) / secs), "pairs_per_s": round(r.pairs / secs),
                  "items_with_neighbours": len(r.neighbours),
                  "max_neighbours_kept": max((len(n.pairs) for n in r.neighbours.values()), default=0)}

    def rec(person: str, exclude: set[str]) -> list[str]:
        return [i for i, _ in r.recommend(person, K, exclude=exclude)]

    return rec, throughput


def implicit_models(split: Split, weights: dict[str, float]) -> dict[str, Callable[[str, set[str]], list[str]]]:
    import numpy as np
    from implicit.als import AlternatingLeastSquares
    from implicit.nearest_neighbours import CosineRecommender
    from scipy.sparse import csr_matrix

    persons = sorted(split.seen)
    items = sorted({e.item for e in split.train})
    pi = {p: n for n, p in enumerate(persons)}
    ii = {i: n for n, i in enumerate(items)}
    cells: dict[tuple[int, int], float] = defaultdict(float)
    for e in split.train:
        cells[pi[e.person], ii[e.item]] += weights.get(e.event_type, 0.0)
    rows, cols = zip(*cells, strict=True)
    ui = csr_matrix((np.array(list(cells.values()), dtype=np.float32), (rows, cols)), shape=(len(persons), len(items)))
    knn = CosineRecommender(K=100, num_threads=1)
    knn.fit(ui, show_progress=False)
    conf = ui.copy()
    conf.data = 1.0 + 10.0 * conf.data
    als = AlternatingLeastSquares(factors=64, regularization=0.05, iterations=15, random_state=0, num_threads=1,
                                  calculate_training_loss=False)
    als.fit(conf, show_progress=False)

    def wrap(model: Any, matrix: Any) -> Callable[[str, set[str]], list[str]]:
        def rec(person: str, exclude: set[str]) -> list[str]:
            u = pi[person]
            ids, _ = model.recommend(u, matrix[u], N=K, filter_already_liked_items=True)
            return [items[j] for j in ids if j >= 0]

        return rec

    return {"implicit_itemknn": wrap(knn, ui), "implicit_als": wrap(als, conf)}


#: Other settings of the streaming model, measured on the same split (docs/recommendations.md)
SENSITIVITY: tuple[tuple[str, dict[str, Any]], ...] = (
    ("session window (20 events, 3 days)", {"window_items": 20, "window_ms": 3 * DAY}),
    ("whole history, no decay", {"window_items": 200, "window_ms": 70 * DAY, "half_life_ms": 0, "top_k": 100}),
    ("top_k 20", {"top_k": 20}),
    ("damping 0.7", {"damping": 0.7}),
)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--persons", type=int, default=StreamSpec.persons)
    ap.add_argument("--items", type=int, default=StreamSpec.items)
    ap.add_argument("--groups", type=int, default=StreamSpec.groups)
    ap.add_argument("--seed", type=int, default=StreamSpec.seed)
    ap.add_argument("--window-items", type=int, default=RecsConfig.window_items)
    ap.add_argument("--window-days", type=float, default=RecsConfig.window_ms / DAY)
    ap.add_argument("--half-life-days", type=float, default=RecsConfig.half_life_ms / DAY)
    ap.add_argument("--damping", type=float, default=RecsConfig.damping)
    ap.add_argument("--top-k", type=int, default=RecsConfig.top_k)
    ap.add_argument("--out", default="bench/results/recs-quality.json")
    args = ap.parse_args(argv)
    spec = StreamSpec(persons=args.persons, items=args.items, groups=args.groups, seed=args.seed)
    cfg = RecsConfig(window_items=args.window_items, window_ms=int(args.window_days * DAY),
                     half_life_ms=int(args.half_life_days * DAY), damping=args.damping, top_k=args.top_k)
    events = generate(spec)
    split = time_split(events)
    stream_rec, throughput = streaming_model(split, cfg)
    models: dict[str, Callable[[str, set[str]], list[str]]] = {"popular": popular_model(split),
                                                               "streaming": stream_rec}
    models.update(implicit_models(split, dict(cfg.weights)))
    results = {name: evaluate(split, rec) for name, rec in models.items()}
    sensitivity = []
    for label, variant in SENSITIVITY:
        vcfg = replace(cfg, **variant)
        vrec, vput = streaming_model(split, vcfg)
        sensitivity.append({"variant": label, **variant, **evaluate(split, vrec), "pairs_per_s": vput["pairs_per_s"],
                            "pair_updates": vput["pair_updates"]})
    pop, best_lib = results["popular"], max(results["implicit_itemknn"]["ndcg@10"], results["implicit_als"]["ndcg@10"])
    s = results["streaming"]
    summary = {
        "streaming_vs_popular_hit_rate": round(s["hit_rate@10"] / pop["hit_rate@10"], 2),
        "streaming_vs_popular_ndcg": round(s["ndcg@10"] / pop["ndcg@10"], 2),
        "streaming_vs_best_library_ndcg": round(s["ndcg@10"] / best_lib, 3),
        "streaming_vs_best_library_hit_rate": round(
            s["hit_rate@10"] / max(results["implicit_itemknn"]["hit_rate@10"], results["implicit_als"]["hit_rate@10"]), 3),
    }
    knobs = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    out = {"spec": asdict(spec), "recs_config": {**knobs, "weights": dict(cfg.weights),
                                                 "purchase_types": sorted(cfg.purchase_types)},
           "events": len(events), "train_events": len(split.train), "results": results, "summary": summary,
           "throughput": throughput, "sensitivity": sensitivity, "python": platform.python_version(), "machine": platform.machine()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"{'model':18} {'hit-rate@10':>12} {'NDCG@10':>9}   ({len(split.relevant)} persons)")
    for name, r in results.items():
        print(f"{name:18} {r['hit_rate@10']:>12.4f} {r['ndcg@10']:>9.4f}")
    for v in sensitivity:
        print(f"  streaming, {v['variant']:34} {v['hit_rate@10']:>7.4f} {v['ndcg@10']:>9.4f}  {v['pair_updates']:,} pairs")
    print(json.dumps(summary))
    print(f"streaming updates: {throughput['pairs_per_s']:,} pairs/s, {throughput['events_per_s']:,} events/s")


if __name__ == "__main__":
    main()


__all__ = ["DEFAULT_WEIGHTS", "generate", "time_split", "evaluate", "main"]
