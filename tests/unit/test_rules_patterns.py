"""Event-time patterns: absence, count and sequence, with out-of-order arrival (pure)."""

from __future__ import annotations

import itertools

from operators.rules.model import Event, Pattern
from operators.rules.patterns import Match, PatternState, pattern_step
from operators.rules.schema import parse_definition

MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00Z


def pattern(**d) -> Pattern:
    p = parse_definition("pattern", {"id": "p", "version": 1, **d})
    assert isinstance(p, Pattern)
    return p


CART = pattern(type="absence", start={"event": "add_to_cart"}, cancel={"event": "purchase"}, within="30m")
VIEWS = pattern(type="count", event={"event": "page_view"}, by="props.item_id", count=3, within="1h")
NO_LOGIN = pattern(type="absence", start={"event": "register"}, cancel={"event": "login"}, within="7d")
IDLE = pattern(type="absence", start={"event": "purchase"}, cancel={"event": "purchase"}, within="30d")
FUNNEL = pattern(type="sequence", steps=[{"event": "page_view"}, {"event": "add_to_cart"}, {"event": "purchase"}],
                 within="1h")


def ev(eid: str, etype: str, minute: float, **props) -> Event:
    return Event(eid, etype, T0 + int(minute * MIN), "p1", props)


def drive(step, arrivals: list, delay_ms: int) -> tuple[list, object]:
    """Flink-like driver of a ``step(state, input | None, timer_ms)`` function: watermark = max ts
    seen - delay - 1 (Flink's bounded out-of-orderness); registered timers fire once the watermark
    reaches them; at the end the watermark goes to +inf. Returns (all outputs, final state)."""
    st, timers, out, max_ts = None, set(), [], None
    for e in arrivals:
        st, produced, new = step(st, e, None)
        assert produced == ()  # inputs are only buffered
        timers |= set(new)
        max_ts = e.ts_ms if max_ts is None else max(max_ts, e.ts_ms)
        while any(t <= max_ts - delay_ms - 1 for t in timers):  # incl. timers registered meanwhile
            t = min(timers)
            timers.discard(t)
            st, produced, new = step(st, None, t)
            out += produced
            timers |= set(new)
    while timers:
        t = min(timers)
        timers.discard(t)
        st, produced, new = step(st, None, t)
        out += produced
        timers |= set(new)
    return out, st


def simulate(p: Pattern, arrivals: list[Event], delay_ms: int) -> tuple[list[Match], PatternState | None]:
    return drive(lambda st, e, t: pattern_step(st, e, t or 0, p), arrivals, delay_ms)  # type: ignore[return-value]


