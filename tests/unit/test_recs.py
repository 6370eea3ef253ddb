"""The recommender's pure steps (operators/recs): exact scores on hand-computed streams, bounds, decay, TTL.

Every expected number is worked out in the comment above it; negative controls show the guard matters.
"""

from __future__ import annotations

import math
import random

import pytest

from operators.recs.cooccurrence import (
    ItemEvent,
    ItemNorm,
    Neighbours,
    NormDelta,
    NormedPair,
    PairDelta,
    PersonWindow,
    RecsConfig,
    RecsConfigError,
    Seen,
    SelfNorm,
    neighbour_step,
    norm_step,
    person_step,
    top_neighbours,
)
from operators.recs.recommend import InProcessRecommender, recommend

H = 1_000_000  # a half-life in ms
NO_DECAY = RecsConfig(half_life_ms=0)


def run(events: list[tuple[str, str, str, int]], cfg: RecsConfig = NO_DECAY) -> InProcessRecommender:
    r = InProcessRecommender(cfg)
    for person, item, etype, ts in events:
        r.update(ItemEvent(person, item, etype, ts))
    return r


# p: A(view 1), B(view 1); q: A(view 1), B(cart 3), C(view 1)
#   C(A,B) = 1·1 + 1·3 = 4, C(A,C) = 1, C(B,C) = 3; N(A) = 2, N(B) = 1 + 9 = 10, N(C) = 1
STREAM = [("p", "A", "page_view", 0), ("p", "B", "page_view", 1), ("q", "A", "page_view", 2),
          ("q", "B", "add_to_cart", 3), ("q", "C", "page_view", 4)]


def test_cosine_scores_of_a_small_stream_are_exact() -> None:
    r = run(STREAM)
    assert r.similar("A") == (("B", round(4 / math.sqrt(20), 6)), ("C", round(1 / math.sqrt(2), 6)))
    assert r.similar("A") == (("B", 0.894427), ("C", 0.707107))
    assert r.similar("B") == (("C", 0.948683), ("A", 0.894427))  # 3/√10, 4/√20
    assert r.similar("C") == (("B", 0.948683), ("A", 0.707107))
    assert r.pairs == 8  # p: 1 pair × 2 directions; q: 1 + 2 pairs × 2
    assert r.similar("Z") == ()


def test_person_step_emits_the_norm_then_both_directions_of_each_pair() -> None:
    st, outs = person_step(None, ItemEvent("q", "A", "page_view", 10), 10, NO_DECAY)
    assert outs == (NormDelta("A", 1.0, 10),)
    st, outs = person_step(st, ItemEvent("q", "B", "add_to_cart", 11), 11, NO_DECAY)
    # N(B) grows by 2·3·0 + 3² = 9; C(B,A) by 3 · v[A] = 3
    assert outs == (NormDelta("B", 9.0, 11), PairDelta("B", "A", 3.0, 11), PairDelta("A", "B", 3.0, 11))
    st, outs = person_step(st, ItemEvent("q", "B", "page_view", 12), 12, NO_DECAY)
    # v[B] was 3: N(B) grows by 2·1·3 + 1 = 7 (from 9 to (3+1)² = 16)
    assert outs == (NormDelta("B", 7.0, 12), PairDelta("B", "A", 1.0, 12), PairDelta("A", "B", 1.0, 12))
    assert st == PersonWindow((Seen("A", 10, 1.0), Seen("B", 11, 3.0), Seen("B", 12, 1.0)), ())


def test_events_without_item_or_weight_change_nothing() -> None:
    st, _ = person_step(None, ItemEvent("p", "A", "page_view", 0), 0, NO_DECAY)
    assert person_step(st, ItemEvent("p", "B", "login", 1), 1, NO_DECAY) == (st, ())
    assert person_step(st, ItemEvent("p", "", "page_view", 1), 1, NO_DECAY) == (st, ())
    # negative control: the same event with a weighted type does pair
    assert person_step(st, ItemEvent("p", "B", "page_view", 1), 1, NO_DECAY)[1][1] == PairDelta("B", "A", 1.0, 1)


