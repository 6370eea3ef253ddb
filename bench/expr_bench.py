"""Expression evaluation speed (operators/expr.py): evaluations per second of typical expressions.

``python -m bench.expr_bench [--seconds S]`` prints one line per expression and a JSON summary:
``evaluate`` of a tag-like and a rule-like expression on a realistic environment, ``next_change_ms``
of a time-based tag, and compile time. Single thread, no I/O; a baseline of a hand-written Python
function doing the same work shows the overhead of the closure compiler.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from operators.expr import compile_expr

DAY = 86_400_000
NOW = 1_764_000_000_000

PROFILE: dict[str, Any] = {
    "first_seen": NOW - 200 * DAY, "last_seen": NOW - 3_600_000, "events": 412, "views": 300, "carts": 25,
    "purchases": 9, "gmv": Decimal("6120.50"), "views_1h": 2, "views_24h": 14, "views_7d": 40, "carts_7d": 3,
    "purchases_30d": 0, "gmv_30d": Decimal("0.00"), "purchases_90d": 4, "gmv_90d": Decimal("1820.00"),
    "last_purchase": NOW - 41 * DAY,
}
ENV: dict[str, Any] = {
    **PROFILE,
    "profile": PROFILE,
    "event": {"type": "page_view", "props": {"item_id": "sku-1", "category": "shoes", "price": Decimal("59.90")}},
    "tags": frozenset({"high_value", "vip_lapsed"}),
}

CASES = {
    "tag: high_value": "gmv_90d >= 1000 or purchases_90d >= 5",
    "tag: vip_lapsed": "gmv >= 5000 and last_purchase is not null and days_since(last_purchase) >= 30",
    "rule condition": "event.type == 'page_view' and 'high_value' in tags and event.props.category in ['shoes', 'bags'] "
    "and event.props.price * 2 > 100 and days_since(profile.last_purchase) > 30",
    "arithmetic": "(gmv_90d / coalesce(purchases_90d, 1)) - gmv_30d > 100",
}


#: Conditions of the kind issue 4 expects (varied thresholds so nothing folds away).
RULE_TEMPLATES = [
    "event.type == 'page_view' and views_7d >= {i} % 50",
    "'high_value' in tags and days_since(last_purchase) > {i} % 60",
    "event.props.price * 2 > {i} and event.props.category in ['shoes', 'bags']",
    "gmv_90d >= {i} or purchases_90d >= {i} % 7",
    "event.type in ['purchase', 'add_to_cart'] and carts_7d > {i} % 3",
]


def _events_rate(fn: Callable[[], Any], seconds: float) -> float:
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - start)


def _rate(fn: Callable[[], Any], seconds: float) -> float:
    n = 0
    batch = 2_000
    start = time.perf_counter()
    end = start + seconds
    while True:
        for _ in range(batch):
            fn()
        n += batch
        now = time.perf_counter()
        if now >= end:
            return n / (now - start)


def _baseline(env: dict[str, Any], now: int) -> bool:
    p = env["profile"]
    e = env["event"]
    lp = p.get("last_purchase")
    return (
        e.get("type") == "page_view" and "high_value" in env["tags"] and e["props"].get("category") in ("shoes", "bags")
        and e["props"]["price"] * 2 > 100 and lp is not None and (now - lp) // DAY > 30
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="measuring time per case")
    args = ap.parse_args(argv)
    results: dict[str, float] = {}
    for name, text in CASES.items():
        e = compile_expr(text)
        assert e.evaluate(ENV, NOW) is not None
        results[f"evaluate/s {name}"] = _rate(lambda e=e: e.evaluate(ENV, NOW), args.seconds)
    assert _baseline(ENV, NOW) is compile_expr(CASES["rule condition"]).evaluate(ENV, NOW)
    results["evaluate/s hand-written Python (rule condition)"] = _rate(lambda: _baseline(ENV, NOW), args.seconds)
    rules = [compile_expr(RULE_TEMPLATES[i % len(RULE_TEMPLATES)].format(i=i)) for i in range(1_000)]

    def all_rules() -> int:
        return sum(1 for r in rules if r.evaluate(ENV, NOW) is True)

    results["events/s with 1000 conditions evaluated each"] = _events_rate(all_rules, args.seconds)
    timed = compile_expr("days_since(last_purchase) >= 60 and gmv >= 5000")
    results["next_change_ms/s time tag"] = _rate(lambda: timed.next_change_ms(ENV, NOW), args.seconds)
    results["compile/s rule condition"] = _rate(lambda: compile_expr(CASES["rule condition"]), args.seconds / 4)
    for k, v in results.items():
        print(f"{k:55s} {v:>14,.0f}")
    print(json.dumps({k: round(v) for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
