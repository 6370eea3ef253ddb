"""Assignment against GrowthBook's published cross-SDK suite, plus sanity properties.

The cases are GrowthBook's own, vendored in ``tests/data/growthbook/cases.json`` (provenance and
licence in the README beside it); every ``hash``, ``getBucketRange``, ``chooseVariation`` and ``inNamespace`` case must pass, with
the same comparison the JavaScript SDK's ``json.test.ts`` uses (exact, except bucket ranges, which
both sides floor to 1e-8 first). The ``run`` cases that use only features zhongtai implements
also go through :func:`assign`.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path

import pytest
from scipy import stats as sps

from operators.experiments.assignment import (
    Assignment,
    Experiment,
    assign,
    choose_variation,
    exclusion_reason,
    fnv1a32,
    get_bucket_ranges,
    get_equal_weights,
    in_namespace,
)
from operators.experiments.assignment import hash as gb_hash
from tests.helpers import DATA


def _cases_path() -> Path:
    if os.environ.get("ZHONGTAI_GROWTHBOOK_CASES"):
        return Path(os.environ["ZHONGTAI_GROWTHBOOK_CASES"])
    return DATA / "growthbook" / "cases.json"


CASES = json.loads(_cases_path().read_text(encoding="utf-8"))


def _floor8(x: float) -> float:  # json.test.ts: Math.floor(n * 1e8) / 1e8
    return math.floor(x * 1e8) / 1e8


def _ids(cases, name_index=0):
    return [f"{i}:{c[name_index]}" for i, c in enumerate(cases)]


def test_the_suite_has_the_documented_case_counts():
    # README: 15 hash, 13 getBucketRange, 13 chooseVariation cases (and 16 inNamespace).
    assert (len(CASES["hash"]), len(CASES["getBucketRange"]), len(CASES["chooseVariation"])) == (15, 13, 13)
    assert len(CASES["inNamespace"]) == 16


@pytest.mark.parametrize("seed, value, version, expected", CASES["hash"], ids=_ids(CASES["hash"], 1))
def test_hash_conformance(seed, value, version, expected):
    assert gb_hash(seed, value, version) == expected


@pytest.mark.parametrize("name, args, expected", CASES["getBucketRange"], ids=_ids(CASES["getBucketRange"]))
def test_get_bucket_range_conformance(name, args, expected):
    num_variations, coverage, weights = args
    actual = get_bucket_ranges(num_variations, coverage, weights)
    assert [[_floor8(a), _floor8(b)] for a, b in actual] == [[_floor8(a), _floor8(b)] for a, b in expected]


@pytest.mark.parametrize(
    "name, n, ranges, expected", CASES["chooseVariation"], ids=_ids(CASES["chooseVariation"])
)
def test_choose_variation_conformance(name, n, ranges, expected):
    assert choose_variation(n, ranges) == expected


@pytest.mark.parametrize(
    "name, unit_id, namespace, expected", CASES["inNamespace"], ids=_ids(CASES["inNamespace"])
)
def test_in_namespace_conformance(name, unit_id, namespace, expected):
    assert in_namespace(unit_id, tuple(namespace)) is expected


@pytest.mark.parametrize("n, expected", CASES["getEqualWeights"])
def test_get_equal_weights_conformance(n, expected):
    assert [_floor8(w) for w in get_equal_weights(n)] == [_floor8(w) for w in expected]


# ---- the `run` cases that only use what zhongtai's Experiment has -------------------------------

_RUN_EXPERIMENT_KEYS = {
    "key",
    "variations",
    "weights",
    "coverage",
    "namespace",
    "seed",
    "hashVersion",
    "active",
    "hashAttribute",
}
RUN_CASES = [c for c in CASES["run"] if set(c[2]) <= _RUN_EXPERIMENT_KEYS and set(c[1]) <= {"attributes"}]


def test_enough_run_cases_are_usable():
    assert len(RUN_CASES) == 52  # a change in the suite should be looked at, not silently skipped


@pytest.mark.parametrize("name, ctx, exp, value, in_experiment, hash_used", RUN_CASES, ids=_ids(RUN_CASES))
def test_run_conformance(name, ctx, exp, value, in_experiment, hash_used):
    variations = exp["variations"]
    keys = tuple(str(i) for i in range(len(variations)))
    kwargs = {
        "key": exp["key"],
        "variations": keys,
        "weights": tuple(exp["weights"]) if "weights" in exp else None,
        "coverage": exp.get("coverage", 1.0),
        "hash_seed": exp.get("seed", ""),
        "unit": exp.get("hashAttribute", "id"),
        "namespace": tuple(exp["namespace"]) if "namespace" in exp else None,
        "hash_version": exp.get("hashVersion", 1),  # the SDKs default to 1; zhongtai's default is 2
        "active": exp.get("active", True),
    }
    if len(variations) < 2:
        # GrowthBook never runs it; zhongtai refuses the definition outright.
        with pytest.raises(ValueError, match="at least two distinct variations"):
            Experiment(**kwargs)
        assert not in_experiment
        return
    experiment = Experiment(**kwargs)
    unit_value = ctx.get("attributes", {}).get(kwargs["unit"])
    result = assign(experiment, unit_value, now_ms=0)
    assert (result is not None) is in_experiment
    assert hash_used is in_experiment  # no forcing in these cases
    if result is not None:
        assert variations[result.variation_id] == value
        assert result.variation == keys[result.variation_id]
    else:
        assert value == variations[0]  # the SDK falls back to the control value


# ---- zhongtai's own contract --------------------------------------------------------------------


def test_fnv1a32_reference_vectors():
    # Published FNV-1a 32-bit test vectors (ASCII).
    assert fnv1a32("") == 0x811C9DC5
    assert fnv1a32("a") == 0xE40C292C
    assert fnv1a32("foobar") == 0xBF9CF968


def test_fnv1a32_hashes_utf16_code_units_like_the_javascript_sdk():
    # BMP characters: one code unit each (JS charCodeAt == Python ord).
    h = 0x811C9DC5
    for ch in "用户":
        h = ((h ^ ord(ch)) * 0x01000193) & 0xFFFFFFFF
    assert fnv1a32("用户") == h
    # Outside the BMP JavaScript sees a surrogate pair (0xD83D, 0xDE00), not the code point 0x1F600.
    h = 0x811C9DC5
    for unit in (0xD83D, 0xDE00):
        h = ((h ^ unit) * 0x01000193) & 0xFFFFFFFF
    assert fnv1a32("\U0001f600") == h
    code_point = ((0x811C9DC5 ^ 0x1F600) * 0x01000193) & 0xFFFFFFFF
    assert code_point != h  # what GrowthBook's Python SDK would compute instead


def test_assign_is_deterministic_and_returns_a_frozen_assignment():
    exp = Experiment(key="banner", variations=("control", "red", "blue"), hash_seed="s1")
    first = assign(exp, "person-42", now_ms=1)
    assert first == assign(exp, "person-42", now_ms=999) == assign(exp, "person-42", 5)
    assert first == Assignment(
        "banner", first.variation_id, first.variation, first.bucket, "person", "person-42"
    )
    assert first.bucket == gb_hash("s1", "person-42", 2)
    with pytest.raises(AttributeError):
        first.variation = "x"  # type: ignore[misc]
    assert {exp: 1}[exp] == 1 and len({first, first}) == 1  # hashable despite the module's `hash`


def test_numbers_are_hashed_as_their_string():
    exp = Experiment(key="k", variations=("a", "b"))
    assert assign(exp, 12345, 0) == assign(exp, "12345", 0)


def test_split_is_uniform_and_matches_the_weights():
    exp = Experiment(key="checkout", variations=("control", "treatment", "t2"), weights=(0.5, 0.3, 0.2))
    counts = Counter(assign(exp, f"u{i}", 0).variation_id for i in range(30_000))
    observed = [counts[i] for i in range(3)]
    p = sps.chisquare(observed, [30_000 * w for w in exp.weights]).pvalue
    assert p > 1e-4, observed
    # and the buckets themselves are uniform on [0, 1): 20 equal bins
    bins = Counter(int(gb_hash("seed", f"u{i}", 2) * 20) for i in range(20_000))
    assert sps.chisquare([bins[b] for b in range(20)]).pvalue > 1e-4


def test_coverage_keeps_the_ratio_and_leaves_the_rest_out():
    exp = Experiment(key="cov", variations=("a", "b"), coverage=0.3)
    results = [assign(exp, f"u{i}", 0) for i in range(20_000)]
    share_in = sum(r is not None for r in results) / len(results)
    assert abs(share_in - 0.3) < 0.02
    assert {exclusion_reason(exp, f"u{i}", 0) for i, r in enumerate(results) if r is None} == {"not covered"}


def test_raising_coverage_never_moves_an_assigned_unit():
    low = Experiment(key="ramp", variations=("a", "b"), coverage=0.2)
    high = Experiment(key="ramp", variations=("a", "b"), coverage=0.8)
    for i in range(5000):
        a = assign(low, f"u{i}", 0)
        if a is not None:
            assert assign(high, f"u{i}", 0).variation_id == a.variation_id


def test_namespaces_with_disjoint_slices_are_mutually_exclusive():
    a = Experiment(key="a", variations=("c", "t"), namespace=("checkout", 0.0, 0.5))
    b = Experiment(key="b", variations=("c", "t"), namespace=("checkout", 0.5, 1.0))
    in_a = {i for i in range(5000) if assign(a, f"u{i}", 0) is not None}
    in_b = {i for i in range(5000) if assign(b, f"u{i}", 0) is not None}
    assert in_a and in_b and not (in_a & in_b) and len(in_a | in_b) == 5000


def test_exclusion_order_follows_the_sdk_run_order():
    ns_out = next(f"u{i}" for i in range(100) if not in_namespace(f"u{i}", ("ns", 0.0, 0.5)))
    base = {
        "key": "k",
        "variations": ("a", "b"),
        "namespace": ("ns", 0.0, 0.5),
        "start_ms": 100,
        "stop_ms": 200,
    }
    assert exclusion_reason(Experiment(**base, active=False), ns_out, 50) == "inactive"
    assert exclusion_reason(Experiment(**base), ns_out, 50) == "not in namespace"
    ns_in = next(f"u{i}" for i in range(100) if in_namespace(f"u{i}", ("ns", 0.0, 0.5)))
    assert exclusion_reason(Experiment(**base), ns_in, 99) == "not started"
    assert exclusion_reason(Experiment(**base), ns_in, 200) == "stopped"
    assert exclusion_reason(Experiment(**base), ns_in, 100) is None
    assert exclusion_reason(Experiment(**base, coverage=0.0), ns_in, 150) == "not covered"
    assert exclusion_reason(Experiment(**base), "", 150) == "no unit id"
    assert assign(Experiment(**base), None, 150) is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"variations": ("a",)}, "at least two distinct"),
        ({"variations": ("a", "a")}, "at least two distinct"),
        ({"weights": (0.5, 0.3, 0.2)}, "3 weights for 2 variations"),
        ({"weights": (0.4, 0.1)}, "sum to 1"),
        ({"coverage": 1.5}, "coverage"),
        ({"hash_version": 99}, "hash_version"),
        ({"namespace": ("ns", 0.6, 0.4)}, "namespace"),
        ({"start_ms": 10, "stop_ms": 5}, "before start_ms"),
    ],
)
def test_bad_definitions_are_refused_with_the_key_in_the_message(kwargs, message):
    args = {"key": "promo-1", "variations": ("a", "b")} | kwargs
    with pytest.raises(ValueError, match=message) as err:
        Experiment(**args)
    assert "promo-1" in str(err.value)


def test_effective_weights():
    assert Experiment(key="k", variations=("a", "b", "c")).effective_weights == pytest.approx((1 / 3,) * 3)
    assert Experiment(key="k", variations=("a", "b"), weights=(0.4, 0.5999)).effective_weights == (
        0.4,
        0.5999,
    )


def test_the_suite_catches_plausible_mistakes():
    # Negative controls: each naive variant fails at least one conformance case.
    def closed_ranges(n, ranges):
        return next((i for i, (a, b) in enumerate(ranges) if a <= n <= b), -1)

    def hash_v1_seed_first(seed, value, version):
        return (fnv1a32(seed + value) % 1000) / 1000 if version == 1 else gb_hash(seed, value, version)

    def namespace_v2(unit_id, ns):
        n = gb_hash("__" + ns[0], unit_id, 2)
        return ns[1] <= n < ns[2]

    assert any(closed_ranges(n, r) != e for _, n, r, e in CASES["chooseVariation"])
    assert any(hash_v1_seed_first(s, v, ver) != e for s, v, ver, e in CASES["hash"])
    assert any(namespace_v2(u, ns) != e for _, u, ns, e in CASES["inNamespace"])


def test_definitions_from_yaml_lists_become_tuples():
    exp = Experiment(key="k", variations=["a", "b"], weights=[0.25, 0.75], namespace=["ns", 0, 0.5])  # type: ignore[arg-type]
    assert exp.variations == ("a", "b") and exp.weights == (0.25, 0.75) and exp.namespace == ("ns", 0, 0.5)
    assert exp == Experiment(key="k", variations=("a", "b"), weights=(0.25, 0.75), namespace=("ns", 0, 0.5))
    assert len({exp, exp}) == 1
