"""Experiment assignment, bucket for bucket the same as GrowthBook's SDKs.

Pure: no pyflink, no clients, no clock (``now_ms`` is an argument).

The primitives follow GrowthBook's published cross-SDK suite (vendored in
``tests/data/growthbook/cases.json``): :func:`hash` (FNV-1a 32-bit, versions 1 and 2),
:func:`get_bucket_ranges`, :func:`choose_variation` and :func:`in_namespace`. :func:`assign` follows
the order of the SDKs' ``_run`` for the features zhongtai uses (see its docstring), so an app that
runs a GrowthBook SDK and the stream put every unit in the same variation.

The FNV-1a input is the string's UTF-16 code units, as in the JavaScript SDK that the suite
belongs to (and the JVM/.NET SDKs, whose strings are UTF-16). GrowthBook's Python SDK feeds Unicode
code points instead; the two agree on every string without characters outside the Basic
Multilingual Plane (ids, UUIDs, phone numbers, e-mail addresses) and differ only on e.g. emoji.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

__all__ = [
    "Assignment",
    "Experiment",
    "assign",
    "choose_variation",
    "exclusion_reason",
    "fnv1a32",
    "get_bucket_ranges",
    "get_equal_weights",
    "hash",
    "in_namespace",
]

_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193
_MASK32 = 0xFFFFFFFF
_WEIGHT_SUM_TOLERANCE = 0.01

BucketRange = tuple[float, float]
Namespace = tuple[str, float, float]


def _field_hash(obj: object) -> int:
    # This module's global ``hash`` is GrowthBook's, and dataclass-generated ``__hash__`` looks
    # ``hash`` up in the defining module; so the frozen classes here define ``__hash__`` themselves.
    return builtins.hash(tuple(getattr(obj, f.name) for f in fields(obj)))  # type: ignore[arg-type]


def _utf16_units(text: str) -> list[int]:
    data = text.encode("utf-16-le", "surrogatepass")
    return [data[i] | (data[i + 1] << 8) for i in range(0, len(data), 2)]


def fnv1a32(text: str) -> int:
    """32-bit FNV-1a over the UTF-16 code units of ``text`` (JavaScript's ``charCodeAt``)."""
    h = _FNV_OFFSET
    for unit in _utf16_units(text):
        h = ((h ^ unit) * _FNV_PRIME) & _MASK32
    return h


def hash(seed: str, value: str, version: int) -> float | None:
    """GrowthBook's bucketing hash: a float in [0, 1), or None for an unknown version.

    Version 2 (unbiased): ``fnv1a32(str(fnv1a32(seed + value))) % 10000 / 10000``.
    Version 1 (legacy):   ``fnv1a32(value + seed) % 1000 / 1000``.
    """
    if version == 2:
        return (fnv1a32(str(fnv1a32(seed + value))) % 10000) / 10000
    if version == 1:
        return (fnv1a32(value + seed) % 1000) / 1000
    return None


def get_equal_weights(num_variations: int) -> list[float]:
    """``num_variations`` equal weights (empty below 1)."""
    if num_variations < 1:
        return []
    return [1 / num_variations] * num_variations


def get_bucket_ranges(
    num_variations: int, coverage: float = 1.0, weights: Sequence[float] | None = None
) -> list[BucketRange]:
    """Half-open [start, end) hash ranges, one per variation.

    ``coverage`` is clamped to [0, 1]. ``weights`` of the wrong length, or whose sum is outside
    [0.99, 1.01], fall back to equal weights (the SDKs do this silently). Variation i owns
    [sum(weights[:i]), sum(weights[:i]) + coverage * weights[i]).
    """
    coverage = min(max(coverage, 0.0), 1.0)
    w = list(weights) if weights is not None else get_equal_weights(num_variations)
    if len(w) != num_variations:
        w = get_equal_weights(num_variations)
    total = sum(w)
    if total < 1 - _WEIGHT_SUM_TOLERANCE or total > 1 + _WEIGHT_SUM_TOLERANCE:
        w = get_equal_weights(num_variations)
    ranges: list[BucketRange] = []
    cumulative = 0.0
    for weight in w:
        start = cumulative
        cumulative += weight
        ranges.append((start, start + coverage * weight))
    return ranges


def _in_range(n: float, bucket_range: Sequence[float]) -> bool:
    return bucket_range[0] <= n < bucket_range[1]


def choose_variation(n: float, ranges: Sequence[Sequence[float]]) -> int:
    """Index of the first range holding ``n`` (half-open), or -1 if none does."""
    for i, bucket_range in enumerate(ranges):
        if _in_range(n, bucket_range):
            return i
    return -1


def in_namespace(unit_value: str, namespace: Sequence[Any]) -> bool:
    """Whether ``unit_value`` falls in ``namespace = (id, start, end)`` (hash v1, seed ``"__" + id``)."""
    n = hash("__" + namespace[0], unit_value, 1)
    return n is not None and _in_range(n, namespace[1:3])


@dataclass(frozen=True, slots=True)
class Experiment:
    """One experiment's assignment definition (immutable; validated on construction).

    ``variations`` are the variation keys, control first. ``unit`` names the id that is hashed
    (GrowthBook's ``hashAttribute``): ``person`` or ``device``. ``hash_seed`` defaults to ``key``.
    ``weights`` (None = equal) must have one entry per variation and sum to 1 within 0.01.
    ``namespace = (id, start, end)`` makes experiments in the same namespace mutually exclusive
    when their [start, end) slices do not overlap. ``start_ms``/``stop_ms`` bound the running
    window [start_ms, stop_ms) in epoch milliseconds; None leaves that side open.

    Definitions GrowthBook's SDKs would silently never run (fewer than two variations, unknown hash
    version) or would silently re-weight (bad weights, coverage outside [0, 1]) are rejected here
    with a ValueError, so a typo in YAML is loud instead of quietly changing the split.
    """

    key: str
    variations: tuple[str, ...]
    weights: tuple[float, ...] | None = None
    coverage: float = 1.0
    hash_seed: str = ""
    unit: str = "person"
    namespace: Namespace | None = None
    hash_version: int = 2
    active: bool = True
    start_ms: int | None = None
    stop_ms: int | None = None

    def __post_init__(self) -> None:
        # YAML and JSON give lists: keep the instance immutable and hashable.
        object.__setattr__(self, "variations", tuple(self.variations))
        if self.weights is not None:
            object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))
        if self.namespace is not None:
            object.__setattr__(self, "namespace", tuple(self.namespace))
        where = f"experiment {self.key!r}"
        if not self.key:
            raise ValueError("experiment definition: key must be a non-empty string")
        if len(self.variations) < 2 or len(set(self.variations)) != len(self.variations):
            raise ValueError(f"{where}: needs at least two distinct variations, got {self.variations!r}")
        if self.weights is not None:
            if len(self.weights) != len(self.variations):
                raise ValueError(
                    f"{where}: {len(self.weights)} weights for {len(self.variations)} variations; "
                    "give one weight per variation or none for an equal split"
                )
            if any(w < 0 or not math.isfinite(w) for w in self.weights) or abs(sum(self.weights) - 1) > 0.01:
                raise ValueError(f"{where}: weights {self.weights!r} must be >= 0 and sum to 1")
        if not 0.0 <= self.coverage <= 1.0:
            raise ValueError(f"{where}: coverage {self.coverage!r} must be within [0, 1]")
        if self.hash_version not in (1, 2):
            raise ValueError(f"{where}: hash_version {self.hash_version!r} must be 1 or 2")
        if self.namespace is not None:
            ns_id, ns_start, ns_end = self.namespace
            if not ns_id or not 0.0 <= ns_start <= ns_end <= 1.0:
                raise ValueError(
                    f"{where}: namespace {self.namespace!r} must be (id, start, end), 0<=start<=end<=1"
                )
        if self.start_ms is not None and self.stop_ms is not None and self.stop_ms < self.start_ms:
            raise ValueError(f"{where}: stop_ms {self.stop_ms} is before start_ms {self.start_ms}")

    __hash__ = _field_hash

    @property
    def seed(self) -> str:
        return self.hash_seed or self.key

    @property
    def effective_weights(self) -> tuple[float, ...]:
        """The split the buckets implement (equal when ``weights`` is None)."""
        if self.weights is not None:
            return self.weights
        return tuple(get_equal_weights(len(self.variations)))


