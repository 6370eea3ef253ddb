"""Pure parts of the dashboard: events/s and DLQ rates from totals, funnels from minute counters."""

from __future__ import annotations

import pytest

from zhongtai.services.dashboard.funnel import (
    ALL,
    funnel,
    join_scope,
    label_minute,
    minute_label,
    rank,
    split_scope,
    window,
)
from zhongtai.services.dashboard.health import RateWindow, TotalsSample, rates


def _totals(valid: int, **dlq: int) -> dict[str, int]:
    t = {"valid": valid, **{f"dlq:{k}": v for k, v in dlq.items()}}
    t["dlq"] = sum(dlq.values())
    t["received"] = valid + t["dlq"]
    return t


def test_rates_are_total_deltas_over_seconds() -> None:
    h = rates(TotalsSample(10.0, _totals(100, bad_json=10)), TotalsSample(14.0, _totals(300, bad_json=30, late=10)))
    assert h.window_s == 4.0
    assert h.events_per_s == 230 / 4  # (300 + 40) - (100 + 10)
    assert h.valid_per_s == 50.0
    assert h.dlq_per_s == 7.5
    assert h.dlq_share == 30 / 230
    assert h.dlq_per_s_by_reason == {"bad_json": 5.0, "late": 2.5}


def test_rates_from_raw_totals_without_derived_fields() -> None:
    # the Redis hash itself (no received/dlq): both are derived the same way as RedisStore.stats()
    h = rates(TotalsSample(0.0, {"valid": 10, "dlq:x": 1}), TotalsSample(2.0, {"valid": 20, "dlq:x": 3}))
    assert (h.events_per_s, h.dlq_per_s, h.dlq_share) == (6.0, 1.0, 2 / 12)


def test_no_rate_without_elapsed_time_or_after_a_reset() -> None:
    a = TotalsSample(5.0, _totals(100))
    assert rates(a, TotalsSample(5.0, _totals(200))).events_per_s is None
    reset = rates(a, TotalsSample(6.0, _totals(3)))
    assert reset.events_per_s is None and reset.dlq_per_s_by_reason == {}
    idle = rates(a, TotalsSample(7.0, _totals(100)))
    assert idle.events_per_s == 0.0 and idle.dlq_share is None  # nothing received: no share


def test_rate_window_spans_the_window_not_the_last_tick() -> None:
    w = RateWindow(window_s=10.0)
    assert w.add(TotalsSample(0.0, _totals(0))).events_per_s is None
    for t in range(1, 10):
        w.add(TotalsSample(float(t), _totals(100 * t)))
    h = w.add(TotalsSample(10.0, _totals(1000)))
    assert (h.window_s, h.events_per_s) == (10.0, 100.0)
    # a burst in one tick is averaged over the window
    h = w.add(TotalsSample(11.0, _totals(2000)))
    assert h.window_s == 10.0 and h.events_per_s == (2000 - 100) / 10.0
    # a reset (the totals went down) starts over from the new sample
    assert w.add(TotalsSample(12.0, _totals(5))).events_per_s is None
    assert w.add(TotalsSample(14.0, _totals(25))).events_per_s == 10.0
    with pytest.raises(ValueError, match="rate window"):
        RateWindow(0)


def test_funnel_sums_series_and_ratios() -> None:
    minutes = window(29_000_000, 3)
    assert minutes == [28_999_998, 28_999_999, 29_000_000]
    hashes = [
        {"views": "10", "carts": "4", "purchases": "1", "events": "15", "persons": "7", "revenue": "9.99"},
        {},
        {"views": "30", "carts": "6", "purchases": "3", "events": "39", "persons": "9", "revenue": "20.01"},
    ]
    f = funnel("spring|email", minutes, hashes)
    j = f.to_json()
    assert {k: j[k] for k in ("scope", "campaign", "channel", "views", "carts", "purchases", "events", "revenue")} == {
        "scope": "spring|email", "campaign": "spring", "channel": "email",
        "views": 40, "carts": 10, "purchases": 4, "events": 54, "revenue": "30.00",
    }  # fmt: skip
    assert (j["view_to_cart"], j["cart_to_purchase"], j["conversion"]) == (0.25, 0.4, 0.1)
    assert j["series"] == {
        "views": [10, 0, 30], "carts": [4, 0, 6], "purchases": [1, 0, 3], "events": [15, 0, 39],
        "persons": [7, 0, 9], "revenue": ["9.99", "0.00", "20.01"],
    }  # fmt: skip
    assert j["minutes"] == [minute_label(m) for m in minutes]
    empty = funnel("x|y", minutes, [{}, {}, {}]).to_json(with_series=False)
    assert (empty["views"], empty["conversion"], "series" in empty) == (0, None, False)
    with pytest.raises(ValueError, match="3 minutes but 2"):
        funnel("x|y", minutes, [{}, {}])


def test_scopes_labels_and_ranking() -> None:
    assert split_scope("spring|email") == ("spring", "email")
    assert split_scope(ALL) == ("", "")
    assert join_scope("spring", "email") == "spring|email" and join_scope("", "") == ALL
    assert minute_label(29_356_020) == "202510250300" and label_minute("202510250300") == 29_356_020
    from connectors.redis_store import minute_label as job_label  # the keys the job writes

    assert all(minute_label(m) == job_label(m) for m in range(29_356_000, 29_356_000 + 1500, 7))
    m = [1]
    fs = [
        funnel("b|x", m, [{"purchases": "2", "views": "5"}]),
        funnel(ALL, m, [{"purchases": "9"}]),
        funnel("a|x", m, [{"purchases": "2", "views": "9"}]),
        funnel("c|x", m, [{"purchases": "7"}]),
    ]
    assert [f.scope for f in rank(fs)] == [ALL, "c|x", "a|x", "b|x"]
