"""Always-valid inference for live peeking: asymptotic confidence sequences.

Method: the two-sided *asymptotic confidence sequence* of Waudby-Smith, Arnold, Wu, Wang and
Ramdas, "Time-uniform central limit theory and asymptotic confidence sequences", Annals of
Statistics 52(6), 2024 (arXiv:2103.06476, v7): eq. (9) for the boundary with the normal-mixture
tuning parameter rho, eq. (161) for choosing rho so that the sequence is tightest at a target
sample size N, and eq. (155) for the matching always-valid p-value. This is the method and the
parameterisation of GrowthBook's gbstats (``SequentialTwoSidedTTest``; N defaults to 5000 there
too), so the numbers agree with GrowthBook's sequential results.

For an estimator with standard error ``se`` from ``n`` units in total (both arms), the per-unit
variance is ``s2 = se**2 * n`` and the half-width is

    sqrt(s2) * sqrt( 2 (n rho^2 + 1) / (n rho)^2 * ln( sqrt(n rho^2 + 1) / alpha ) )

which holds with probability >= 1 - alpha *simultaneously for every n* (asymptotically), so the
interval may be looked at after every event. Its squared half-width in standard errors is
(u + 1) / u * (ln(u + 1) + 2 ln(1/alpha)) with u = n rho^2, always above 2 ln(1/alpha) (5.99 at
alpha = 0.05): so it is always wider than the fixed-horizon normal interval (1.96^2 = 3.84), and
wider than a Welch t interval once that has more than 6 degrees of freedom. The p-value here is the
per-look value; an always-valid p-value over a whole run is its running minimum, which a caller
that keeps history may take.

The estimate should be one whose standard error does not move with it: the report passes the
difference of the means (its test of "no difference" is the test of "no lift") and builds the
lift's interval with :func:`.stats.lift_interval` at :func:`sequential_critical`. Applied to the
delta-method relative lift instead, it rejected 35 % of simulated A/A tests on skewed revenue
(docs/experiments.md, "Proven by simulation").

Power (:func:`sequential_power`, :func:`sequential_detectable_effect`): with the estimate normal
around the true effect, the interval at ``n`` excludes 0 with probability
``Phi(effect/se - c) + Phi(-effect/se - c)``, ``c = sequential_critical(n)``. That is the power of
the one look at ``n``; looking earlier as well only adds to it (docs/experiments.md, "Proven by
simulation", measures both).
"""

from __future__ import annotations

import math
from statistics import NormalDist

__all__ = [
    "DEFAULT_TARGET_N",
    "sequential_critical",
    "sequential_detectable_effect",
    "sequential_halfwidth",
    "sequential_interval",
    "sequential_p_value",
    "sequential_power",
    "sequential_rho",
]

DEFAULT_TARGET_N = 5000.0


def sequential_rho(alpha: float, target_n: float) -> float:
    """Mixture parameter rho that makes the sequence tightest at ``target_n`` units (eq. 161)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"sequential_rho: alpha {alpha!r} must be in (0, 1)")
    if not target_n > 0:
        raise ValueError(f"sequential_rho: target_n {target_n!r} must be positive")
    log_alpha = math.log(alpha)
    return math.sqrt((-2.0 * log_alpha + math.log(-2.0 * log_alpha + 1.0)) / target_n)


def sequential_critical(n: float, alpha: float = 0.05, target_n: float = DEFAULT_TARGET_N) -> float:
    """The half-width at ``n`` total units in standard errors (eq. 9 divided by ``se``).

    The interval excludes a value exactly when the estimate is more than this many standard errors
    from it; always above ``sqrt(2 ln(1/alpha))``, against 1.96 for the fixed-horizon test at 0.05.
    """
    if not n > 0:
        raise ValueError(f"sequential_critical: n {n!r} must be positive")
    rho = sequential_rho(alpha, target_n)
    n_rho2 = n * rho * rho
    return math.sqrt(2.0 * (n_rho2 + 1.0) * math.log(math.sqrt(n_rho2 + 1.0) / alpha) / n_rho2)


def sequential_halfwidth(se: float, n: int, alpha: float = 0.05, target_n: float = DEFAULT_TARGET_N) -> float:
    """Half-width of the (1 - alpha) confidence sequence at ``n`` total units (eq. 9); nan if undefined."""
    if not (n > 0 and math.isfinite(se) and se >= 0):
        return math.nan
    return se * sequential_critical(n, alpha, target_n)


def sequential_interval(
    estimate: float, se: float, n: int, alpha: float = 0.05, target_n: float = DEFAULT_TARGET_N
) -> tuple[float, float]:
    """``estimate`` ± :func:`sequential_halfwidth`."""
    half = sequential_halfwidth(se, n, alpha, target_n)
    return (estimate - half, estimate + half)


def sequential_p_value(
    estimate: float,
    se: float,
    n: int,
    alpha: float = 0.05,
    target_n: float = DEFAULT_TARGET_N,
    null: float = 0.0,
) -> float:
    """Always-valid p-value of ``estimate == null`` at this look (eq. 155): min(1, 1 / e-value).

    It is <= alpha exactly when :func:`sequential_interval` (same alpha and target) excludes ``null``.
    """
    if not (n > 0 and math.isfinite(se) and se > 0 and math.isfinite(estimate)):
        return math.nan
    rho = sequential_rho(alpha, target_n)
    st2 = (estimate - null) ** 2 * n / (se * se)
    tr2p1 = n * rho * rho + 1.0
    log_e = rho * rho * st2 / (2.0 * tr2p1) - 0.5 * math.log(tr2p1)
    return 1.0 if log_e <= 0 else math.exp(-log_e)


def sequential_power(
    effect: float, se: float, n: float, alpha: float = 0.05, target_n: float = DEFAULT_TARGET_N
) -> float:
    """Probability that the interval at ``n`` total units excludes 0 when the estimate is normal
    around ``effect`` with standard error ``se`` (the power of that one look); nan if undefined."""
    if not (n > 0 and math.isfinite(se) and se > 0 and math.isfinite(effect)):
        return math.nan
    c = sequential_critical(n, alpha, target_n)
    z = abs(effect) / se
    return _NORMAL.cdf(z - c) + _NORMAL.cdf(-z - c)


def sequential_detectable_effect(
    se: float, n: float, alpha: float = 0.05, target_n: float = DEFAULT_TARGET_N, power: float = 0.8
) -> float:
    """The smallest ``|effect|`` that the interval at ``n`` units excludes 0 for with probability
    ``power`` (``se`` = the estimate's standard error at ``n``; the far tail, below 1e-3 at
    power >= 0.5, is left out); nan if undefined."""
    if not 0.0 < power < 1.0:
        raise ValueError(f"sequential_detectable_effect: power {power!r} must be in (0, 1)")
    if not (n > 0 and math.isfinite(se) and se >= 0):
        return math.nan
    return (sequential_critical(n, alpha, target_n) + _NORMAL.inv_cdf(power)) * se


_NORMAL = NormalDist()
