"""The statistics engine against scipy, statsmodels and gbstats on the same inputs.

Every test here builds :class:`VariantStats` from per-unit rows (or literal sums) and compares the
engine, which only sees the sums, with a reference that sees the raw data: to 1e-9 relative where
the formulas are the same. Numbers labelled "gbstats 0.8.0" were computed with GrowthBook's stats
engine (``gbstats==0.8.0`` from PyPI, ``SequentialTwoSidedTTest``/``TwoSidedTTest``/
``compute_theta``/``check_srm``) on exactly these sums; gbstats pins numpy<2 and pandas<2, so it
cannot be installed next to PyFlink and its outputs are kept here as literals.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats._delta_method import NonlinearDeltaCov
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from operators.experiments.sequential import (
    sequential_critical,
    sequential_detectable_effect,
    sequential_power,
)
from operators.experiments.stats import (
    Moments,
    VariantStats,
    adjust,
    benjamini_hochberg,
    cuped_adjusted,
    cuped_test,
    cuped_theta,
    fixed_lift_interval,
    holm,
    lift_interval,
    relative_lift,
    sequential_halfwidth,
    sequential_interval,
    sequential_p_value,
    sequential_rho,
    srm_p_value,
    two_proportion_test,
    welch_test,
)
from tests.helpers import ROOT

REL = 1e-9


def close(a, b, rel=REL):
    return a == pytest.approx(b, rel=rel, abs=0)


def _arm(rng, n, p, mu, sd, with_x=False, slope=0.0):
    conv = rng.random(n) < p
    x = rng.gamma(2.0, 10.0, n) if with_x else np.zeros(n)
    y = np.where(conv, mu + slope * x + rng.normal(0, sd, n), 0.0)
    return conv, y, x


def _stats(conv, y, x):
    return VariantStats.from_units(zip(conv.tolist(), y.tolist(), x.tolist()))


# ---- sufficient statistics ---------------------------------------------------------------------


def test_variant_stats_hold_the_sums_and_moments_of_the_units():
    rng = np.random.default_rng(7)
    conv, y, x = _arm(rng, 500, 0.3, 40.0, 12.0, with_x=True, slope=0.8)
    s = _stats(conv, y, x)
    assert (s.n, s.conversions) == (500, int(conv.sum()))
    assert close(s.sum_y, y.sum()) and close(s.sum_y2, (y * y).sum()) and close(s.sum_xy, (x * y).sum())
    assert close(s.rate, conv.mean()) and close(s.mean, y.mean())
    assert close(s.variance, y.var(ddof=1)) and close(s.variance_x, x.var(ddof=1))
    assert close(s.covariance_xy, np.cov(x, y, ddof=1)[0, 1])
    assert s.moments() == Moments(500, s.mean, s.variance)


def test_merge_is_a_commutative_monoid_and_equals_pooling_the_units():
    # integer-valued rows keep every float sum exact, so equality is exact
    rows = [(i % 3 == 0, float(i % 17), float(i % 5)) for i in range(300)]
    a, b, c = (VariantStats.from_units(rows[k : k + 100]) for k in (0, 100, 200))
    assert a.merge(b).merge(c) == a.merge(b.merge(c)) == VariantStats.from_units(rows)
    assert a.merge(b) == b.merge(a)
    assert a.merge(VariantStats()) == a == VariantStats().merge(a)
    assert a.add(True, 2.0, 3.0) == a.merge(VariantStats.from_units([(True, 2.0, 3.0)]))
    assert VariantStats.from_units([(False, 0.0)]) == VariantStats(n=1)
    with pytest.raises(AttributeError):
        a.n = 0  # type: ignore[misc]


def test_empty_and_single_unit_statistics_are_nan_not_errors():
    assert math.isnan(VariantStats().rate) and math.isnan(VariantStats().mean)
    assert math.isnan(VariantStats(n=1, sum_y=3.0, sum_y2=9.0).variance)


# ---- Welch t-test -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed, n_c, n_t, p_c, p_t, mu_t", [
    (1, 2000, 2100, 0.5, 0.5, 52.0),
    (2, 150, 90, 0.2, 0.35, 60.0),
    (3, 5000, 5000, 0.05, 0.05, 50.0),
    (4, 30, 400, 1.0, 1.0, 49.0),
])  # fmt: skip
def test_welch_matches_scipy_ttest_ind_unequal_var(seed, n_c, n_t, p_c, p_t, mu_t):
    rng = np.random.default_rng(seed)
    c = _arm(rng, n_c, p_c, 50.0, 15.0)
    t = _arm(rng, n_t, p_t, mu_t, 25.0)
    got = welch_test(_stats(*c).moments(), _stats(*t).moments(), alpha=0.05)
    ref = sps.ttest_ind(t[1], c[1], equal_var=False)
    assert close(got.statistic, ref.statistic) and close(got.p_value, ref.pvalue) and close(got.df, ref.df)
    for level, alpha in ((0.95, 0.05), (0.9, 0.1)):
        ci = sps.ttest_ind(t[1], c[1], equal_var=False).confidence_interval(level)
        mine = welch_test(_stats(*c).moments(), _stats(*t).moments(), alpha=alpha).difference_ci
        assert close(mine[0], ci.low) and close(mine[1], ci.high)
    assert close(got.difference, t[1].mean() - c[1].mean())
    assert got.method == "welch" and got.df < math.inf


def test_relative_lift_matches_statsmodels_delta_method():
    rng = np.random.default_rng(11)
    c, t = _stats(*_arm(rng, 3000, 0.4, 50, 20)), _stats(*_arm(rng, 3100, 0.42, 53, 22))
    lift, se = relative_lift(c.moments(), t.moments())
    delta = NonlinearDeltaCov(
        lambda p: np.array([p[1] / p[0] - 1.0]),
        np.array([c.mean, t.mean]),
        np.diag([c.variance / c.n, t.variance / t.n]),
    )
    assert close(lift, float(delta.predicted()[0]))
    assert close(se, float(delta.se_vectorized()[0]), rel=1e-6)  # statsmodels differentiates numerically


# gbstats 0.8.0, SampleMeanStatistic(n, sum, sum_squares) pairs, difference_type relative / absolute
MEANS_A = VariantStats(n=3407, sum_y=76824.0, sum_y2=2253860.0)
MEANS_B = VariantStats(n=3500, sum_y=80000.0, sum_y2=2300000.0)
MEANS_B_BIG = VariantStats(n=3500, sum_y=84000.0, sum_y2=2506000.0)


def test_welch_relative_and_absolute_match_gbstats():
    r = welch_test(MEANS_A.moments(), MEANS_B.moments())
    assert close(r.relative, 0.013671322949673477)
    assert close(r.relative_se, 0.012905106930060698)
    assert close(r.relative_ci[0], -0.01162669283172958) and close(r.relative_ci[1], 0.03896933873107653)
    assert close(r.difference, 0.30827288355905935) and close(r.difference_se, 0.2888616971899376)
    assert close(r.difference_ci[0], -0.25798571575031826) and close(r.difference_ci[1], 0.874531482868437)
    assert close(r.p_value, 0.2859196498655583, rel=1e-8)  # gbstats: 2 * (1 - cdf), we use 2 * sf
    big = welch_test(MEANS_A.moments(), MEANS_B_BIG.moments())
    assert close(big.relative_ci[0], 0.03813986132681957) and close(big.relative_ci[1], 0.09056991686749469)
    assert close(big.difference_ci[0], 0.879749283043148) and close(big.difference_ci[1], 2.0225107697892555)
    assert close(big.p_value, 6.561393657289472e-07, rel=1e-6)  # gbstats' 1 - cdf loses digits here


def test_welch_is_undefined_below_two_units_or_with_zero_variance():
    one = VariantStats(n=1, sum_y=5.0, sum_y2=25.0).moments()
    assert math.isnan(welch_test(one, MEANS_A.moments()).p_value)
    flat = VariantStats(n=10, sum_y=10.0, sum_y2=10.0).moments()
    r = welch_test(flat, flat)
    assert math.isnan(r.p_value) and math.isnan(r.difference_ci[0]) and r.difference == 0.0


# ---- two proportions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "xc, nc, xt, nt",
    [(500, 5000, 600, 5000), (500, 5000, 561, 5100), (3, 40, 9, 45), (1200, 10000, 1190, 9900)],
)
def test_two_proportions_match_statsmodels(xc, nc, xt, nt):
    got = two_proportion_test(xc, nc, xt, nt, alpha=0.05)
    z, p = proportions_ztest([xt, xc], [nt, nc])
    assert close(got.statistic, z) and close(got.p_value, p)
    lo, hi = confint_proportions_2indep(xt, nt, xc, nc, method="wald", compare="diff", alpha=0.05)
    assert close(got.difference_ci[0], lo) and close(got.difference_ci[1], hi)
    pc, pt = xc / nc, xt / nt
    delta = NonlinearDeltaCov(
        lambda q: np.array([q[1] / q[0] - 1.0]),
        np.array([pc, pt]),
        np.diag([pc * (1 - pc) / nc, pt * (1 - pt) / nt]),
    )
    lo, hi = delta.conf_int(alpha=0.05)[0]
    assert (
        close(got.relative, pt / pc - 1)
        and close(got.relative_ci[0], lo, 1e-6)
        and close(got.relative_ci[1], hi, 1e-6)
    )
    assert got.df == math.inf and got.method == "two-proportion z"


def test_two_proportions_with_no_units_or_no_conversions():
    assert math.isnan(two_proportion_test(0, 0, 5, 100).p_value)
    r = two_proportion_test(0, 100, 0, 100)
    assert math.isnan(r.p_value) and math.isnan(r.relative)
    r = two_proportion_test(0, 100, 4, 100)
    assert not math.isnan(r.p_value) and math.isnan(r.relative)  # no relative lift over a zero rate


# ---- sample ratio mismatch ----------------------------------------------------------------------


@pytest.mark.parametrize("counts, weights", [
    ([5000, 5100], [0.5, 0.5]),
    ([5000, 5300, 4700], [1 / 3] * 3),
    ([9100, 880], [0.9, 0.1]),
    ([120, 80, 40, 60], [0.4, 0.2, 0.2, 0.2]),
])  # fmt: skip
def test_srm_matches_scipy_chisquare(counts, weights):
    expected = [sum(counts) * w / sum(weights) for w in weights]
    assert close(srm_p_value(counts, weights), sps.chisquare(counts, expected).pvalue)


def test_srm_matches_gbstats_and_handles_edges():
    assert close(srm_p_value([5000, 5100, 4800], [0.34, 0.33, 0.33]), 0.0053676641203380705)  # gbstats 0.8.0
    assert srm_p_value([0, 0], [0.5, 0.5]) == 1.0
    assert srm_p_value([100, 0, 95], [0.5, 0.0, 0.5]) == pytest.approx(
        sps.chisquare([100, 95]).pvalue, rel=REL
    )
    assert srm_p_value([100, 3, 95], [0.5, 0.0, 0.5]) == 0.0  # units where none should be
    with pytest.raises(ValueError, match="3 counts for 2 weights"):
        srm_p_value([1, 2, 3], [0.5, 0.5])


# ---- CUPED ----------------------------------------------------------------------------------------


def _cuped_data(seed):
    rng = np.random.default_rng(seed)
    arms = []
    for n, lift in ((4000, 0.0), (4200, 1.5)):
        x = rng.gamma(2.0, 15.0, n)  # pre-exposure spend
        conv = rng.random(n) < 0.6
        y = np.where(conv, 20.0 + lift + 0.9 * x + rng.normal(0, 8.0, n), 0.0)
        arms.append((conv, y, x))
    return arms


def test_cuped_theta_is_the_pooled_regression_slope():
    (cc, yc, xc), (ct, yt, xt) = _cuped_data(5)
    x, y = np.concatenate([xc, xt]), np.concatenate([yc, yt])
    theta = cuped_theta([_stats(cc, yc, xc), _stats(ct, yt, xt)])
    assert close(theta, np.cov(x, y, ddof=1)[0, 1] / x.var(ddof=1))
    assert close(theta, np.polyfit(x, y, 1)[0], rel=1e-8)  # OLS slope of y on x


def test_cuped_matches_welch_on_regression_adjusted_units():
    (cc, yc, xc), (ct, yt, xt) = _cuped_data(6)
    c, t = _stats(cc, yc, xc), _stats(ct, yt, xt)
    x, y = np.concatenate([xc, xt]), np.concatenate([yc, yt])
    theta = np.cov(x, y, ddof=1)[0, 1] / x.var(ddof=1)
    adj_c, adj_t = yc - theta * (xc - x.mean()), yt - theta * (xt - x.mean())
    got, used = cuped_test(c, t, alpha=0.05)
    ref = sps.ttest_ind(adj_t, adj_c, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert close(used, theta) and got.method == "welch+cuped"
    assert close(got.control, adj_c.mean()) and close(got.treatment, adj_t.mean())
    assert close(got.statistic, ref.statistic) and close(got.p_value, ref.pvalue) and close(got.df, ref.df)
    assert close(got.difference_ci[0], ci.low) and close(got.difference_ci[1], ci.high)
    m = cuped_adjusted(t, theta, x.mean())
    assert close(m.variance, adj_t.var(ddof=1)) and close(m.mean, adj_t.mean())
    # the point of CUPED: the standard error shrinks by about sqrt(1 - corr(x, y)^2)
    plain = welch_test(c.moments(), t.moments())
    corr = np.corrcoef(x, y)[0, 1]
    assert got.difference_se / plain.difference_se == pytest.approx(math.sqrt(1 - corr**2), rel=0.02)
    assert got.difference_se < 0.95 * plain.difference_se


def test_cuped_without_a_covariate_is_plain_welch():
    rng = np.random.default_rng(8)
    c, t = _stats(*_arm(rng, 800, 0.5, 30, 9)), _stats(*_arm(rng, 820, 0.5, 31, 9))
    got, theta = cuped_test(c, t)
    plain = welch_test(c.moments(), t.moments())
    assert theta == 0.0 and got.method == "welch"
    assert got.p_value == plain.p_value and got.difference_ci == plain.difference_ci


# gbstats 0.8.0: RegressionAdjustedStatistic over these sums, compute_theta, TwoSidedTTest(absolute)
CUPED_A = VariantStats(
    n=2000, sum_y=20000.0, sum_y2=260000.0, sum_x=19000.0, sum_x2=200000.0, sum_xy=200000.0
)
CUPED_B = VariantStats(
    n=2100, sum_y=21630.0, sum_y2=285000.0, sum_x=19950.0, sum_x2=210000.0, sum_xy=215985.0
)


def test_cuped_matches_gbstats():
    got, theta = cuped_test(CUPED_A, CUPED_B)
    assert close(theta, 0.5128205128205128)
    assert close(got.difference, 0.3000000000000007, rel=1e-8)
    assert close(got.difference_se, 0.1631464116764222)
    assert close(got.difference_ci[0], -0.01985585483305663, rel=1e-8)
    assert close(got.difference_ci[1], 0.619855854833058, rel=1e-8)
    assert close(got.p_value, 0.06601139541948453, rel=1e-8)


# ---- multiple testing ---------------------------------------------------------------------------


P_FAMILIES = [
    [0.01, 0.04, 0.03, 0.005, 0.2],
    [0.001, 0.001, 0.04, 0.04, 0.5, 0.9],  # ties
    [0.3],
    list(np.random.default_rng(3).uniform(0, 0.1, 12)),
    [0.9, 0.95, 0.99, 0.5],
]


@pytest.mark.parametrize("p", P_FAMILIES)
def test_holm_and_bh_match_statsmodels_multipletests(p):
    assert np.allclose(holm(p), multipletests(p, method="holm")[1], rtol=REL, atol=0)
    assert np.allclose(benjamini_hochberg(p), multipletests(p, method="fdr_bh")[1], rtol=REL, atol=0)
    assert adjust(p, "holm") == holm(p) and adjust(p, "bh") == benjamini_hochberg(p)


def test_corrections_leave_nan_out_of_the_family():
    got = holm([0.01, math.nan, 0.04])
    assert math.isnan(got[1]) and np.allclose([got[0], got[2]], multipletests([0.01, 0.04], method="holm")[1])
    got = benjamini_hochberg([math.nan, 0.01, 0.04])
    assert math.isnan(got[0]) and np.allclose(got[1:], multipletests([0.01, 0.04], method="fdr_bh")[1])
    with pytest.raises(ValueError, match="'bonferoni' is unknown"):
        adjust([0.1], "bonferoni")


# ---- sequential (asymptotic confidence sequences) -----------------------------------------------


def test_rho_follows_eq_161():
    a = 0.05
    assert close(
        sequential_rho(a, 5000), math.sqrt((-2 * math.log(a) + math.log(-2 * math.log(a) + 1)) / 5000)
    )
    with pytest.raises(ValueError):
        sequential_rho(1.0, 5000)
    with pytest.raises(ValueError):
        sequential_rho(0.05, 0)


@pytest.mark.parametrize("b, relative, target, alpha, ci, p", [
    (MEANS_B, True, 5000, 0.05, (-0.02556992515430217, 0.052912571053649125), 1.0),
    (MEANS_B, True, 1000, 0.1, (-0.024168882997073822, 0.05151152889642078), 1.0),
    (MEANS_B, True, 20000, 0.05, (-0.027093654990893917, 0.054436300890240874), 1.0),
    (MEANS_B, False, 5000, 0.05, (-0.5700843116658632, 1.1866300787839819), 1.0),
    (MEANS_B_BIG, True, 5000, 0.05, (0.023691187217297245, 0.10501859097701702), 8.520508053174461e-05),
    (MEANS_B_BIG, True, 1000, 0.1, (0.025143015672184667, 0.1035667625221296), 8.107144176267814e-05),
    (MEANS_B_BIG, False, 5000, 0.05, (0.5648270855242415, 2.3374329673081617), 4.041709876730713e-05),
    (MEANS_B_BIG, False, 1000, 0.1, (0.596471027658164, 2.3057890251742394), 3.658704737025421e-05),
])  # fmt: skip
def test_sequential_means_match_gbstats(b, relative, target, alpha, ci, p):
    r = welch_test(MEANS_A.moments(), b.moments(), alpha)
    est, se = (r.relative, r.relative_se) if relative else (r.difference, r.difference_se)
    n = MEANS_A.n + b.n
    lo, hi = sequential_interval(est, se, n, alpha, target)
    assert close(lo, ci[0]) and close(hi, ci[1])
    assert close(sequential_p_value(est, se, n, alpha, target), p)


@pytest.mark.parametrize("xt, nt, relative, target, alpha, ci, p", [
    (561, 5100, True, 5000, 0.05, (-0.09601948391869553, 0.2960194839186954), 1.0),
    (561, 5100, False, 1000, 0.1, (-0.008210664267699484, 0.028210664267699474), 1.0),
    (600, 5000, True, 5000, 0.05, (-0.00997359727064312, 0.4099735972706429), 0.07525514683349295),
    (600, 5000, True, 1000, 0.1, (-0.004692461444449625, 0.4046924614444494), 0.12198283404652979),
    (600, 5000, False, 5000, 0.05, (0.0008516897655296875, 0.039148310234470296), 0.03348600165745385),
    (600, 5000, False, 1000, 0.1, (0.001333297112857193, 0.03866670288714279), 0.052273825991167984),
])  # fmt: skip
def test_sequential_proportions_match_gbstats(xt, nt, relative, target, alpha, ci, p):
    r = two_proportion_test(500, 5000, xt, nt, alpha)
    est, se = (r.relative, r.relative_se) if relative else (r.difference, r.difference_se)
    lo, hi = sequential_interval(est, se, 5000 + nt, alpha, target)
    assert close(lo, ci[0], 1e-8) and close(hi, ci[1], 1e-8)  # gbstats' p is 0.1 + 1e-17-ish noise
    assert close(sequential_p_value(est, se, 5000 + nt, alpha, target), p, 1e-8)


@pytest.mark.parametrize("n", [20, 100, 1000, 5000, 50_000, 1_000_000])
@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.1])
def test_sequential_interval_contains_and_is_wider_than_the_fixed_interval(n, alpha):
    half = n // 2
    for r in (
        two_proportion_test(int(0.1 * half), half, int(0.11 * half), half, alpha),
        welch_test(Moments(half, 10.0, 25.0), Moments(half, 10.3, 30.0), alpha),
    ):
        for est, se, fixed in (
            (r.difference, r.difference_se, r.difference_ci),
            (r.relative, r.relative_se, r.relative_ci),
        ):
            lo, hi = sequential_interval(est, se, n, alpha)
            assert lo < fixed[0] and fixed[1] < hi
            assert hi - lo > fixed[1] - fixed[0]


def test_sequential_p_value_agrees_with_the_interval():
    for est in np.linspace(-0.2, 0.2, 81):
        lo, hi = sequential_interval(est, 0.04, 4000, 0.05, 5000)
        p = sequential_p_value(est, 0.04, 4000, 0.05, 5000)
        assert (p <= 0.05) == (lo > 0 or hi < 0)
    assert math.isnan(sequential_p_value(0.1, 0.0, 100)) and math.isnan(sequential_halfwidth(math.nan, 100))


def test_sequential_interval_is_tightest_at_its_target():
    per_unit_se = lambda n: 3.0 / math.sqrt(n)
    at = lambda n, target: sequential_halfwidth(per_unit_se(n), n, 0.05, target)
    assert at(5000, 5000) < at(5000, 1250) and at(5000, 5000) < at(5000, 20000)
    assert at(1250, 1250) < at(1250, 5000)


def test_peeking_after_every_batch_keeps_the_false_positive_rate_only_with_the_sequential_test():
    # A/A test (no effect) looked at every 100 units up to 10,000: the fixed-horizon z-test,
    # peeked at, "finds" an effect far more often than alpha; the confidence sequence does not.
    rng = np.random.default_rng(2024)
    runs, looks, batch, alpha = 400, 100, 100, 0.05
    a = rng.normal(0, 1, (runs, looks * batch)).cumsum(axis=1)[:, batch - 1 :: batch]
    b = rng.normal(0, 1, (runs, looks * batch)).cumsum(axis=1)[:, batch - 1 :: batch]
    n_arm = batch * np.arange(1, looks + 1)
    diff = (b - a) / n_arm
    se = np.sqrt(2.0 / n_arm)
    z = sps.norm.ppf(1 - alpha / 2)
    fixed_fp = np.mean(np.any(np.abs(diff) > z * se, axis=1))
    half = np.array([sequential_halfwidth(s, 2 * n, alpha, 5000) for s, n in zip(se, n_arm)])
    seq_fp = np.mean(np.any(np.abs(diff) > half, axis=1))
    assert fixed_fp > 0.2  # the negative control: peeking breaks the fixed test
    assert seq_fp <= alpha


def test_critical_value_power_and_detectable_effect():
    for n in (10, 1000, 5000, 10**6):
        assert close(sequential_halfwidth(0.3, n, 0.05, 5000), 0.3 * sequential_critical(n, 0.05, 5000))
        assert sequential_critical(n, 0.05, 5000) > math.sqrt(2 * math.log(20))
    se, n = 0.02, 5000
    mde = sequential_detectable_effect(se, n)
    assert sequential_power(mde, se, n) == pytest.approx(0.8, abs=1e-6)  # the far tail adds < 1e-6
    assert sequential_power(-mde, se, n) == sequential_power(mde, se, n)
    assert sequential_power(0.0, se, n) < 0.05 and sequential_power(2 * mde, se, n) > 0.99
    # against the fixed-horizon test: the same power costs (c + 0.84)^2 / (1.96 + 0.84)^2 ~ 1.9x the units
    fixed_mde = (sps.norm.ppf(0.975) + sps.norm.ppf(0.8)) * se
    assert 1.3 < mde / fixed_mde < 1.45
    assert math.isnan(sequential_power(0.1, 0.0, n)) and math.isnan(sequential_detectable_effect(math.nan, n))
    with pytest.raises(ValueError, match="power"):
        sequential_detectable_effect(se, n, power=1.0)
    with pytest.raises(ValueError, match="n 0"):
        sequential_critical(0)


@pytest.mark.parametrize("c, se_c, t, se_t, q", [
    (10.0, 0.5, 11.0, 0.6, 1.96), (10.0, 0.5, 11.0, 0.6, 3.5), (0.05, 0.004, 0.03, 0.003, 3.0),
    (2.0, 0.2, 0.1, 0.05, 2.5), (-4.0, 0.5, -3.0, 0.4, 1.96),
])  # fmt: skip
def test_lift_interval_is_fiellers_set(c, se_c, t, se_t, q):
    lo, hi = lift_interval(c, se_c, t, se_t, q)
    r = np.linspace(lo - 1.0, hi + 1.0, 20001)
    inside = np.abs(t - (1 + r) * c) <= q * np.sqrt(se_t**2 + (1 + r) ** 2 * se_c**2)
    assert r[inside].min() == pytest.approx(lo, abs=2e-4) and r[inside].max() == pytest.approx(hi, abs=2e-4)
    assert inside[(r >= lo + 1e-3) & (r <= hi - 1e-3)].all()
    # it excludes 0 exactly when the difference test at q rejects
    assert (lo > 0 or hi < 0) == (abs(t - c) > q * math.hypot(se_c, se_t))


def test_fixed_lift_interval_is_fiellers_at_the_comparisons_own_critical_value():
    z = two_proportion_test(100, 1000, 130, 1000, alpha=0.1)
    assert fixed_lift_interval(z) == lift_interval(z.control, z.control_se, z.treatment, z.treatment_se,
                                                   sps.norm.ppf(0.95))  # fmt: skip
    w = welch_test(Moments(50, 10.0, 25.0), Moments(40, 12.0, 36.0))
    lo, hi = fixed_lift_interval(w)
    crit = sps.t.ppf(0.975, w.df)
    assert (lo, hi) == lift_interval(10.0, w.control_se, 12.0, w.treatment_se, crit)
    # excludes 0 exactly when Welch's p < alpha; close to the delta-method interval on large samples
    assert (lo > 0) == (w.p_value < 0.05)
    big = two_proportion_test(10_000, 100_000, 10_300, 100_000)
    assert fixed_lift_interval(big) == pytest.approx(big.relative_ci, abs=2e-3)
    assert all(math.isnan(v) for v in fixed_lift_interval(welch_test(Moments(1, 1.0, 0.0), Moments(5, 1.0, 1.0))))


def test_lift_interval_is_unbounded_near_a_zero_control_and_nan_when_undefined():
    assert lift_interval(1.0, 0.6, 2.0, 0.5, 1.96) == (-math.inf, math.inf)  # control within 1.96 SE of 0
    assert all(math.isnan(v) for v in lift_interval(1.0, math.nan, 2.0, 0.5, 1.96))
    r = two_proportion_test(100, 1000, 130, 1000)
    assert close(r.control_se, math.sqrt(0.1 * 0.9 / 1000)) and close(r.difference_se, math.hypot(r.control_se, r.treatment_se))
    w = welch_test(Moments(50, 10.0, 25.0), Moments(40, 12.0, 36.0))
    assert close(w.control_se, math.sqrt(25 / 50)) and close(w.treatment_se, math.sqrt(36 / 40))


# ---- purity ---------------------------------------------------------------------------------------


def test_the_package_imports_without_pyflink():
    code = (
        "import sys; sys.modules['pyflink'] = None\n"
        "import operators.experiments, operators.experiments.report, operators.experiments.stats\n"
        "import operators.experiments.assignment, operators.experiments.sequential\n"
        "import operators.experiments.corrections\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('pyflink', 'redis', 'confluent_kafka', 'happybase')]\n"
        "assert sys.modules['pyflink'] is None and bad == ['pyflink'], bad\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=_repo_root()
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def _repo_root() -> Path:
    return ROOT
