"""Identity-graph micro-benchmark: observations/s of ``operators.identity.graph.step`` on generated data.

``run(n_events)`` generates a stream at the default identity-noise level (``IDENTITY_NOISE``), turns
its unique valid events into observations in read (arrival) order, and feeds them through
``InMemoryGraph`` — the state handling a Flink operator does, minus the codec and Flink itself.
It reports the throughput, the share of each path (fast / append / replay / noop), the slow-path
rate, the final components' sizes, and the pairwise quality of the result against the generator's
real persons (and against what their own events link).

    python -m bench.identity_bench 200000
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Any

from config.settings import IdentitySettings, PiiSettings
from operators.identity import IdentityRules, pairwise_quality
from operators.identity.in_memory import InMemoryGraph
from zhongtai.devtools.generator import GeneratorConfig, generate
from zhongtai.devtools.generator.identity import identity_truth, linkable_truth
from zhongtai.devtools.generator.model import IDENTITY_NOISE
from zhongtai.devtools.generator.oracle import observations


def run(n_events: int, seed: int = 42, persons: int | None = None) -> dict[str, Any]:
    """Measure ``step`` over ``n_events`` generated records; returns the numbers (and prints nothing)."""
    cfg = GeneratorConfig(
        seed=seed, events=n_events, persons=persons or max(2_000, n_events // 50), **IDENTITY_NOISE
    )
    pii = PiiSettings()
    obs = observations(generate(cfg), pii=pii)
    rules = IdentityRules.from_settings(IdentitySettings(), pii)
    graph = InMemoryGraph(rules)
    paths: Counter = Counter()
    slow_s = 0.0
    t0 = time.perf_counter()
    for o in obs:
        t = time.perf_counter()
        res = graph.observe(o)
        if res.path in ("append", "replay"):
            slow_s += time.perf_counter() - t
        paths[res.path] += 1
    elapsed = time.perf_counter() - t0
    slow = paths["append"] + paths["replay"]
    sizes = sorted((len(c.idents) for c in graph.components.values()), reverse=True)
    truth = identity_truth(cfg, pii)
    return {
        "events": n_events,
        "observations": len(obs),
        "seconds": round(elapsed, 3),
        "observations_per_s": round(len(obs) / elapsed),
        "paths": dict(paths),
        "fast_share": round(paths["fast"] / len(obs), 4),
        "slow_paths": slow,
        "slow_per_s": round(slow / slow_s) if slow_s else None,
        "components": len(sizes),
        "largest_components": sizes[:5],
        "quality_real_persons": pairwise_quality(graph.mapping, truth).summary(),
        "quality_linkable": pairwise_quality(graph.mapping, linkable_truth(truth, obs)).summary(),
    }


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    n = int(args[0]) if args else 100_000
    for k, v in run(n).items():
        print(f"{k:>22}: {v}")


if __name__ == "__main__":
    main()
