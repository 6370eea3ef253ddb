"""Sufficient statistics per variant and the fixed-horizon tests on them.

Pure (numpy/scipy only). Everything is a function of :class:`VariantStats`, so the streaming job
keeps just seven numbers per experiment x variant and any report can be recomputed from them.

Tests (treatment vs control; differences are treatment - control):

- means (revenue per unit): Welch's unequal-variance t-test, Welch-Satterthwaite df;
- conversion rates: two-proportion z-test, pooled SE for the p-value (as statsmodels'
  ``proportions_ztest``), unpooled Wald SE for the intervals;
- relative lift ``t/c - 1``: delta method, ``var = var_t/(c^2 n_t) + t^2 var_c/(c^4 n_c)``,
  with the same critical value as the absolute interval (t for means, z for rates), as statsmodels
  and gbstats (``Comparison.relative_ci``). :func:`lift_interval` is Fieller's interval of the
  same ratio, which the report shows instead, at the fixed-horizon (:func:`fixed_lift_interval`)
  and at the always-valid critical value: it excludes 0 exactly when the difference test rejects,
  however small or skewed the arms are. Simulated (docs/experiments.md, "Proven by simulation"),
  the delta-method interval covered a skewed revenue lift 94.4 % of the time at 95 %, Fieller's
  95.8 %; and the delta-method standard error, which shrinks with the treatment's mean, made a
  peeked always-valid test on it reject 35 % of A/A tests;
- CUPED (Deng, Xu, Kohavi, Walker, WSDM 2013): each unit's metric is adjusted to
  ``y - theta (x - mean_x)`` with ``x`` the pre-exposure covariate, ``theta = cov(x, y) / var(x)``
  pooled over all units of the variants given, and ``mean_x`` their pooled mean; then the same
  Welch test on the adjusted moments;
- sample-ratio mismatch: Pearson chi-square of unit counts against the configured weights.

Sequential (always-valid) intervals live in :mod:`.sequential`, corrections in
:mod:`.corrections`; both are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from scipy import stats as _sps

from .corrections import adjust, benjamini_hochberg, holm
from .sequential import (
    DEFAULT_TARGET_N,
    sequential_halfwidth,
    sequential_interval,
    sequential_p_value,
    sequential_rho,
)

__all__ = [
    "DEFAULT_TARGET_N",
    "Comparison",
    "Moments",
    "VariantStats",
    "adjust",
    "benjamini_hochberg",
    "cuped_adjusted",
    "cuped_test",
    "cuped_theta",
    "fixed_lift_interval",
    "holm",
    "lift_interval",
    "relative_lift",
    "sequential_halfwidth",
    "sequential_interval",
    "sequential_p_value",
    "sequential_rho",
    "srm_p_value",
    "two_proportion_test",
    "welch_test",
]

NAN = math.nan
Interval = tuple[float, float]


def _sample_var(n: int, s: float, s2: float) -> float:
    """ddof=1 variance from a count, a sum and a sum of squares (clamped at 0 against rounding)."""
    if n < 2:
        return NAN
    return max(0.0, (s2 - s * s / n) / (n - 1))


def _sample_cov(n: int, sa: float, sb: float, sab: float) -> float:
    if n < 2:
        return NAN
    return (sab - sa * sb / n) / (n - 1)


@dataclass(frozen=True, slots=True)
class VariantStats:
    """Sufficient statistics of one variant; a commutative monoid under :meth:`merge`.

    Per exposed unit: ``converted`` (bool), ``y`` the revenue metric (0 when it did not convert)
    and ``x`` the pre-exposure covariate for CUPED (0 when there is none).

    n: exposed units; conversions: units that converted; sum_y, sum_y2: sum of y and y^2;
    sum_x, sum_x2, sum_xy: sum of x, x^2 and x*y.
    """

    n: int = 0
    conversions: int = 0
    sum_y: float = 0.0
    sum_y2: float = 0.0
    sum_x: float = 0.0
    sum_x2: float = 0.0
    sum_xy: float = 0.0

    def add(self, converted: bool, y: float = 0.0, x: float = 0.0) -> VariantStats:
        """These statistics with one more unit."""
        return VariantStats(
            self.n + 1,
            self.conversions + (1 if converted else 0),
            self.sum_y + y,
            self.sum_y2 + y * y,
            self.sum_x + x,
            self.sum_x2 + x * x,
            self.sum_xy + x * y,
        )

    def merge(self, other: VariantStats) -> VariantStats:
        """Statistics of the union of two disjoint sets of units."""
        return VariantStats(
            self.n + other.n,
            self.conversions + other.conversions,
            self.sum_y + other.sum_y,
            self.sum_y2 + other.sum_y2,
            self.sum_x + other.sum_x,
            self.sum_x2 + other.sum_x2,
            self.sum_xy + other.sum_xy,
        )

    @classmethod
    def from_units(cls, rows: Iterable[Sequence[Any]]) -> VariantStats:
        """From per-unit rows ``(converted, y)`` or ``(converted, y, x)``."""
        acc = cls()
        for row in rows:
            acc = acc.add(*row)
        return acc

    @property
    def rate(self) -> float:
        return self.conversions / self.n if self.n else NAN

    @property
    def mean(self) -> float:
        return self.sum_y / self.n if self.n else NAN

    @property
    def variance(self) -> float:
        return _sample_var(self.n, self.sum_y, self.sum_y2)

    @property
    def mean_x(self) -> float:
        return self.sum_x / self.n if self.n else NAN

    @property
    def variance_x(self) -> float:
        return _sample_var(self.n, self.sum_x, self.sum_x2)

    @property
    def covariance_xy(self) -> float:
        return _sample_cov(self.n, self.sum_x, self.sum_y, self.sum_xy)

    def moments(self) -> Moments:
        """n, mean and ddof=1 variance of the revenue metric."""
        return Moments(self.n, self.mean, self.variance)


@dataclass(frozen=True, slots=True)
class Moments:
    """What a two-sample test needs from one arm: n, mean, ddof=1 variance."""

    n: int
    mean: float
    variance: float


@dataclass(frozen=True, slots=True)
class Comparison:
    """Treatment vs control on one metric (fixed horizon).

    ``difference = treatment - control``; ``relative = treatment / control - 1``; the intervals are
    two-sided at ``1 - alpha``. ``df`` is inf for z-tests. ``control_se`` and ``treatment_se`` are
    the standard errors of each arm's mean (``difference_se`` is their root sum of squares). NaN
    where the data cannot support the test yet (fewer than 2 units in an arm, zero variance, a zero
    control mean for ``relative``).
    """

    method: str
    control: float
    treatment: float
    difference: float
    difference_se: float
    difference_ci: Interval
    relative: float
    relative_se: float
    relative_ci: Interval
    statistic: float
    df: float
    p_value: float
    alpha: float
    control_se: float = NAN
    treatment_se: float = NAN


def relative_lift(control: Moments, treatment: Moments) -> tuple[float, float]:
    """(treatment.mean / control.mean - 1, its delta-method standard error); NaNs if undefined."""
    c, t = control.mean, treatment.mean
    if not (c and math.isfinite(c) and math.isfinite(t) and control.n > 0 and treatment.n > 0):
        return NAN, NAN
    var = treatment.variance / (c * c * treatment.n) + t * t * control.variance / (c**4 * control.n)
    return t / c - 1.0, math.sqrt(var) if var >= 0 else NAN


def _interval(estimate: float, se: float, crit: float) -> Interval:
    return (estimate - crit * se, estimate + crit * se)


def lift_interval(
    control_mean: float, control_se: float, treatment_mean: float, treatment_se: float, critical: float
) -> Interval:
    """Fieller's interval for the relative lift ``t / c - 1`` of two independent means.

    Every ``r`` with ``|t - (1 + r) c| <= critical * sqrt(se_t^2 + (1 + r)^2 se_c^2)``: so it
    excludes 0 exactly when ``|t - c| > critical * sqrt(se_t^2 + se_c^2)``, the difference test at
    that critical value. ``(-inf, inf)`` when the control mean is within ``critical`` standard
    errors of 0 (the set is then unbounded); NaNs when an input is not finite.
    """
    c, t, q = control_mean, treatment_mean, critical
    if not all(math.isfinite(v) for v in (c, t, control_se, treatment_se, q)):
        return (NAN, NAN)
    q2, vc, vt = q * q, control_se * control_se, treatment_se * treatment_se
    a = c * c - q2 * vc
    if a <= 0:
        return (-math.inf, math.inf)
    root = math.sqrt(q2 * (t * t * vc + a * vt))  # the discriminant, >= 0 when a > 0
    return ((t * c - root) / a - 1.0, (t * c + root) / a - 1.0)


def welch_test(
    control: Moments, treatment: Moments, alpha: float = 0.05, method: str = "welch"
) -> Comparison:
    """Welch's t-test of equal means (``scipy.stats.ttest_ind(equal_var=False)``), with intervals."""
    diff = treatment.mean - control.mean
    rel, rel_se = relative_lift(control, treatment)
    if control.n < 2 or treatment.n < 2:
        return _undefined(method, control.mean, treatment.mean, diff, rel, alpha)
    vc, vt = control.variance / control.n, treatment.variance / treatment.n
    se = math.sqrt(vc + vt)
    if se == 0:
        return _undefined(method, control.mean, treatment.mean, diff, rel, alpha)
    df = (vc + vt) ** 2 / (vc * vc / (control.n - 1) + vt * vt / (treatment.n - 1))
    stat = diff / se
    p = float(2.0 * _sps.t.sf(abs(stat), df))
    crit = float(_sps.t.ppf(1.0 - alpha / 2.0, df))
    return Comparison(
        method, control.mean, treatment.mean, diff, se, _interval(diff, se, crit),
        rel, rel_se, _interval(rel, rel_se, crit), stat, df, p, alpha, math.sqrt(vc), math.sqrt(vt),
    )  # fmt: skip


