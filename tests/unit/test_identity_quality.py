"""Pairwise precision / recall / F1 of the identity resolution against the generator's real persons.

Exact counts on a hand-built case; on the default-noise generated stream the guard-railed batch
resolution must reach F1 ≥ 0.99 against the *linkable* truth (real persons, as far as their own
events connect their identifiers); the numbers against the raw real persons are printed too.
Negative control: without guard rails, or without the blocklist, the same stream scores below 0.95.
"""

from __future__ import annotations

import pytest

from config.settings import IdentitySettings, PiiSettings
from operators.identity import IdentityRules, pairwise_quality, resolve_batch
from zhongtai.devtools.generator import GeneratorConfig, generate
from zhongtai.devtools.generator.identity import linkable_truth
from zhongtai.devtools.generator.model import IDENTITY_NOISE
from zhongtai.devtools.generator.oracle import expected_identity

DEFAULT_NOISE = GeneratorConfig(events=60_000, **IDENTITY_NOISE)


def test_pair_counts_on_a_hand_built_case():
    predicted = {"a": 1, "b": 1, "c": 1, "d": 2, "x": 3}
    truth = {"a": "X", "b": "X", "c": "Y", "d": "Y", "e": "Z"}
    q = pairwise_quality(predicted, truth)
    # common a b c d; cells (X,1)=2 (Y,1)=1 (Y,2)=1 → tp 1; predicted pairs C(3,2)=3; true pairs 1+1.
    assert (q.true_positive_pairs, q.predicted_pairs, q.true_pairs) == (1, 3, 2)
    assert (q.identifiers, q.only_predicted, q.only_true) == (4, 1, 1)
    assert (q.precision, q.recall) == (1 / 3, 1 / 2)
    assert q.f1 == pytest.approx(0.4)


def test_perfect_and_empty_partitions():
    same = {"a": 1, "b": 1, "c": 2}
    assert pairwise_quality(same, {"a": "p", "b": "p", "c": "q"}).f1 == 1.0
    assert pairwise_quality({}, {}).f1 == 1.0
    q = pairwise_quality({"a": 1, "b": 2}, {"a": "p", "b": "p"})
    assert (q.precision, q.recall, q.f1) == (1.0, 0.0, 0.0)


def test_linkable_truth_splits_a_person_where_no_event_links():
    from operators.identity import Observation

    truth = {"device_id:a": "p1", "device_id:b": "p1", "user_id:u": "p1", "device_id:s": "p2"}
    obs = [
        Observation((("user_id", "u"), ("device_id", "a")), 1, "e1"),
        Observation((("device_id", "b"),), 2, "e2"),
        Observation((("user_id", "u"), ("device_id", "s")), 3, "e3"),
    ]
    lt = linkable_truth(truth, obs)
    assert lt == {
        "user_id:u": "p1/device_id:a",
        "device_id:a": "p1/device_id:a",
        "device_id:b": "p1/device_id:b",
        "device_id:s": "p2/device_id:s",
    }


@pytest.fixture(scope="module")
def default_noise():
    return expected_identity(list(generate(DEFAULT_NOISE)), DEFAULT_NOISE)


def test_default_noise_f1_at_least_0_99(default_noise):
    x = default_noise
    linkable = pairwise_quality(x.resolved, linkable_truth(x.truth, x.observations))
    print("\nidentity vs linkable truth:", linkable.summary())
    print("identity vs real persons:  ", x.quality.summary())
    assert linkable.f1 >= 0.99
    assert linkable.precision >= 0.98 and linkable.recall >= 0.99
    # Pinned: the stream and the resolution are deterministic. (5923, 5992, 5932) before shareable
    # types: 37 false pairs fewer (shared tablets bridging two phone/e-mail/openid holders), 10 true
    # pairs lost (an owner's tablet detached once a second holder logs in) — docs/identity.md.
    assert (linkable.true_positive_pairs, linkable.predicted_pairs, linkable.true_pairs) == (5913, 5955, 5932)


def test_default_noise_is_noisy_enough_to_matter(default_noise):
    """Negative control: without guard rails (or without the blocklist) quality collapses."""
    x = default_noise
    rules = IdentityRules.from_settings(IdentitySettings(), PiiSettings())
    linkable = linkable_truth(x.truth, x.observations)
    unguarded = pairwise_quality(resolve_batch(x.observations, rules, guard_rails=False), linkable).f1
    no_blocklist = IdentityRules(blocked_values=frozenset(), blocked_patterns=())
    unblocked = pairwise_quality(resolve_batch(x.observations, no_blocklist), linkable).f1
    print(f"\nF1 without guard rails {unguarded:.4f}, without blocklist {unblocked:.4f}")
    assert unguarded < 0.95
    assert unblocked < 0.95


def test_bench_runs_and_reports_paths():
    from bench.identity_bench import run

    r = run(4_000, persons=200)
    assert r["observations"] > 3_000 and sum(r["paths"].values()) == r["observations"]
    assert 0 < r["fast_share"] < 1 and r["slow_paths"] > 0