def test_only_events_inside_the_window_pair() -> None:
    cfg = RecsConfig(half_life_ms=0, window_ms=100, window_items=2)
    st, _ = person_step(None, ItemEvent("p", "A", "page_view", 0), 0, cfg)
    _, far = person_step(st, ItemEvent("p", "B", "page_view", 101), 101, cfg)
    _, near = person_step(st, ItemEvent("p", "B", "page_view", 100), 100, cfg)
    assert far == (NormDelta("B", 1.0, 101),)
    assert near == (NormDelta("B", 1.0, 100), PairDelta("B", "A", 1.0, 100), PairDelta("A", "B", 1.0, 100))
    # window_items = 2: after A, B, C only B and C remain, so D pairs with B and C, not A
    for item, ts in (("B", 1), ("C", 2)):
        st, _ = person_step(st, ItemEvent("p", item, "page_view", ts), ts, cfg)
    assert [s.item for s in st.recent] == ["B", "C"]
    _, outs = person_step(st, ItemEvent("p", "D", "page_view", 3), 3, cfg)
    assert {o.b for o in outs if isinstance(o, PairDelta) and o.a == "D"} == {"B", "C"}


def test_decay_favours_the_recent_pair_and_no_decay_is_the_negative_control() -> None:
    # p views A, B at 0; q views A, C at H. At H: N(A) = 1·½ + 1 = 1.5, N(B) = ½, C(A,B) = ½, C(A,C) = 1, N(C) = 1
    #   A→B = ½ / √(1.5 · ½) = 0.57735, A→C = 1 / √1.5 = 0.816497
    stream = [("p", "A", "page_view", 0), ("p", "B", "page_view", 0), ("q", "A", "page_view", H),
              ("q", "C", "page_view", H)]
    assert run(stream, RecsConfig(half_life_ms=H)).similar("A") == (("C", 0.816497), ("B", 0.57735))
    # without decay both pairs are worth the same: 1 / √2 each, ties by item id
    assert run(stream, NO_DECAY).similar("A") == (("B", 0.707107), ("C", 0.707107))


def test_damping_pushes_the_popular_neighbour_down() -> None:
    # 9 persons view P; then X co-occurs once with P and once with Q (nowhere else). N(P) travels with the
    # pair (X, P), so it is as of their co-occurrence: 10 here
    stream = [(f"o{i}", "P", "page_view", i) for i in range(9)] + [
        ("u", "X", "page_view", 10), ("u", "P", "page_view", 11), ("v", "X", "page_view", 12),
        ("v", "Q", "page_view", 13)]
    # cosine (β = ½): X→P = 1/√(2·10) = 0.223607, X→Q = 1/√(2·1) = 0.707107
    assert run(stream).similar("X") == (("Q", 0.707107), ("P", 0.223607))
    # β = 1: X→P = 1/10, X→Q = 1/1 (conditional on the neighbour): P falls further
    assert run(stream, RecsConfig(half_life_ms=0, damping=1.0)).similar("X") == (("Q", 1.0), ("P", 0.1))
    # β = 0: both 1/2 (conditional on X): no damping, popularity no longer counts against P
    assert run(stream, RecsConfig(half_life_ms=0, damping=0.0)).similar("X") == (("P", 0.5), ("Q", 0.5))


def test_neighbour_lists_stay_capped_and_keep_the_best() -> None:
    cfg = RecsConfig(half_life_ms=0, max_neighbours=4, top_k=3, window_items=50)
    # item i_j is viewed by j other persons; then one person views A and the 20 items:
    # A→i_j = 1 / √(1 · (j + 1)): the less popular, the closer
    stream = [(f"o{j}-{n}", f"i{j:02d}", "page_view", j) for j in range(20) for n in range(j)]
    stream += [("p", "A", "page_view", 100)] + [("p", f"i{j:02d}", "page_view", 101 + j) for j in range(20)]
    r = run(stream, cfg)
    assert len(r.neighbours["A"].pairs) <= 4 + 4 // 4
    assert r.similar("A") == (("i00", round(1 / math.sqrt(1), 6)), ("i01", round(1 / math.sqrt(2), 6)),
                              ("i02", round(1 / math.sqrt(3), 6)))
    assert max(len(n.pairs) for n in r.neighbours.values()) <= 5
    # negative control: without the cap A keeps all 20
    big = run(stream, RecsConfig(half_life_ms=0, max_neighbours=100, top_k=3, window_items=50))
    assert len(big.neighbours["A"].pairs) == 20