def fixed_lift_interval(comparison: Comparison) -> Interval:
    """Fieller's :func:`lift_interval` of ``comparison``'s relative lift at its own level and test
    (t with its df, z when df is inf); NaNs when the comparison is undefined."""
    c = comparison
    if math.isnan(c.df):
        return (NAN, NAN)
    level = 1.0 - c.alpha / 2.0
    crit = float(_sps.norm.ppf(level)) if math.isinf(c.df) else float(_sps.t.ppf(level, c.df))
    return lift_interval(c.control, c.control_se, c.treatment, c.treatment_se, crit)


def two_proportion_test(
    control_conversions: int,
    control_n: int,
    treatment_conversions: int,
    treatment_n: int,
    alpha: float = 0.05,
) -> Comparison:
    """Two-proportion z-test (pooled SE, as ``statsmodels.stats.proportion.proportions_ztest``);
    Wald intervals with unpooled SE (as ``confint_proportions_2indep(method="wald")``)."""
    method = "two-proportion z"
    pc = control_conversions / control_n if control_n else NAN
    pt = treatment_conversions / treatment_n if treatment_n else NAN
    diff = pt - pc
    c = Moments(control_n, pc, pc * (1.0 - pc))
    t = Moments(treatment_n, pt, pt * (1.0 - pt))
    rel, rel_se = relative_lift(c, t)
    if not control_n or not treatment_n:
        return _undefined(method, pc, pt, diff, rel, alpha)
    pooled = (control_conversions + treatment_conversions) / (control_n + treatment_n)
    se0 = math.sqrt(pooled * (1.0 - pooled) * (1.0 / control_n + 1.0 / treatment_n))
    se = math.sqrt(c.variance / control_n + t.variance / treatment_n)
    if se0 == 0:
        return _undefined(method, pc, pt, diff, rel, alpha)
    stat = diff / se0
    p = float(2.0 * _sps.norm.sf(abs(stat)))
    crit = float(_sps.norm.ppf(1.0 - alpha / 2.0))
    return Comparison(
        method, pc, pt, diff, se, _interval(diff, se, crit),
        rel, rel_se, _interval(rel, rel_se, crit), stat, math.inf, p, alpha,
        math.sqrt(c.variance / control_n), math.sqrt(t.variance / treatment_n),
    )  # fmt: skip


