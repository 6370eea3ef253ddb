"""The streaming identity graph equals the batch definition for every arrival order.

Property-style: random small universes (many limit conflicts) and a noisy generated stream, each
fed in many random permutations; the final mapping must equal ``resolve_batch`` exactly. The batch
resolution without guard rails must equal networkx's connected components. Negative control: a
resolver that takes arrival order as canonical order (no replay) differs.
"""

from __future__ import annotations

import itertools
import random

import networkx as nx
import pytest

from config.settings import IdentitySettings, PiiSettings
from operators.identity import IdentityRules, Observation, resolve_batch
from operators.identity.batch import partition
from operators.identity.rules import DEFAULT_LIMITS
from zhongtai.devtools.generator import GeneratorConfig, generate
from zhongtai.devtools.generator.oracle import observations

from .test_identity_cases import RULES, feed

#: No guard rails: no limits, nothing shareable (plain connected components).
UNLIMITED = IdentityRules(limits={t: 10**6 for t in DEFAULT_LIMITS}, shareable=frozenset())
NOISY = GeneratorConfig(
    seed=9,
    persons=300,
    events=12_000,
    shared_device_share=0.1,
    kiosks=2,
    kiosk_share=0.05,
    junk_id_share=0.05,
    late_share=0.05,
)


def _universe(rnd: random.Random, n: int) -> list[Observation]:
    obs = []
    for k in range(n):
        ids = []
        for t, pool in (
            ("user_id", 4),
            ("phone", 4),
            ("device_id", 6),
            ("cookie_id", 8),
            ("openid", 3),
            ("email", 3),
        ):
            if rnd.random() < 0.35:
                ids.append((t, f"{t[0]}{rnd.randrange(pool)}"))
        if rnd.random() < 0.05:
            ids.append(("device_id", "0"))
        if not ids:
            ids = [("device_id", f"d{rnd.randrange(6)}")]
        obs.append(Observation(tuple(ids), rnd.randrange(40), f"e{k % 37}"))  # repeated keys too
    return obs


@pytest.fixture(scope="module")
def noisy() -> list[Observation]:
    pii = PiiSettings()
    return observations(generate(NOISY), pii=pii)


@pytest.fixture(scope="module")
def noisy_rules() -> IdentityRules:
    return IdentityRules.from_settings(IdentitySettings(), PiiSettings())


@pytest.mark.parametrize("seed", range(60))
def test_random_universes_any_order_equals_batch(seed):
    rnd = random.Random(seed)
    obs = _universe(rnd, rnd.randrange(1, 60))
    want = resolve_batch(obs, RULES)
    for _ in range(8):
        order = list(obs)
        rnd.shuffle(order)
        g = feed(order)
        assert g.mapping == want
        # The components' persons agree with the mapping, and every identifier is indexed.
        assert {m: p.pid for c in g.components.values() for p in c.persons for m in p.members} == want
        assert set(g.index) == {i for c in g.components.values() for i in c.idents}


def test_random_universes_have_limit_conflicts():
    """So the property above exercises the guard rails (and not only plain unions)."""
    rnd = random.Random(0)
    conflicts = 0
    for _ in range(20):
        obs = _universe(rnd, 50)
        conflicts += len(set(resolve_batch(obs, UNLIMITED).values())) < len(
            set(resolve_batch(obs, RULES).values())
        )
    assert conflicts >= 15


def test_random_universes_exercise_both_refusals():
    """Of the 60 universes of the order property, the final edges of 29 hold a ``shared:<type>``
    refusal (a device/cookie that would bridge two holders of one type) and more hold ``limit:``."""
    kinds = {"limit": 0, "shared": 0}
    for seed in range(60):
        rnd = random.Random(seed)
        g = feed(_universe(rnd, rnd.randrange(1, 60)))
        edges = [e for c in g.components.values() for cb in c.combos for e in cb.edges]
        reasons = {r.partition(":")[0] for _, _, r in edges}
        for k in kinds:
            kinds[k] += k in reasons
    assert kinds["shared"] == 29 and kinds["limit"] > kinds["shared"]


