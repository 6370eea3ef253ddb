"""Strategy-engine micro-benchmark: events/s of ``operators.rules.engine.evaluate`` with N active rules.

``run(n_rules=1000, n_events=100_000)`` builds a rule set of the shipped ``config/rules.yaml``
(patterns, the onboarding journey, the seed's rules) plus ``n_rules`` generated rules, each with a
condition over event, profile and tags, spread over 24 event types (so each event type triggers
about ``n_rules / 24`` rules), some in mutual-exclusion groups, some with caps and quiet hours.
It then feeds ``n_events`` seeded random events of ``persons`` people through ``evaluate`` the way
the Flink function does: per-person state in a dict, timers in a heap, fired when the watermark
(max event time - 5 s) passes them. Reported: events/s (events and timer calls, all included),
rule evaluations/s, actions, suppressions by reason, and the hot-reload cost (``apply_control``
upsert of one rule into the full set: median and max over 50 versions).

    python -m bench.rules_bench 1000 100000
"""

from __future__ import annotations

import heapq
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from config.plugins import BUILTIN_CHANNELS
from operators.rules.engine import PersonState, evaluate
from operators.rules.model import Event, TagChange
from operators.rules.registry import RuleSet, apply_control
from operators.rules.schema import load_file

SHIPPED = Path(__file__).resolve().parent.parent / "config" / "rules.yaml"
TYPES = ["page_view", "add_to_cart", "purchase", "login", "register", "search", "share", "review",
         "coupon_redeem", "exposure"] + [f"custom_{i}" for i in range(14)]
WEIGHTS = [50, 12, 4, 10, 1, 8, 2, 1, 1, 5] + [0.5] * 14
# Marketing rules are selective: each of these is true for roughly 1-5 % of the generated events.
CONDITIONS = [
    "event.props.price >= {n} and 'seg_{k}' in tags",
    "'seg_{k}' in tags and profile.gmv_90d >= {n}",
    "days_since(profile.last_purchase) >= {d} and event.props.category == 'cat_{k}'",
    "event.props.category == 'cat_{k}' and 'vip' in tags",
    "profile.views_7d > 30 and not ('seg_{k}' in tags) and event.props.price > {n}",
    "coalesce(event.props.qty, 1) * coalesce(event.props.price, 0) >= {n} and 'high_value' in tags",
]
CHANNELS = list(BUILTIN_CHANNELS)
WATERMARK_DELAY_MS = 5_000


def generated_rule(i: int, rnd: random.Random, version: int = 1) -> dict[str, Any]:
    cond = rnd.choice(CONDITIONS).format(n=rnd.randint(1000, 2900), k=rnd.randint(0, 19), d=rnd.randint(30, 80))
    rule: dict[str, Any] = {
        "id": f"gen_{i}", "version": version, "priority": rnd.randint(0, 100), "campaign": f"camp_{i % 40}",
        "trigger": {"event": [TYPES[i % len(TYPES)]]}, "condition": cond,
        "actions": [{"channel": rnd.choice(CHANNELS), "template": f"t{i}", "params": {"pct": i % 30}}],
    }
    if i % 3 == 0:
        rule["group"] = f"g{i % 17}"
    constraints: dict[str, Any] = {}
    if i % 4 == 0:
        constraints["frequency"] = [{"max": 1, "window": "1d"}]
    if i % 5 == 0:
        constraints["quiet_hours"] = {"start": "22:00", "end": "08:00", "mode": "hold" if i % 2 else "drop"}
    if constraints:
        rule["constraints"] = constraints
    return rule


def build_ruleset(n_rules: int, seed: int) -> RuleSet:
    rnd = random.Random(seed)
    rs = RuleSet.from_definitions(load_file(SHIPPED))
    for i in range(n_rules):
        rs, res = apply_control(rs, {"kind": "rule", "op": "upsert", "id": f"gen_{i}",
                                     "definition": generated_rule(i, rnd)})
        assert res.ok, res.reason
    return rs


def reload_latency(rs: RuleSet, seed: int, n: int = 50) -> dict[str, float]:
    """Wall ms of applying one rule upsert to the full rule set (what the broadcast side does)."""
    rnd = random.Random(seed + 1)
    times = []
    for v in range(2, n + 2):
        msg = {"kind": "rule", "op": "upsert", "id": "gen_0", "definition": generated_rule(0, rnd, version=v)}
        t = time.perf_counter()
        rs, res = apply_control(rs, msg)
        times.append((time.perf_counter() - t) * 1000)
        assert res.ok, res.reason
    return {"median_ms": round(statistics.median(times), 2), "max_ms": round(max(times), 2)}