@dataclass(frozen=True, slots=True)
class Assignment:
    """A unit's variation. ``bucket`` is the hash in [0, 1) that chose it (GrowthBook's ``bucket``)."""

    experiment_key: str
    variation_id: int
    variation: str
    bucket: float
    unit: str
    unit_value: str

    __hash__ = _field_hash


def _evaluate(
    experiment: Experiment, unit_value: object, now_ms: int
) -> tuple[str | None, Assignment | None]:
    # Order of GrowthBook's _run for the features used here: variation count (checked at
    # definition), hash value present, active, namespace, [zhongtai: running window], bucket
    # ranges, hash, choose variation (-1 = not covered).
    value = "" if unit_value is None else str(unit_value)
    if value == "":
        return "no unit id", None
    if not experiment.active:
        return "inactive", None
    if experiment.namespace is not None and not in_namespace(value, experiment.namespace):
        return "not in namespace", None
    if experiment.start_ms is not None and now_ms < experiment.start_ms:
        return "not started", None
    if experiment.stop_ms is not None and now_ms >= experiment.stop_ms:
        return "stopped", None
    ranges = get_bucket_ranges(len(experiment.variations), experiment.coverage, experiment.weights)
    n = hash(experiment.seed, value, experiment.hash_version)
    if n is None:  # unreachable for a validated definition; kept to mirror the SDKs
        return "unknown hash version", None
    variation_id = choose_variation(n, ranges)
    if variation_id < 0:
        return "not covered", None
    return None, Assignment(
        experiment_key=experiment.key,
        variation_id=variation_id,
        variation=experiment.variations[variation_id],
        bucket=n,
        unit=experiment.unit,
        unit_value=value,
    )


def assign(experiment: Experiment, unit_value: object, now_ms: int) -> Assignment | None:
    """The unit's variation, or None when it is not in the experiment.

    ``unit_value`` is the id named by ``experiment.unit`` (stringified like the SDKs do; None or
    "" is never assigned). Not in the experiment, in this order: inactive, not in the namespace,
    outside [start_ms, stop_ms), not covered by the bucket ranges (coverage < 1).
    """
    return _evaluate(experiment, unit_value, now_ms)[1]


def exclusion_reason(experiment: Experiment, unit_value: object, now_ms: int) -> str | None:
    """Why :func:`assign` returns None ("no unit id", "inactive", "not in namespace", "not started",
    "stopped", "not covered"), or None when the unit is assigned."""
    return _evaluate(experiment, unit_value, now_ms)[0]