def _undefined(method: str, c: float, t: float, diff: float, rel: float, alpha: float) -> Comparison:
    return Comparison(method, c, t, diff, NAN, (NAN, NAN), rel, NAN, (NAN, NAN), NAN, NAN, NAN, alpha)


def cuped_theta(variants: Iterable[VariantStats]) -> float:
    """``cov(x, y) / var(x)`` over all units of ``variants`` pooled (0 when var(x) is 0 or n < 2)."""
    pooled = VariantStats()
    for v in variants:
        pooled = pooled.merge(v)
    var_x = pooled.variance_x
    if not (pooled.n >= 2 and var_x > 0):
        return 0.0
    return pooled.covariance_xy / var_x


def cuped_adjusted(stats: VariantStats, theta: float, mean_x: float) -> Moments:
    """Moments of ``y - theta (x - mean_x)`` over the variant's units."""
    if stats.n == 0:
        return Moments(0, NAN, NAN)
    mean = stats.mean - theta * (stats.mean_x - mean_x)
    if stats.n < 2:
        return Moments(stats.n, mean, NAN)
    var = stats.variance + theta * theta * stats.variance_x - 2.0 * theta * stats.covariance_xy
    return Moments(stats.n, mean, max(0.0, var))


def cuped_test(
    control: VariantStats,
    treatment: VariantStats,
    alpha: float = 0.05,
    theta: float | None = None,
    mean_x: float | None = None,
) -> tuple[Comparison, float]:
    """CUPED-adjusted Welch test and the theta used.

    ``theta`` and ``mean_x`` default to the pair's pooled values; pass the values pooled over all
    variants of the experiment to use one adjustment for every comparison (as the report does).
    """
    if theta is None:
        theta = cuped_theta((control, treatment))
    if mean_x is None:
        both = control.merge(treatment)
        mean_x = both.mean_x if both.n else 0.0
    method = "welch+cuped" if theta != 0.0 else "welch"
    return welch_test(
        cuped_adjusted(control, theta, mean_x), cuped_adjusted(treatment, theta, mean_x), alpha, method
    ), theta


def srm_p_value(counts: Sequence[int], weights: Sequence[float]) -> float:
    """Pearson chi-square p-value of ``counts`` against the split ``weights`` (normalised).

    Variants with weight 0 are left out of the test (and its degrees of freedom); any unit counted
    in one is a mismatch by definition and gives 0.0. No units at all gives 1.0.
    """
    if len(counts) != len(weights):
        raise ValueError(f"srm_p_value: {len(counts)} counts for {len(weights)} weights")
    if any(c > 0 for c, w in zip(counts, weights) if w <= 0):
        return 0.0
    pairs = [(c, w) for c, w in zip(counts, weights) if w > 0]
    total = sum(c for c, _ in pairs)
    if total == 0 or len(pairs) < 2:
        return 1.0
    weight_sum = sum(w for _, w in pairs)
    chi2 = 0.0
    for c, w in pairs:
        expected = total * w / weight_sum
        chi2 += (c - expected) ** 2 / expected
    return float(_sps.chi2.sf(chi2, len(pairs) - 1))
