"""The pricing step (operators/pricing): worked prices, the guard rails under adversarial streams (seeded
property tests: hypothesis is not among the project's dependencies), deterministic replay, the list-price
policy (no personalised list prices), offers, the control messages and the state codec."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest

from operators.pricing.control import Versions, apply_control
from operators.pricing.offers import Offer, OfferRequest
from operators.pricing.policy import (
    PricingPolicyError,
    policies_from_mapping,
    policy_from_mapping,
)
from operators.pricing.step import (
    HOUR_MS,
    ItemInput,
    ItemState,
    PriceChange,
    PricingContext,
    Tick,
    needs_tick,
    next_tick,
    step,
)
from state.pricing import decode_item, encode_item

TICK = 900_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00Z, a whole hour
RAILS = {"min_margin": 0.05, "max_markup": 0.20, "max_discount": 0.30, "max_step_per_hour": 0.10,
         "max_offer_discount": 0.20}


def _ctx(**policy) -> PricingContext:
    pols = policies_from_mapping([{"name": "p", "rails": {"*": RAILS}, **policy}], "p")
    return PricingContext(((0, pols),), tick_ms=TICK)


def _run(inputs, ctx, ticks=None, *, at_end: bool = False):
    """The job's timers around the step: each input asks for its next tick, a tick for the next one while
    ``needs_tick``; ticks fire when the watermark (here: the next input's time) passes them, or all at the end
    (``at_end``: every input absorbed first, as when a bounded input ends before any watermark).
    ``ticks``: extra ticks. Returns the final state and the outputs in order."""
    st: ItemState | None = None
    outs: list = []
    timers = set(ticks or ())
    watermark = -1

    def fire(upto: int) -> None:
        nonlocal st, outs, watermark
        watermark = max(watermark, upto)
        while timers and min(timers) <= upto:
            t = min(timers)
            timers.discard(t)
            if st is None:
                continue
            st, o = step(st, Tick(t), t, ctx, "A")
            outs += o
            if st is not None and needs_tick(st, t, ctx):
                timers.add(next_tick(t, TICK))

    for m in inputs:
        if not at_end:
            fire(m.ts_ms - 1)
        st, o = step(st, m, m.ts_ms, ctx, "A")
        outs += o
        timers.add(next_tick(max(m.ts_ms, watermark), TICK))
    fire(2**62)
    return st, outs


def _inv(ts, eid, qty=50, cost="60.00", base="100.00", store="", map_price=None):
    c = None if cost is None else int(Fraction(cost) * 100)
    b = None if base is None else int(Fraction(base) * 100)
    return ItemInput(ts, eid, "inventory", store=store, qty=qty, cost_cents=c, base_cents=b,
                     map_cents=None if map_price is None else int(map_price * 100))


def _prices(outs) -> list[tuple[int, int, list[str]]]:
    return [(o.ts_ms, o.price_cents, o.record["reasons"]) for o in outs if isinstance(o, PriceChange)]


# ---- worked prices ----------------------------------------------------------------------------------------


def test_worked_prices_base_surge_competitor_and_step_limit() -> None:
    ctx = _ctx()
    views = [ItemInput(T0 + TICK + i, f"v{i}", "page_view") for i in range(12)]
    comp = ItemInput(T0 + 2 * TICK + 5, "c1", "competitor_price", competitor="jd", competitor_cents=9000)
    _, outs = _run([_inv(T0 + 1, "i1"), *views, comp], ctx)
    assert _prices(outs) == [
        (T0 + TICK, 10000, ["base"]),  # the base price, once the inventory event is settled
        (T0 + 2 * TICK, 10500, ["demand_surge"]),  # 12 views ≥ min 10, trend 12/1 ≥ 2: +5 %
        # jd at 90.00 caps the target; the hour opened at 100.00 (nothing before it), so 90.00 is within 10 %
        (T0 + 3 * TICK, 9000, ["demand_surge", "competitor_match"]),
    ]


def test_floor_beats_the_competitor_and_a_stale_or_absurd_competitor_is_ignored() -> None:
    ctx = _ctx()
    cheap = ItemInput(T0 + 10, "c1", "competitor_price", competitor="pdd", competitor_cents=6000)  # below floor
    _, outs = _run([_inv(T0 + 1, "i1", cost="90.00"), cheap], ctx)
    (ts, price, reasons), = _prices(outs)
    assert (price, reasons) == (9450, ["competitor_match", "floor"])  # floor 90 × 1.05 = 94.50
    absurd = ItemInput(T0 + 10, "c1", "competitor_price", competitor="x", competitor_cents=1)
    stale = ItemInput(T0 + 11, "c2", "competitor_price", competitor="y", competitor_cents=9500)
    _, outs = _run([_inv(T0 + 1, "i1"), absurd, stale], ctx, ticks=[T0 + 25 * HOUR_MS])
    first = outs[0].record
    assert first["inputs"]["competitors"] == {"used": {"y": 9500}, "ignored": {"x": "absurd"}}
    assert first["price_cents"] == 9500
    # 25 hours later y's price is stale: back towards the base (within the step limit of the new hour)
    last = [o for o in outs if isinstance(o, PriceChange)][-1].record
    assert last["inputs"]["competitors"]["ignored"] == {"x": "stale", "y": "stale"}  # staleness first
    assert last["price_cents"] == 10000


def test_zero_stock_holds_the_price_and_low_stock_raises_it() -> None:
    ctx = _ctx()
    _, outs = _run([_inv(T0 + 1, "i1", qty=3)], ctx)
    assert _prices(outs) == [(T0 + TICK, 10500, ["low_stock"])]
    _, outs = _run([_inv(T0 + 1, "i1", qty=0)], ctx)
    assert _prices(outs) == [(T0 + TICK, 10000, ["out_of_stock_hold"])]


def test_no_price_without_cost_and_base() -> None:
    _, outs = _run([ItemInput(T0 + 1, "v", "page_view"), _inv(T0 + 2, "i1", cost=None)], _ctx())
    assert outs == []


# ---- guard rails: property tests over adversarial streams -----------------------------------------------


def _adversarial(rng: random.Random, n: int, *, fixed_catalog: bool) -> list:
    out = []
    ts = T0
    for i in range(n):
        ts += rng.choice([1, 1, 1000, TICK // 3, TICK, 3 * HOUR_MS])
        r = rng.random()
        if r < 0.5:  # demand spikes and droughts
            for j in range(rng.choice([0, 1, 5, 200])):
                out.append(ItemInput(ts + j, f"d{i}-{j}", rng.choice(["page_view", "add_to_cart", "purchase"])))
        elif r < 0.75:  # competitors: absurd, zero, huge, stale, plausible
            cents = rng.choice([0, 1, 5000, 9000, 9900, 10_000_000, rng.randint(1, 30000)])
            when = ts - rng.choice([0, 0, 48 * HOUR_MS])
            out.append(ItemInput(max(T0, when), f"c{i}", "competitor_price", competitor=rng.choice("abc"),
                                 competitor_cents=cents))
        else:  # stock: zero, low, huge, per store; cost and base move unless fixed
            cost = "60.00" if fixed_catalog else str(rng.choice([1, 50, 60, 99, 150]))
            base = "100.00" if fixed_catalog else str(rng.choice([80, 100, 120]))
            out.append(_inv(ts, f"i{i}", qty=rng.choice([0, 0, 1, 5, 6, 10**6]), cost=cost, base=base,
                            store=rng.choice(["", "sh-001", "bj-002"]),
                            map_price=None if fixed_catalog else rng.choice([None, 75, 130])))
    return out


def _check_bounds(outs, rails) -> int:
    n = 0
    for o in outs:
        if not isinstance(o, PriceChange):
            continue
        n += 1
        inp, p = o.record["inputs"], Fraction(o.price_cents)
        cost, base, mp = inp["cost_cents"], inp["base_cents"], inp["map_cents"]
        low = max(Fraction(cost) * (1 + Fraction(str(rails["min_margin"]))),
                  Fraction(base) * (1 - Fraction(str(rails["max_discount"]))),
                  Fraction(mp) if mp is not None else Fraction(0))
        high = Fraction(base) * (1 + Fraction(str(rails["max_markup"])))
        assert p >= low, o.record
        if low <= high:
            assert p <= high, o.record
        assert o.price_cents > 0
    return n


def _check_step(outs, step_pct: float) -> int:
    """Within each clock hour every price is within the step of the price carried into the hour (or the
    hour's first price when none was): computed here from the emitted prices alone."""
    last: int | None = None
    anchors: dict[int, int] = {}
    n = 0
    for o in outs:
        if not isinstance(o, PriceChange):
            continue
        h = o.ts_ms // HOUR_MS
        anchor = anchors.setdefault(h, last if last is not None else o.price_cents)
        assert abs(o.price_cents - anchor) <= anchor * step_pct + 1e-9, (o.record, anchor)
        last = o.price_cents
        n += 1
    return n


@pytest.mark.parametrize("seed", range(40))
def test_no_adversarial_stream_breaks_a_bound(seed: int) -> None:
    rng = random.Random(seed)
    ctx = _ctx()
    _, outs = _run(_adversarial(rng, 60, fixed_catalog=False), ctx)
    assert _check_bounds(outs, RAILS) > 0


@pytest.mark.parametrize("seed", range(40))
def test_with_a_fixed_catalog_no_stream_breaks_the_step_limit(seed: int) -> None:
    rng = random.Random(1000 + seed)
    _, outs = _run(_adversarial(rng, 60, fixed_catalog=True), _ctx())
    assert _check_bounds(outs, RAILS) > 0
    assert _check_step(outs, RAILS["max_step_per_hour"]) > 0


def test_the_step_check_can_fail() -> None:
    # negative control: the same stream with the step limit off moves more than 10 % within an hour
    rng = random.Random(7)
    stream = [_inv(T0 + 1, "i1"), ItemInput(T0 + 2, "c", "competitor_price", competitor="a", competitor_cents=7000)]
    stream += [ItemInput(T0 + TICK + 3, "c2", "competitor_price", competitor="a", competitor_cents=11900)]
    loose = _ctx(rails={"*": {**RAILS, "max_step_per_hour": 0.99}})
    _, outs = _run(stream, loose)
    with pytest.raises(AssertionError):
        _check_step(outs, 0.10)
    _, outs = _run(stream, _ctx())
    assert _check_step(outs, 0.10) > 0
    assert rng is not None


def test_the_bounds_check_can_fail() -> None:
    bad = PriceChange("A", T0, 100, {"inputs": {"cost_cents": 6000, "base_cents": 10000, "map_cents": None},
                                     "reasons": []})
    with pytest.raises(AssertionError):
        _check_bounds([bad], RAILS)


@pytest.mark.parametrize("seed", range(20))
def test_offers_never_break_their_rails(seed: int) -> None:
    rng = random.Random(2000 + seed)
    stream = _adversarial(rng, 40, fixed_catalog=False)
    stream += [OfferRequest(T0 + rng.randint(0, 40 * HOUR_MS), f"o{i}", f"p{i % 3}", "A", "r1",
                            rng.choice([0, 5, 20, 50, 100, 1000]), HOUR_MS) for i in range(30)]
    stream.sort(key=lambda m: m.ts_ms)
    _, outs = _run(stream, _ctx())
    offers = [o for o in outs if isinstance(o, Offer)]
    assert len(offers) == 30
    for o in offers:
        r = o.record
        if not o.granted:
            assert r["reasons"][0] in {"no_list_price", "no_discount_left"}
            continue
        assert r["offer_cents"] < r["list_cents"]
        assert r["offer_cents"] >= math.floor(r["list_cents"] * (1 - RAILS["max_offer_discount"]))
        assert r["expires_ms"] == r["ts_ms"] + HOUR_MS


# ---- deterministic replay ---------------------------------------------------------------------------------


def _shuffle_within_ticks(rng: random.Random, stream: list) -> list:
    by_tick: dict[int, list] = {}
    for m in stream:
        by_tick.setdefault(next_tick(m.ts_ms, TICK), []).append(m)
    out = []
    for t in sorted(by_tick):
        chunk = by_tick[t][:]
        rng.shuffle(chunk)
        out += chunk
    return out


@pytest.mark.parametrize("seed", range(10))
def test_a_replay_in_any_arrival_order_gives_the_same_prices_and_offers(seed: int) -> None:
    rng = random.Random(3000 + seed)
    stream = sorted(_adversarial(rng, 50, fixed_catalog=False), key=lambda m: m.ts_ms)
    stream += [OfferRequest(stream[i].ts_ms, f"o{i}", "p1", "A", "r1", 15, HOUR_MS) for i in range(0, 40, 7)]
    stream.sort(key=lambda m: m.ts_ms)
    st1, first = _run(stream, _ctx())
    st2, again = _run(stream, _ctx())
    st3, shuffled = _run(_shuffle_within_ticks(rng, stream), _ctx())
    _, at_end = _run(_shuffle_within_ticks(rng, stream), _ctx(), at_end=True)  # no watermark before the end
    assert first == again == shuffled == at_end
    assert st1 == st2
    assert st3 is not None and st1 is not None and st3.price == st1.price
    assert any(isinstance(o, PriceChange) for o in first)


def test_arrival_order_matters_to_a_naive_per_event_repricer() -> None:
    # negative control: a repricer that settles on arrival (ties by arrival, not by (ts, id)) depends on order
    a = _inv(T0 + 5, "i-b", cost="60.00", base="100.00")
    b = _inv(T0 + 5, "i-a", cost="60.00", base="110.00")
    _, x = _run([a, b], _ctx())
    _, y = _run([b, a], _ctx())
    assert _prices(x) == _prices(y) == [(T0 + TICK, 10000, ["base"])]  # (ts, id) order: i-b wins over i-a

    def naive(order):
        base = None
        for m in order:
            base = m.base_cents
        return base

    assert naive([a, b]) != naive([b, a])


# ---- the list-price policy: no personalised list prices ---------------------------------------------------


def test_a_policy_that_names_persons_tags_or_segments_is_refused() -> None:
    for key in ("tags", "segment", "by_person", "audience"):
        with pytest.raises(PricingPolicyError, match="art. 18"):
            policy_from_mapping({"name": "vip-pricing", key: ["高价值客户"]})
    with pytest.raises(PricingPolicyError, match="art. 18"):
        policy_from_mapping({"name": "p", "rails": {"*": {"segment": "vip"}}})
    # negative control: the same policy without the personal key is accepted
    assert policy_from_mapping({"name": "vip-pricing"}).name == "vip-pricing"


def test_the_settings_refuse_personalised_list_prices() -> None:
    from config.settings import load_settings

    with pytest.raises(Exception, match="art. 18"):
        load_settings(overrides={"pricing": {"personalised_list_prices": "allowed"}})
    assert load_settings(overrides={"pricing": {"personalised_list_prices": "refused"}}).pricing.enabled is False


def test_offers_for_some_persons_leave_the_list_price_identical_for_everyone() -> None:
    rng = random.Random(5)
    stream = sorted(_adversarial(rng, 50, fixed_catalog=True), key=lambda m: m.ts_ms)
    with_offers = sorted(stream + [OfferRequest(m.ts_ms, f"o{i}", f"vip{i}", "A", "r", 20, HOUR_MS)
                                   for i, m in enumerate(stream[::5])], key=lambda m: m.ts_ms)
    _, plain = _run(stream, _ctx())
    _, offered = _run(with_offers, _ctx())
    assert [o for o in offered if isinstance(o, PriceChange)] == [o for o in plain if isinstance(o, PriceChange)]
    assert sum(isinstance(o, Offer) and o.granted for o in offered) > 0


# ---- offers ----------------------------------------------------------------------------------------------


def test_an_offer_is_capped_floored_and_pickup_needs_stock_nearby() -> None:
    ctx = _ctx()
    inv = [_inv(T0 + 1, "i1", cost="80.00"), _inv(T0 + 2, "i2", qty=2, store="sh-001", cost=None, base=None),
           _inv(T0 + 3, "i3", qty=0, store="bj-001", cost=None, base=None)]
    reqs = [OfferRequest(T0 + TICK + 1, "o1", "p1", "A", "r", 50, HOUR_MS),
            OfferRequest(T0 + TICK + 2, "o2", "p2", "A", "r", 10, HOUR_MS, pickup_city="sh"),
            OfferRequest(T0 + TICK + 3, "o3", "p3", "A", "r", 10, HOUR_MS, pickup_city="bj"),
            OfferRequest(T0 + 4, "o0", "p0", "A", "r", 10, HOUR_MS)]
    _, outs = _run(sorted([*inv, *reqs], key=lambda m: m.ts_ms), ctx)
    got = {o.offer_id: (o.granted, o.record.get("offer_cents"), o.record["reasons"], o.record.get("pickup_store"))
           for o in outs if isinstance(o, Offer)}
    # the list price is the base 100.00 (stock 50 + 2 + 0 = 52: neither low nor over)
    assert got == {
        "o0": (False, None, ["no_list_price"], None),  # before the first tick: no list price yet
        "o1": (True, 8400, ["max_offer_discount", "floor"], None),  # 50 % → 20 % = 80.00 < floor 84.00
        "o2": (True, 9000, ["pickup_in_store"], "sh-001"),
        "o3": (False, None, ["not_in_stock_nearby"], None),
    }


# ---- control messages and state --------------------------------------------------------------------------


def test_control_installs_newer_versions_from_their_effective_time_and_refuses_the_rest() -> None:
    base = policies_from_mapping([{"name": "p"}], "p")
    v = Versions(((1, 0, base),))
    msg = {"kind": "pricing", "op": "put", "version": 2, "effective_ms": T0 + HOUR_MS, "default": "q",
           "policies": [{"name": "q", "rails": {"*": {**RAILS, "max_markup": 0.0}}}]}
    v2, res = apply_control(v, msg)
    assert res.ok and v2.version == 2
    assert apply_control(v2, msg)[1].reason.startswith("pricing control: version 2 is not newer")
    refused = {**msg, "version": 3, "policies": [{"name": "vip", "tags": ["高价值客户"]}]}
    v3, res = apply_control(v2, refused)
    assert (v3, res.ok) == (v2, False) and "art. 18" in res.reason
    ctx = PricingContext(v2.by_time(), tick_ms=TICK)
    assert ctx.policies_at(T0).default == "p" and ctx.policies_at(T0 + HOUR_MS).default == "q"
    # through the step: a surge priced before the new policy, capped at the base after it
    views = [ItemInput(T0 + 2 * TICK + i, f"v{i}", "page_view") for i in range(12)]
    _, outs = _run([_inv(T0 + 1, "i1"), *views], ctx)
    assert [((t - T0) // 60_000, p, r) for t, p, r in _prices(outs)] == [
        (15, 10000, ["base"]), (45, 10500, ["demand_surge"]),
        (60, 10000, ["demand_surge", "ceiling"]),  # policy q from T0+1h: no markup
        (105, 9500, ["demand_slump"]),  # the surge's hour is now the window before, and nothing since
        (165, 10000, ["base"])]  # both windows empty: the demand chain of ticks ends here


def test_the_state_codec_round_trips_every_field() -> None:
    rng = random.Random(9)
    stream = sorted(_adversarial(rng, 30, fixed_catalog=False), key=lambda m: m.ts_ms)
    stream.append(OfferRequest(stream[-1].ts_ms + 1, "o", "p", "A", "r", 5.5, 10, "sh"))
    st = None
    for m in stream:
        st, _ = step(st, m, m.ts_ms, _ctx(), "A")
    assert st is not None and st.pending
    assert decode_item(encode_item(st)) == st
    with pytest.raises(ValueError, match="unknown codec version"):
        decode_item("\x02[]")


def test_the_pure_modules_import_without_pyflink_or_a_client() -> None:
    import subprocess
    import sys

    from tests.helpers import ROOT

    code = ("import sys; sys.modules['pyflink'] = None\n"
            "import operators.pricing.step, operators.pricing.control, state.pricing, pipelines.pricing\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('pyflink', 'redis', 'confluent_kafka', 'happybase')]\n"
            "assert bad == ['pyflink'], bad\nprint('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# ---- a pricing policy as an experiment variant -----------------------------------------------------------

_EXPERIMENT = """
experiments:
  - key: price-test
    version: 1
    unit: {unit}
    variants: [{{key: control, weight: 0.5}}, {{key: flat, weight: 0.5}}]
    start: 2026-01-01T00:00:00Z
    assign_on: [page_view]
    conversion: {{event_type: purchase, window: 7d}}
    revenue: {{event_type: purchase, window: 7d}}
"""


def _experiment_settings(tmp_path, unit: str = "item"):
    from config.settings import load_settings

    path = tmp_path / "experiments.yaml"
    path.write_text(_EXPERIMENT.format(unit=unit), encoding="utf-8")
    return load_settings(overrides={"experiments": {"definitions_file": str(path)}, "pricing": {
        "enabled": True, "experiment": "price-test", "variants": {"control": "standard", "flat": "flat"},
        "policies": [{"name": "standard", "rails": {"*": RAILS}},
                     {"name": "flat", "rails": {"*": {**RAILS, "max_markup": 0.0}}}]}})


def test_the_experiment_assigns_each_item_its_policy(tmp_path) -> None:
    from operators.experiments.definitions import assign, load_definitions
    from pipelines.pricing import experiment_definition, pricing_context

    settings = _experiment_settings(tmp_path)
    ctx = pricing_context(settings.pricing, experiment_definition(settings))
    (defn,) = load_definitions(tmp_path / "experiments.yaml")
    items = [f"sku-{i}" for i in range(40)]
    variant = {i: defn.variations[assign(defn, i, T0)] for i in items}
    assert set(variant.values()) == {"control", "flat"}
    for item in items:
        st = None
        stream = [_inv(T0 + 1, "i1"), *(ItemInput(T0 + TICK + j, f"v{j}", "page_view") for j in range(12))]
        for m in stream:
            st, _ = step(st, m, m.ts_ms, ctx, item)
        outs = []
        for t in (T0 + TICK, T0 + 2 * TICK):
            st, o = step(st, Tick(t), t, ctx)
            outs += o
        last = outs[-1].record
        # the surge is +5 % under the standard policy; the flat policy's ceiling is the base
        expected = {"control": (10500, "standard"), "flat": (10000, "flat")}[variant[item]]
        assert (last["price_cents"], last["policy"], last["variant"]) == (*expected, variant[item]), item


def test_a_pricing_experiment_of_persons_is_refused(tmp_path) -> None:
    from operators.pricing.policy import PricingPolicyError
    from pipelines.pricing import experiment_definition

    with pytest.raises(PricingPolicyError, match="never persons"):
        experiment_definition(_experiment_settings(tmp_path, unit="person"))
    assert experiment_definition(_experiment_settings(tmp_path))["unit"] == "item"  # negative control