def test_timers_drop_stale_pairs_norms_and_windows() -> None:
    cfg = RecsConfig(half_life_ms=0, pair_ttl_ms=1000, person_ttl_ms=500)
    st = Neighbours()
    st, _ = neighbour_step(st, SelfNorm("A", 2.0, 0), 0, cfg)
    st, _ = neighbour_step(st, NormedPair("A", "B", 1.0, 0, 1.0, 0), 0, cfg)
    st, _ = neighbour_step(st, NormedPair("A", "C", 1.0, 600, 1.0, 600), 600, cfg)
    kept, changed = neighbour_step(st, None, 999, cfg)
    assert kept is not None and sorted(kept.pairs) == ["B", "C"] and not changed  # negative control: not yet
    kept, changed = neighbour_step(kept, None, 1000, cfg)
    assert kept is not None and sorted(kept.pairs) == ["C"] and changed
    assert neighbour_step(kept, None, 1600, cfg) == (None, True)
    assert norm_step(ItemNorm(1.0, 0), None, 999, cfg) == (ItemNorm(1.0, 0), ())
    assert norm_step(ItemNorm(1.0, 0), None, 1000, cfg) == (None, ())
    w, _ = person_step(None, ItemEvent("p", "A", "purchase", 0), 0, cfg)
    assert person_step(w, None, 499, cfg) == (w, ())
    assert person_step(w, None, 500, cfg) == (None, ())


def test_a_pair_whose_neighbour_norm_is_unknown_is_dropped() -> None:
    assert norm_step(None, PairDelta("A", "B", 1.0, 0), 0, NO_DECAY) == (None, ())
    assert norm_step(ItemNorm(4.0, 0), PairDelta("A", "B", 1.0, 5), 5, NO_DECAY) == (
        ItemNorm(4.0, 0), (NormedPair("A", "B", 1.0, 5, 4.0, 0),))


def test_arrival_order_of_a_keys_updates_does_not_change_its_scores() -> None:
    cfg = RecsConfig(half_life_ms=H)
    msgs: list[SelfNorm | NormedPair] = [SelfNorm("A", 3.0, 5 * H)]
    msgs += [NormedPair("A", f"b{i % 7}", 1.0 + i, i * H // 3, 2.0 + i % 7, i * H // 3) for i in range(40)]
    results = set()
    for seed in range(5):
        random.Random(seed).shuffle(msgs)
        st: Neighbours | None = None
        for m in msgs:
            st, _ = neighbour_step(st, m, m.ts_ms, cfg)
        results.add(top_neighbours(st, cfg))
    assert len(results) == 1


def test_recommend_sums_weighted_neighbours_minus_purchased_and_recent() -> None:
    # STREAM, then r views A and buys D: C(A,D) = 1·5 = 5, N(D) = 25, N(A) = 2 + 1 = 3
    #   A→B = 4/√30 = 0.730297, A→C = 1/√3 = 0.57735, A→D = 5/√75 = 0.57735; D→A = 0.57735
    r = run([*STREAM, ("r", "A", "page_view", 5), ("r", "D", "purchase", 6)])
    assert r.similar("A") == (("B", 0.730297), ("C", 0.57735), ("D", 0.57735))
    # r: recent A (1), D (5): B and C through A; D (recent, purchased) and A (recent) are out
    assert r.recommend("r", 5) == [("B", 0.730297), ("C", 0.57735)]
    # q: recent A, B, C: D through A (weight 1)
    assert r.recommend("q", 5) == [("D", 0.57735)]
    assert r.recommend("q", 5, exclude={"D"}) == []
    assert r.recommend("nobody", 5) == []
    recent = (Seen("A", 0, 2.0),)
    assert recommend(recent, lambda i: [("B", 0.5), ("C", 0.25)], 5, exclude={"B"}) == [("C", 0.5)]
    assert recommend(recent, lambda i: [("B", 0.5), ("C", 0.25)], 5) == [("B", 1.0), ("C", 0.5)]  # control
    assert recommend(recent, lambda i: [("A", 0.9), ("C", 0.25)], 1) == [("C", 0.5)]  # a recent item is out


def test_a_purchase_that_left_the_window_is_still_excluded() -> None:
    cfg = RecsConfig(half_life_ms=0, window_items=1)
    r = run([("q", "A", "page_view", 0), ("q", "D", "page_view", 1), ("p", "D", "purchase", 2),
             ("p", "A", "page_view", 3)], cfg)
    # C(A,D) = 1·1 (q) + 1·5 (p) = 6, N(A) = 2, N(D) = 1 + 25 = 26: A↔D = 6/√52 = 0.83205
    assert r.persons["p"].recent == (Seen("A", 3, 1.0),)
    assert r.recommend("p", 5) == []
    assert r.recommend("q", 5) == [("A", 0.83205)]  # q's window is D alone
    # negative control: the same list without the purchase filter offers D to p
    assert recommend(r.persons["p"].recent, r.similar, 5) == [("D", 0.83205)]


def test_purchases_are_kept_for_the_minus_purchased_filter() -> None:
    cfg = RecsConfig(half_life_ms=0, max_purchased=2)
    st = None
    for i, item in enumerate(["A", "B", "C", "B"]):
        st, _ = person_step(st, ItemEvent("p", item, "purchase", i), i, cfg)
    assert st is not None and st.purchased == (("C", 2), ("B", 3))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"weights": {}}, "recs.weights: give at least one event type"),
    ({"weights": {"page_view": -1.0}}, "recs.weights"),
    ({"damping": 1.5}, "recs.damping must be within [0, 1]"),
    ({"top_k": 200}, "recs.top_k (200) must not exceed recs.max_neighbours (100)"),
    ({"window_ms": 0}, "recs.window_ms must be > 0 ms"),
])
def test_bad_settings_say_which_key_and_what_to_use(kwargs: dict, message: str) -> None:
    with pytest.raises(RecsConfigError) as e:
        RecsConfig(**kwargs)
    assert message in str(e.value)
    with pytest.raises(ValueError, match="k must be ≥ 1"):
        recommend((), lambda i: [], 0)