def events(n: int, persons: int, seed: int, t0: int) -> list[Event | TagChange]:
    rnd = random.Random(seed)
    out: list[Event | TagChange] = []
    ts = t0
    for i in range(n):
        ts += rnd.randint(0, 400)
        skewed = ts - rnd.randint(0, 3_000)  # out of order within the watermark delay
        person = f"p{rnd.randrange(persons)}"
        if rnd.random() < 0.01:
            out.append(TagChange(person, rnd.choice(["churn_risk", "high_value", "vip"]), rnd.random() < 0.7, skewed))
            continue
        etype = rnd.choices(TYPES, WEIGHTS)[0]
        props: dict[str, Any] = {"item_id": f"sku{rnd.randrange(200)}", "price": rnd.randint(1, 3000),
                                 "category": f"cat_{rnd.randrange(20)}"}
        if etype == "consent":
            props = {"channel": rnd.choice(CHANNELS), "granted": True}
        out.append(Event(f"e{i}", etype, skewed, person, props))
    return out


def run(n_rules: int = 1000, n_events: int = 100_000, persons: int = 2_000, seed: int = 42,
        show: bool = True) -> dict[str, Any]:
    """Measure the engine; returns the numbers and (``show``) prints them, one a line."""
    t_build = time.perf_counter()
    rs = build_ruleset(n_rules, seed)
    build_s = time.perf_counter() - t_build
    t0 = 1_767_261_600_000
    inputs = events(n_events, persons, seed, t0)
    rnd = random.Random(seed + 2)
    profiles = {f"p{i}": {"gmv_90d": rnd.randint(0, 5000), "last_purchase": t0 - rnd.randint(0, 90) * 86_400_000,
                          "views_7d": rnd.randint(0, 40)} for i in range(persons)}
    tags = {f"p{i}": frozenset(rnd.sample([f"seg_{k}" for k in range(20)] + ["vip", "high_value"], 3))
            for i in range(persons)}
    states: dict[str, PersonState | None] = {}
    timers: list[tuple[int, str]] = []
    registered: set[tuple[int, str]] = set()
    evaluations = actions = timer_calls = 0
    reasons: Counter = Counter()
    max_ts = t0

    def keep(person: str, res: Any) -> None:
        nonlocal evaluations, actions
        states[person] = res.new_state
        evaluations += res.rule_evaluations
        actions += len(res.actions)
        reasons.update(s.reason for s in res.suppressed)
        for t in res.timers:
            if (t, person) not in registered:
                registered.add((t, person))
                heapq.heappush(timers, (t, person))

    start = time.perf_counter()
    for e in inputs:
        p = e.person_id
        keep(p, evaluate(rs, states.get(p), e, profiles[p], tags[p], e.ts_ms))
        max_ts = max(max_ts, e.ts_ms)
        watermark = max_ts - WATERMARK_DELAY_MS
        while timers and timers[0][0] <= watermark:
            t, tp = heapq.heappop(timers)
            registered.discard((t, tp))
            timer_calls += 1
            keep(tp, evaluate(rs, states.get(tp), None, profiles[tp], tags[tp], t))
    elapsed = time.perf_counter() - start
    out = {
        "rules": len(rs.rules), "generated_rules": n_rules, "events": n_events, "persons": persons,
        "seconds": round(elapsed, 3), "events_per_s": round(n_events / elapsed),
        "rule_evaluations": evaluations, "rule_evaluations_per_s": round(evaluations / elapsed),
        "evaluations_per_event": round(evaluations / n_events, 1),
        "timer_calls": timer_calls, "actions": actions, "suppressed": dict(reasons.most_common()),
        "ruleset_build_s": round(build_s, 2), "hot_reload": reload_latency(rs, seed),
    }
    if show:
        for k, v in out.items():
            print(f"{k:>24}: {v}")
    return out


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    n_rules = int(args[0]) if args else 1000
    n_events = int(args[1]) if len(args) > 1 else 100_000
    run(n_rules, n_events)


if __name__ == "__main__":
    main()
