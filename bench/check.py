"""Exactness: compare a contender's counters (and the job's totals and profiles) with the oracle."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

INT_FIELDS = ("views", "carts", "purchases", "events", "persons")


def _norm_counter(h: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {f: int(h.get(f) or 0) for f in INT_FIELDS}
    if "revenue_cents" in h:
        out["revenue"] = Decimal(int(h["revenue_cents"])) / 100
    else:
        out["revenue"] = Decimal(str(h.get("revenue") or 0))
    return out


def diff_counters(actual: dict[str, dict[str, Any]], expected: dict[str, dict[str, Any]],
                  limit: int = 10) -> tuple[int, list[str]]:
    """(number of differing keys, the first ``limit`` differences). Missing fields count as 0."""
    n, shown = 0, []
    for key in sorted(set(actual) | set(expected)):
        a = _norm_counter(actual.get(key, {}))
        e = _norm_counter(expected.get(key, {}))
        if a != e:
            n += 1
            if len(shown) < limit:
                bad = {f: (a[f], e[f]) for f in a if a[f] != e[f]}
                shown.append(f"{key}: (actual, expected) {bad}")
    return n, shown


def diff_stats(actual: dict[str, int], expected: dict[str, int]) -> list[str]:
    keys = set(actual) | set(expected)
    return [f"stats {k}: {actual.get(k, 0)} != {expected.get(k, 0)}" for k in sorted(keys)
            if int(actual.get(k, 0)) != int(expected.get(k, 0))]


def diff_profiles(store: Any, expected: dict[str, dict[str, Any]], limit: int = 10) -> tuple[int, list[str]]:
    """Compare the summary fields of every profile (``store`` is a ``RedisStore``)."""
    n, shown = 0, []
    persons = set(store.persons())
    for person in sorted(persons | set(expected)):
        a = store.profile(person) if person in persons else {}
        e = {k: v for k, v in expected.get(person, {}).items() if not k.startswith("b:")}
        if {k: str(v) for k, v in a.items()} != {k: str(v) for k, v in e.items()}:
            n += 1
            if len(shown) < limit:
                shown.append(f"profile {person}: {a} != {e}")
    return n, shown