def summary(ms: list[Match]) -> list[tuple[str, str, int]]:
    return [(m.key, m.event_id, (m.ts_ms - T0) // MIN) for m in ms]


def test_cart_abandoned_fires_at_deadline_only_when_watermark_passes():
    st, m, timers = pattern_step(None, ev("c1", "add_to_cart", 0), 0, CART)
    assert m == () and timers == (T0,)
    st, m, timers = pattern_step(st, None, T0, CART)
    assert m == () and timers == (T0 + 30 * MIN,)
    st, m, _ = pattern_step(st, None, T0 + 30 * MIN - 1, CART)
    assert m == ()  # one ms before the deadline: not yet final
    st, m, _ = pattern_step(st, None, T0 + 30 * MIN, CART)
    assert summary(list(m)) == [("", "c1", 30)] and m[0].trigger_key == "pattern:p::c1"
    assert st.open == () and st.buffer == ()


def test_cart_followed_by_purchase_is_no_match_and_cancel_is_inclusive():
    assert summary(simulate(CART, [ev("c1", "add_to_cart", 0), ev("b1", "purchase", 20)], 0)[0]) == []
    assert summary(simulate(CART, [ev("c1", "add_to_cart", 0), ev("b1", "purchase", 30)], 0)[0]) == []
    late_buy = [ev("c1", "add_to_cart", 0), ev("b1", "purchase", 30.001)]
    assert summary(simulate(CART, late_buy, 0)[0]) == [("", "c1", 30)]  # negative control
    same_ms = [ev("z", "add_to_cart", 5), ev("a", "purchase", 5)]  # purchase id sorts first: still cancels
    assert summary(simulate(CART, same_ms, 0)[0]) == []


def test_new_cart_restarts_the_30_minutes():
    arr = [ev("c1", "add_to_cart", 0), ev("c2", "add_to_cart", 20), ev("c3", "add_to_cart", 100)]
    assert summary(simulate(CART, arr, 0)[0]) == [("", "c2", 50), ("", "c3", 130)]


def test_absence_is_order_independent_within_the_watermark_delay():
    arrivals = [ev("c1", "add_to_cart", 0), ev("b1", "purchase", 10), ev("c2", "add_to_cart", 12),
                ev("v", "page_view", 13), ev("c3", "add_to_cart", 50)]
    expected = [("", "c2", 42), ("", "c3", 80)]
    for perm in itertools.permutations(arrivals):
        assert summary(simulate(CART, list(perm), delay_ms=60 * MIN)[0]) == expected, perm


def test_out_of_order_purchase_covered_by_the_watermark_delay():
    # The purchase (t=10) is still in flight when the cart at t=40 arrives.
    arrivals = [ev("c1", "add_to_cart", 0), ev("c2", "add_to_cart", 40), ev("b1", "purchase", 10)]
    out, st = simulate(CART, arrivals, delay_ms=60 * MIN)
    assert summary(out) == [("", "c2", 70)] and st.too_late == 0
    # Negative control: no delay, the watermark passed c1's deadline before the purchase came.
    out, st = simulate(CART, arrivals, delay_ms=0)
    assert summary(out) == [("", "c1", 30), ("", "c2", 70)] and st.too_late == 1
    # Behind the watermark but not behind processed time: still exact (no timer fired past t=0).
    assert summary(simulate(CART, [ev("b1", "purchase", 10), ev("c1", "add_to_cart", 0)], 0)[0]) == []


def test_pattern_lateness_accepts_events_behind_the_watermark():
    lax = pattern(type="absence", start={"event": "add_to_cart"}, cancel={"event": "purchase"}, within="30m",
                  lateness="1h")
    arrivals = [ev("c1", "add_to_cart", 0), ev("c2", "add_to_cart", 40), ev("b1", "purchase", 10)]
    out, st = simulate(lax, arrivals, 0)
    assert summary(out) == [("", "c2", 70)] and st.too_late == 0
    st, _, timers = pattern_step(None, arrivals[0], 0, lax)
    assert timers == (T0 + HOUR,)  # processed an hour behind event time
    st, m, timers = pattern_step(st, None, T0 + HOUR, lax)
    assert m == () and timers == (T0 + 90 * MIN,)


def test_register_and_no_login_within_7_days():
    assert summary(simulate(NO_LOGIN, [ev("r", "register", 0), ev("l", "login", 6 * 1440)], 0)[0]) == []
    out, _ = simulate(NO_LOGIN, [ev("r", "register", 0), ev("l", "login", 7 * 1440 + 1)], 0)
    assert summary(out) == [("", "r", 7 * 1440)]
    early_login = [ev("l", "login", -5), ev("r", "register", 0)]  # a login before the register does not count
    assert summary(simulate(NO_LOGIN, early_login, 10 * MIN)[0]) == [("", "r", 7 * 1440)]


def test_purchase_idle_30_days_same_type_start_and_cancel():
    arr = [ev("b1", "purchase", 0), ev("b2", "purchase", 10 * 1440)]
    assert summary(simulate(IDLE, arr, 0)[0]) == [("", "b2", 40 * 1440)]
    assert summary(simulate(IDLE, arr[:1], 0)[0]) == [("", "b1", 30 * 1440)]


def test_three_views_of_the_same_item_within_an_hour():
    arr = [ev("v1", "page_view", 0, item_id="A"), ev("v2", "page_view", 30, item_id="A"),
           ev("w1", "page_view", 40, item_id="B"), ev("v3", "page_view", 59, item_id="A")]
    assert summary(simulate(VIEWS, arr, 0)[0]) == [("A", "v3", 59)]
    spread = [ev("v1", "page_view", 0, item_id="A"), ev("v2", "page_view", 30, item_id="A"),
              ev("v3", "page_view", 61, item_id="A")]
    assert summary(simulate(VIEWS, spread, 0)[0]) == []  # 61 min from first to third
    mixed = [ev("v1", "page_view", 0, item_id="A"), ev("w1", "page_view", 10, item_id="B"),
             ev("v2", "page_view", 20, item_id="A")]
    assert summary(simulate(VIEWS, mixed, 0)[0]) == []  # negative control: other items do not count
    assert summary(simulate(VIEWS, [ev("n", "page_view", 1)] * 3, 0)[0]) == []  # no item_id: ignored


def test_count_restarts_after_a_match_and_edges_are_inclusive():
    arr = [ev(f"v{i}", "page_view", m, item_id="A") for i, m in enumerate([0, 10, 60, 61, 62, 63, 64])]
    assert summary(simulate(VIEWS, arr, 0)[0]) == [("A", "v2", 60), ("A", "v5", 63)]


def test_count_is_order_independent():
    arr = [ev("v1", "page_view", 0, item_id="A"), ev("v2", "page_view", 20, item_id="A"),
           ev("v3", "page_view", 45, item_id="A"), ev("v4", "page_view", 70, item_id="A"),
           ev("v5", "page_view", 75, item_id="A"), ev("w", "page_view", 21, item_id="B")]
    expected = [("A", "v3", 45)]
    for perm in itertools.permutations(arr):
        assert summary(simulate(VIEWS, list(perm), 2 * HOUR)[0]) == expected


def test_sequence_in_order_within_window_with_noise():
    arr = [ev("v1", "page_view", 0), ev("x", "login", 5), ev("c1", "add_to_cart", 10), ev("b1", "purchase", 50)]
    out = simulate(FUNNEL, arr, 0)[0]
    assert summary(out) == [("", "b1", 50)] and out[0].start_ts_ms == T0
    too_slow = [ev("v1", "page_view", 0), ev("c1", "add_to_cart", 10), ev("b1", "purchase", 61)]
    assert summary(simulate(FUNNEL, too_slow, 0)[0]) == []
    later_start = too_slow[:2] + [ev("v2", "page_view", 5), ev("c2", "add_to_cart", 30), ev("b1", "purchase", 61)]
    assert summary(simulate(FUNNEL, later_start, HOUR)[0]) == [("", "b1", 61)]
    wrong_order = [ev("c1", "add_to_cart", 0), ev("v1", "page_view", 10), ev("b1", "purchase", 20)]
    assert summary(simulate(FUNNEL, wrong_order, 0)[0]) == []
    for perm in itertools.permutations(arr):
        assert summary(simulate(FUNNEL, list(perm), HOUR)[0]) == [("", "b1", 50)]


def test_state_is_bounded_version_change_resets_and_paused_ignores():
    out, st = simulate(VIEWS, [ev(f"v{i}", "page_view", i * 50, item_id="A") for i in range(100)], 0)
    assert out == [] and st.buffer == () and len(st.counts) == 1 and len(st.counts[0][1]) <= 2
    many_items = [ev(f"v{i}", "page_view", i, item_id=f"sku{i}") for i in range(200)]
    out, st = simulate(VIEWS, many_items + [ev("late", "page_view", 500, item_id="x")], 0)
    assert out == [] and st.counts == (("x", (T0 + 500 * MIN,)),)  # keys not seen for an hour are gone
    out, st = simulate(FUNNEL, [ev(f"v{i}", "page_view", i) for i in range(5)] + [ev("c", "add_to_cart", 300)], 0)
    assert st.runs == ()
    st, _, _ = pattern_step(None, ev("c1", "add_to_cart", 0), 0, CART)
    from dataclasses import replace

    v2 = replace(CART, version=2)
    assert pattern_step(st, None, T0 + DAY, v2) == (None, (), ())
    paused = replace(CART, paused=True)
    assert pattern_step(None, ev("c1", "add_to_cart", 0), 0, paused) == (None, (), ())
    assert pattern_step(st, ev("c1", "add_to_cart", 0), 0, CART) == (st, (), ())  # same event twice
