"""Pairwise precision, recall and F1 of a predicted identity partition against the true one.

Counted over unordered pairs of identifiers that both partitions know (identifiers only one side
has are left out, and reported). No pair is materialised: with the contingency counts
``n_ij`` (identifiers in true person i and predicted person j), true positives are
``Σ C(n_ij, 2)``, predicted pairs ``Σ_j C(a_j, 2)``, true pairs ``Σ_i C(b_i, 2)``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class PairQuality:
    true_positive_pairs: int
    predicted_pairs: int
    true_pairs: int
    identifiers: int
    only_predicted: int
    only_true: int

    @property
    def precision(self) -> float:
        return self.true_positive_pairs / self.predicted_pairs if self.predicted_pairs else 1.0

    @property
    def recall(self) -> float:
        return self.true_positive_pairs / self.true_pairs if self.true_pairs else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def summary(self) -> str:
        return (
            f"pairwise precision {self.precision:.5f} recall {self.recall:.5f} F1 {self.f1:.5f} "
            f"(tp {self.true_positive_pairs}, predicted {self.predicted_pairs}, true {self.true_pairs}; "
            f"{self.identifiers} identifiers, {self.only_predicted} only predicted, {self.only_true} only true)"
        )


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def pairwise_quality(predicted: Mapping[str, Hashable], truth: Mapping[str, Hashable]) -> PairQuality:
    """``predicted`` and ``truth`` map identifier → cluster label (person id / real person)."""
    common = predicted.keys() & truth.keys()
    cells: Counter = Counter()
    pred_sizes: Counter = Counter()
    true_sizes: Counter = Counter()
    for i in common:
        p, t = predicted[i], truth[i]
        cells[(t, p)] += 1
        pred_sizes[p] += 1
        true_sizes[t] += 1
    return PairQuality(
        true_positive_pairs=sum(_pairs(n) for n in cells.values()),
        predicted_pairs=sum(_pairs(n) for n in pred_sizes.values()),
        true_pairs=sum(_pairs(n) for n in true_sizes.values()),
        identifiers=len(common),
        only_predicted=len(predicted.keys() - common),
        only_true=len(truth.keys() - common),
    )