def test_state_and_redis_codecs_round_trip_and_refuse_an_unknown_version() -> None:
    from state.recs import (
        RecsCodecError,
        decode_neighbours,
        decode_neighbours_row,
        decode_norm,
        decode_window,
        decode_window_row,
        encode_neighbours,
        encode_neighbours_row,
        encode_norm,
        encode_window,
        encode_window_row,
    )

    r = run([*STREAM, ("q", "A", "purchase", 9)])
    w = r.persons["q"]
    assert decode_window(encode_window(w)) == w and decode_window_row(encode_window_row(w)) == w
    assert decode_norm(encode_norm(r.norms["A"])) == r.norms["A"]
    n = decode_neighbours(encode_neighbours(r.neighbours["A"]))
    assert n == r.neighbours["A"] and top_neighbours(n, NO_DECAY) == r.similar("A")
    assert decode_neighbours_row(encode_neighbours_row(r.similar("A"))) == list(r.similar("A"))
    assert encode_window_row(None) == "" and decode_window_row("") is None and decode_window(None) is None
    with pytest.raises(RecsCodecError, match="recs-norm-v1: unknown codec version 2"):
        decode_norm("\x02[1.0, 0]")


def test_fill_recs_replaces_only_the_recs_placeholder() -> None:
    from zhongtai.services.recommendations import fill_recs

    calls: list[tuple[str, int]] = []

    def lookup(person: str, k: int) -> list[tuple[str, float]]:
        calls.append((person, k))
        return [("B", 0.9), ("C", 0.5)][:k]

    params = {"template": "cart_nudge", "items": "{{recs}}", "top": "{{ recs:1 }}", "note": "{{other}}", "n": 3}
    assert fill_recs(params, "p1", lookup) == {"template": "cart_nudge", "items": ["B", "C"], "top": ["B"],
                                               "note": "{{other}}", "n": 3}
    assert calls == [("p1", 10), ("p1", 1)]
    assert fill_recs({"items": "recs"}, "p1", lookup) == {"items": "recs"}  # control: not the placeholder
    with pytest.raises(ValueError, match=r"asks for 500 items; write \{\{recs:k\}\} with k between 1 and 100"):
        fill_recs({"items": "{{recs:500}}"}, "p1", lookup)


def test_the_pure_modules_import_without_pyflink_or_a_client() -> None:
    import subprocess
    import sys

    from tests.helpers import ROOT

    code = (
        "import sys; sys.modules['pyflink'] = None\n"
        "import operators.recs.cooccurrence, operators.recs.recommend, state.recs\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('pyflink', 'redis', 'confluent_kafka', 'happybase')]\n"
        "assert bad == ['pyflink'], bad\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    # negative control: the Flink shell does need pyflink
    code = code.replace("import operators.recs.cooccurrence, operators.recs.recommend, state.recs",
                        "import pipelines.recs; pipelines.recs._functions()")
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode != 0 and "pyflink" in out.stderr