def test_generated_noisy_stream_any_order_equals_batch(noisy, noisy_rules):
    want = resolve_batch(noisy, noisy_rules)
    orders = [list(noisy), list(reversed(noisy))]
    rnd = random.Random(5)
    for _ in range(4):
        o = list(noisy)
        rnd.shuffle(o)
        orders.append(o)
    for order in orders:
        assert feed(order, noisy_rules).mapping == want
    # Replaying the whole stream once more: every observation is known, nothing takes a slow path.
    g = feed(noisy, noisy_rules)
    paths = {g.observe(o).path for o in noisy}
    assert "fast" in paths and paths <= {"fast", "noop"}


def test_arrival_order_as_canonical_order_would_be_caught(noisy, noisy_rules):
    """Negative control: resolving in arrival order (no re-resolution of late events) gives another
    partition for a shuffled arrival, so the equality above can fail."""
    want = resolve_batch(noisy, noisy_rules)
    shuffled = list(noisy)
    random.Random(1).shuffle(shuffled)
    naive = [Observation(o.ids, k, o.event_id) for k, o in enumerate(shuffled)]
    assert resolve_batch(naive, noisy_rules) != want


def _nx_components(obs: list[Observation], rules: IdentityRules) -> set[frozenset[str]]:
    g = nx.Graph()
    for o in obs:
        ids = [f"{t}:{v}" for t, v in o.ids if t in rules.rank and not rules.is_junk(t, v)]
        g.add_nodes_from(ids)
        g.add_edges_from(itertools.pairwise(ids))
    return {frozenset(c) for c in nx.connected_components(g)}


@pytest.mark.parametrize("seed", range(20))
def test_without_guard_rails_persons_are_networkx_components(seed):
    rnd = random.Random(100 + seed)
    obs = _universe(rnd, rnd.randrange(1, 80))
    want = _nx_components(obs, RULES)
    assert partition(resolve_batch(obs, RULES, guard_rails=False)) == want
    assert partition(feed(obs, UNLIMITED).mapping) == want


def test_generated_stream_without_guard_rails_is_networkx_components(noisy, noisy_rules):
    want = _nx_components(noisy, noisy_rules)
    assert partition(resolve_batch(noisy, noisy_rules, guard_rails=False)) == want
    # Negative control: with the guard rails the partition is finer (the noise is cut apart).
    guarded = partition(resolve_batch(noisy, noisy_rules))
    assert guarded != want and len(guarded) > len(want)


@pytest.mark.parametrize("seed", range(10))
def test_state_through_the_codec_after_every_step_gives_the_same_result(seed):
    """As the Flink operator will run it: every component written as a blob and read back."""
    from operators.identity.in_memory import InMemoryGraph
    from state.identity import decode_component, encode_component

    rnd = random.Random(300 + seed)
    obs = _universe(rnd, 50)
    rnd.shuffle(obs)
    g = InMemoryGraph(RULES)
    for o in obs:
        g.observe(o)
        g.components = {cid: decode_component(encode_component(c), RULES) for cid, c in g.components.items()}
    assert g.mapping == resolve_batch(obs, RULES)


@pytest.mark.parametrize("seed", range(15))
def test_every_component_equals_its_resolution_from_scratch_after_every_step(seed):
    """The incremental paths (lazy loading, reused persons, handed-over maps) leave exactly the
    component a from-scratch resolution of its combinations gives: persons, edges, detached set."""
    from operators.identity import Combo
    from operators.identity.engine import new_component
    from operators.identity.in_memory import InMemoryGraph
    from operators.identity.model import Component

    rnd = random.Random(500 + seed)
    obs = _universe(rnd, 45)
    rnd.shuffle(obs)
    g = InMemoryGraph(RULES)
    for o in obs:
        g.observe(o)
        for cid, c in g.components.items():
            assert c == new_component(cid, [Combo(b.ts_ms, b.event_id, b.ids) for b in c.combos], RULES)
            plain = Component(c.cid, c.combos, c.persons, c.detached)
            assert (c.person_of, c.combo_at, c.idents) == (plain.person_of, plain.combo_at, plain.idents)
