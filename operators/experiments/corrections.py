"""Multiple-comparison corrections across metrics and variants (adjusted p-values).

Both take p-values in any order and return adjusted ones in the same order, capped at 1. A NaN
(a comparison that could not be computed yet) stays NaN and is not counted in the family.

- :func:`holm`: Holm (1979) step-down; controls the family-wise error rate.
- :func:`benjamini_hochberg`: Benjamini & Hochberg (1995) step-up; controls the false discovery rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["adjust", "benjamini_hochberg", "holm"]


def _valid(p_values: Sequence[float]) -> list[int]:
    return sorted((i for i, p in enumerate(p_values) if not math.isnan(p)), key=lambda i: p_values[i])


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down: the k-th smallest p (1-based) times (m - k + 1), made non-decreasing."""
    order = _valid(p_values)
    m = len(order)
    out = [math.nan] * len(p_values)
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p_values[i]))
        out[i] = running
    return out


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """BH step-up: the k-th smallest p times m / k, made non-increasing from the largest down."""
    order = _valid(p_values)
    m = len(order)
    out = [math.nan] * len(p_values)
    running = 1.0
    for k in range(m - 1, -1, -1):
        i = order[k]
        running = min(running, m * p_values[i] / (k + 1))
        out[i] = running
    return out


_METHODS = {"holm": holm, "bh": benjamini_hochberg}


def adjust(p_values: Sequence[float], method: str = "holm") -> list[float]:
    """Adjusted p-values by ``method``: ``"holm"`` or ``"bh"``."""
    try:
        return _METHODS[method](p_values)
    except KeyError:
        raise ValueError(f"multiple-testing correction {method!r} is unknown; use 'holm' or 'bh'") from None
