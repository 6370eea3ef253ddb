"""Experiment statistics proven by simulation (issue 19): what a marketer who peeks gets.

    .venv/bin/python -m bench.experiments_sim [--small] [--seed 19] [--out bench/results/experiments_sim.json]

Simulates many experiments from known truths and measures what ``operators.experiments`` reports:

- ``aa``: A/A (no effect), conversion 5 % and log-normal revenue per converter, looked at 50 times as
  units arrive: the share ever declared significant by the fixed-horizon p (< alpha) at every look
  (the negative control) and by the always-valid p (the one the decision hint uses);
- ``power``: a +5 % relative lift over the horizon at which the report's power promise for it is 80 %:
  the share detected by then, against that promise;
- ``cuped``: revenue ``y = beta x + eps`` with a pre-period covariate ``x`` of known correlation rho:
  the measured variance cut against ``1 - rho^2``, and the coverage of the CUPED-adjusted intervals;
- ``srm``: the SRM check's false alarms on correct 50/50 splits and its detections when one arm loses
  2 % of its units;
- ``multiple``: control + 3 treatments x 2 metrics through :func:`experiment_report` itself: the
  family-wise error with Holm and the false discovery rate with Benjamini-Hochberg.

Speed: the streams are drawn per look as sufficient statistics (binomial counts; one log-normal per
converter summed with ``bincount``), and the tests run on arrays with the formulas of
:mod:`operators.experiments` written over numpy (:func:`proportion_lift`, :func:`welch_lift`,
:func:`cuped_moments`, :func:`always_valid_p`, :func:`srm_p`, :func:`decisions`). Every simulation
checks that path against the scalar engine: :func:`engine_check` rebuilds :class:`VariantStats` for a
sample of (experiment, look) cells and compares with :func:`experiment_report` (largest relative
difference in the results, must be < 1e-9). The multiple-testing simulation calls the report for
every experiment. Seeded: the same seed and scale give the same numbers. Results go to ``--out``
(JSON) and a table on stdout (docs/experiments.md, "Proven by simulation").
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps

from operators.experiments.assignment import Experiment
from operators.experiments.corrections import benjamini_hochberg
from operators.experiments.report import SRM_THRESHOLD, experiment_report
from operators.experiments.sequential import (
    sequential_critical,
    sequential_power,
    sequential_rho,
)
from operators.experiments.stats import Moments, VariantStats, srm_p_value

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "experiments_sim.json"

ALPHA = 0.05
P_CONVERSION = 0.05
REVENUE_LOGNORMAL = (3.0, 1.5)  # mu, sigma of log(revenue) of a converter: mean 61.9, CV 2.9
LOOKS = 50
LIFT = 0.05
AB = Experiment(key="sim", variations=("control", "treatment"))

# ---- the engine's formulas over arrays ---------------------------------------------------------


@dataclass(frozen=True)
class ArmSums:
    """:class:`VariantStats` fields as arrays (any shape, all the same); cumulative per look."""

    n: np.ndarray
    conversions: np.ndarray
    sum_y: np.ndarray
    sum_y2: np.ndarray
    sum_x: np.ndarray
    sum_x2: np.ndarray
    sum_xy: np.ndarray

    def __add__(self, other: ArmSums) -> ArmSums:
        return ArmSums(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def stats(self, index: tuple[int, ...]) -> VariantStats:
        """The engine's statistics of one cell."""
        n, conv, *sums = (getattr(self, f.name)[index] for f in fields(self))
        return VariantStats(int(n), int(conv), *(float(s) for s in sums))


@dataclass(frozen=True)
class Lift:
    """Relative lift, its standard error and the fixed-horizon p-value (a :class:`Comparison`'s)."""

    relative: np.ndarray
    relative_se: np.ndarray
    p_value: np.ndarray
    difference: np.ndarray
    difference_se: np.ndarray
    df: np.ndarray


def _mean(n: np.ndarray, s: np.ndarray) -> np.ndarray:
    return np.where(n > 0, s / np.where(n > 0, n, 1), np.nan)


def _var(n: np.ndarray, s: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """``stats._sample_var``: ddof=1, clamped at 0; nan below 2 units."""
    m = np.where(n >= 2, n, 2)
    return np.where(n >= 2, np.maximum(0.0, (s2 - s * s / m) / (m - 1)), np.nan)


def _cov(n: np.ndarray, sa: np.ndarray, sb: np.ndarray, sab: np.ndarray) -> np.ndarray:
    m = np.where(n >= 2, n, 2)
    return np.where(n >= 2, (sab - sa * sb / m) / (m - 1), np.nan)


def _relative_lift(c: Moments, t: Moments) -> tuple[np.ndarray, np.ndarray]:
    """``stats.relative_lift`` over arrays."""
    ok = (c.mean != 0) & np.isfinite(c.mean) & np.isfinite(t.mean) & (c.n > 0) & (t.n > 0)
    cm = np.where(ok, c.mean, 1.0)
    var = t.variance / (cm * cm * t.n) + t.mean * t.mean * c.variance / (cm**4 * c.n)
    se = np.where(var >= 0, np.sqrt(np.abs(var)), np.nan)
    return np.where(ok, t.mean / cm - 1.0, np.nan), np.where(ok, se, np.nan)


def proportion_lift(c: ArmSums, t: ArmSums) -> Lift:
    """``stats.two_proportion_test`` over arrays: pooled z for p, unpooled delta-method lift SE."""
    with np.errstate(all="ignore"):
        pc, pt = _mean(c.n, c.conversions), _mean(t.n, t.conversions)
        cm, tm = Moments(c.n, pc, pc * (1.0 - pc)), Moments(t.n, pt, pt * (1.0 - pt))
        rel, rel_se = _relative_lift(cm, tm)
        pooled = (c.conversions + t.conversions) / np.maximum(c.n + t.n, 1)
        se0 = np.sqrt(pooled * (1.0 - pooled) * (1.0 / c.n + 1.0 / t.n))
        se = np.sqrt(cm.variance / c.n + tm.variance / t.n)
        ok = (c.n > 0) & (t.n > 0) & (se0 != 0)
        p = 2.0 * sps.norm.sf(np.abs((pt - pc) / np.where(ok, se0, 1.0)))
    nan = np.full(ok.shape, np.nan)
    return Lift(rel, np.where(ok, rel_se, nan), np.where(ok, p, nan), pt - pc, np.where(ok, se, nan),
                np.where(ok, np.inf, nan))  # fmt: skip


def moments(s: ArmSums) -> Moments:
    """``VariantStats.moments`` over arrays (revenue)."""
    return Moments(s.n, _mean(s.n, s.sum_y), _var(s.n, s.sum_y, s.sum_y2))


def welch_lift(c: Moments, t: Moments) -> Lift:
    """``stats.welch_test`` over arrays."""
    with np.errstate(all="ignore"):
        rel, rel_se = _relative_lift(c, t)
        vc, vt = c.variance / c.n, t.variance / t.n
        se = np.sqrt(vc + vt)
        ok = (c.n >= 2) & (t.n >= 2) & (se != 0) & np.isfinite(se)
        df = (vc + vt) ** 2 / (vc * vc / (c.n - 1) + vt * vt / (t.n - 1))
        p = 2.0 * sps.t.sf(np.abs((t.mean - c.mean) / np.where(ok, se, 1.0)), np.where(ok, df, 1.0))
    nan = np.full(ok.shape, np.nan)
    return Lift(rel, np.where(ok, rel_se, nan), np.where(ok, p, nan), t.mean - c.mean,
                np.where(ok, se, nan), np.where(ok, df, nan))  # fmt: skip


def cuped_moments(c: ArmSums, t: ArmSums) -> tuple[Moments, Moments, np.ndarray]:
    """``cuped_theta`` pooled over both arms and ``cuped_adjusted`` of each (as the report does)."""
    with np.errstate(all="ignore"):
        both = c + t
        var_x = _var(both.n, both.sum_x, both.sum_x2)
        ok = (both.n >= 2) & (var_x > 0)
        theta = np.where(ok, _cov(both.n, both.sum_x, both.sum_y, both.sum_xy) / np.where(ok, var_x, 1), 0.0)
        mean_x = np.where(both.n > 0, _mean(both.n, both.sum_x), 0.0)

        def adjusted(s: ArmSums) -> Moments:
            mean = _mean(s.n, s.sum_y) - theta * (_mean(s.n, s.sum_x) - mean_x)
            var = _var(s.n, s.sum_y, s.sum_y2) + theta * theta * _var(s.n, s.sum_x, s.sum_x2) - (
                2.0 * theta * _cov(s.n, s.sum_x, s.sum_y, s.sum_xy)
            )
            return Moments(s.n, mean, np.maximum(0.0, var))

        return adjusted(c), adjusted(t), theta


def sequential_p(est: np.ndarray, se: np.ndarray, n: np.ndarray, alpha: float, target_n: float) -> np.ndarray:
    """``sequential.sequential_p_value`` over arrays (the per-look always-valid p)."""
    rho = sequential_rho(alpha, target_n)
    with np.errstate(all="ignore"):
        st2 = est * est * n / (se * se)
        tr2p1 = n * rho * rho + 1.0
        log_e = rho * rho * st2 / (2.0 * tr2p1) - 0.5 * np.log(tr2p1)
        p = np.where(log_e <= 0, 1.0, np.exp(-log_e))
    ok = (n > 0) & np.isfinite(se) & (se > 0) & np.isfinite(est)
    return np.where(ok, p, np.nan)


def always_valid_p(lift: Lift, pair_n: np.ndarray, alpha: float, target_n: float) -> np.ndarray:
    """The report's always-valid p: the difference and its standard error."""
    return sequential_p(lift.difference, lift.difference_se, pair_n, alpha, target_n)


def delta_lift_p(lift: Lift, pair_n: np.ndarray, alpha: float, target_n: float) -> np.ndarray:
    """The always-valid p on the delta-method relative lift: the report's method before issue 19,
    kept as the negative control (it fails the A/A simulation)."""
    return sequential_p(lift.relative, lift.relative_se, pair_n, alpha, target_n)


def fieller_covers(c: Moments, t: Moments, critical: np.ndarray, lift: float) -> np.ndarray:
    """Whether ``stats.lift_interval`` (Fieller) at ``critical`` contains ``lift``: its defining
    inequality at that lift, or the interval is unbounded."""
    with np.errstate(all="ignore"):
        vc, vt = c.variance / c.n, t.variance / t.n
        inside = np.abs(t.mean - (1 + lift) * c.mean) <= critical * np.sqrt(vt + (1 + lift) ** 2 * vc)
        unbounded = c.mean * c.mean - critical * critical * vc <= 0
    return inside | unbounded


def srm_p(nc: np.ndarray, nt: np.ndarray, weights: tuple[float, float] = (0.5, 0.5)) -> np.ndarray:
    """``stats.srm_p_value`` of two arms over arrays (Pearson chi-square, 1 df)."""
    total = nc + nt
    chi2 = np.zeros(np.shape(total))
    with np.errstate(all="ignore"):
        for count, w in zip((nc, nt), weights):
            expected = total * w / sum(weights)
            chi2 = chi2 + (count - expected) ** 2 / expected
        p = sps.chi2.sf(chi2, 1)
    return np.where(total > 0, p, 1.0)


KEEP_RUNNING, SHIP, WORSE, NO_DIFFERENCE, SRM = range(5)
DECISIONS = ("keep running", "ship", "stop: worse", "no difference", "stop: SRM")


def decisions(lift: Lift, seq_p: np.ndarray, srm: np.ndarray, pair_n: np.ndarray, target_n: float,
              alpha: float) -> np.ndarray:  # fmt: skip
    """``report._decide`` for one treatment (Holm over one p-value is that p-value)."""
    out = np.full(seq_p.shape, KEEP_RUNNING)
    out = np.where(~np.isnan(seq_p) & (pair_n >= target_n), NO_DIFFERENCE, out)
    out = np.where(seq_p < alpha, np.where(lift.difference > 0, SHIP, WORSE), out)
    return np.where(srm < SRM_THRESHOLD, SRM, out)


@dataclass(frozen=True)
class Looked:
    """Every number the report shows for an A/B stream, at every cell; ``cuped`` when x is drawn."""

    conversion: Lift
    revenue: Lift
    conversion_seq_p: np.ndarray
    revenue_seq_p: np.ndarray
    srm_p: np.ndarray
    decision: np.ndarray


def look(c: ArmSums, t: ArmSums, alpha: float, target_n: float, cuped: bool = False) -> Looked:
    """The report's numbers over arrays (primary metric: conversion)."""
    conv = proportion_lift(c, t)
    if cuped:
        mc, mt, _ = cuped_moments(c, t)
        rev = welch_lift(mc, mt)
    else:
        rev = welch_lift(moments(c), moments(t))
    pair_n = c.n + t.n
    conv_p = always_valid_p(conv, pair_n, alpha, target_n)
    rev_p = always_valid_p(rev, pair_n, alpha, target_n)
    srm = srm_p(c.n, t.n)
    return Looked(conv, rev, conv_p, rev_p, srm, decisions(conv, conv_p, srm, pair_n, target_n, alpha))


def _rel_diff(a: float, b: float) -> float:
    if math.isnan(a) and math.isnan(b):
        return 0.0
    if math.isnan(a) or math.isnan(b):
        return math.inf
    return abs(a - b) / max(abs(b), 1e-300) if a != b else 0.0


def engine_check(c: ArmSums, t: ArmSums, looked: Looked, alpha: float, target_n: float, cells: int,
                 rng: np.random.Generator) -> dict[str, Any]:  # fmt: skip
    """The vectorised numbers of ``cells`` random cells against :func:`experiment_report` on them.

    Returns the cells compared, the largest relative difference over lift, its SE, the fixed and
    always-valid p-values of both metrics and the SRM p-value, and how many decisions differ.
    """
    shape = c.n.shape
    worst, wrong = 0.0, 0
    for flat in rng.choice(math.prod(shape), size=min(cells, math.prod(shape)), replace=False):
        idx = np.unravel_index(flat, shape)
        rep = experiment_report(AB, {"control": c.stats(idx), "treatment": t.stats(idx)}, alpha,
                                target_n=target_n)  # fmt: skip
        row = rep.rows[1]
        pairs = [(looked.srm_p[idx], rep.srm_p_value)]
        for metric, lift, seq in (("conversion", looked.conversion, looked.conversion_seq_p),
                                  ("revenue", looked.revenue, looked.revenue_seq_p)):  # fmt: skip
            r = row.result(metric)
            assert r is not None
            comp = r.comparison
            pairs += [(lift.relative[idx], comp.relative), (lift.relative_se[idx], comp.relative_se),
                      (lift.p_value[idx], comp.p_value), (seq[idx], r.sequential_p),
                      (lift.difference_se[idx], comp.difference_se), (lift.df[idx], comp.df)]  # fmt: skip
        worst = max([worst] + [_rel_diff(float(a), float(b)) for a, b in pairs if not (a == b == math.inf)])
        wrong += DECISIONS[int(looked.decision[idx])] != row.decision
    cells = min(cells, math.prod(shape))
    return {"cells": cells, "max_relative_difference": worst, "decisions_differing": wrong}


# ---- drawing streams ---------------------------------------------------------------------------


def _lognormal_sums(rng: np.random.Generator, counts: np.ndarray, mu: float, sigma: float
                    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Sum and sum of squares of ``counts[i]`` log-normal draws, per cell."""
    flat = counts.ravel()
    v = rng.lognormal(mu, sigma, int(flat.sum()))
    ids = np.repeat(np.arange(flat.size), flat)
    s = np.bincount(ids, weights=v, minlength=flat.size).reshape(counts.shape)
    s2 = np.bincount(ids, weights=v * v, minlength=flat.size).reshape(counts.shape)
    return s, s2


def ab_stream(rng: np.random.Generator, runs: int, n_total: int, looks: int, p_control: float,
              p_treatment: float) -> tuple[ArmSums, ArmSums]:  # fmt: skip
    """Cumulative sums at each of ``looks`` equally spaced looks, shape (runs, looks).

    Units arrive ``n_total / looks`` per look and are split 50/50 at random (binomial); each converts
    with its arm's probability; a converter's revenue is log-normal; no covariate (x = 0).
    """
    batch = n_total // looks
    nc = rng.binomial(batch, 0.5, (runs, looks))
    nt = batch - nc
    arms = []
    for n, p in ((nc, p_control), (nt, p_treatment)):
        conv = rng.binomial(n, p)
        s, s2 = _lognormal_sums(rng, conv, *REVENUE_LOGNORMAL)
        zero = np.zeros(n.shape)
        arms.append(ArmSums(*(a.cumsum(axis=1) for a in (n, conv, s, s2, zero, zero, zero))))
    return arms[0], arms[1]


def _chunks(runs: int, per_chunk: int) -> list[int]:
    return [min(per_chunk, runs - i) for i in range(0, runs, per_chunk)]


def _stack(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts, axis=0)


def _rate(hits: int, runs: int) -> dict[str, Any]:
    """Share with its exact (Clopper-Pearson) 95 % Monte-Carlo interval."""
    lo = 0.0 if hits == 0 else float(sps.beta.ppf(0.025, hits, runs - hits + 1))
    hi = 1.0 if hits == runs else float(sps.beta.ppf(0.975, hits + 1, runs - hits))
    return {"hits": int(hits), "runs": int(runs), "rate": hits / runs, "mc95": [lo, hi]}


def _at_most(rate: dict[str, Any], bound: float) -> bool:
    """The Monte-Carlo interval does not lie above ``bound`` (the rate is consistent with <= bound)."""
    return rate["mc95"][0] <= bound


# ---- simulations -------------------------------------------------------------------------------


def simulate_peeking(rng: np.random.Generator, runs: int, n_total: int, target_n: float, p_treatment: float,
                     alpha: float = ALPHA, looks: int = LOOKS, check_cells: int = 50,
                     sequential: Callable[..., np.ndarray] = always_valid_p) -> dict[str, Any]:  # fmt: skip
    """Runs of ``n_total`` units looked at ``looks`` times; control converts at 5 %.

    Per metric: the share ever significant by the fixed-horizon p at any look, at the last look
    only, by ``sequential`` (the always-valid p; a broken one may be passed as a negative control)
    at any look and by the always-valid p on the delta-method lift (:func:`delta_lift_p`, the method
    before issue 19); the share of runs in which the decision hint ever said ship / stop: worse.
    """
    per_chunk = max(1, int(4e6 / (n_total * P_CONVERSION + looks)))
    hits: dict[str, list[np.ndarray]] = {}
    check = None
    for size in _chunks(runs, per_chunk):
        c, t = ab_stream(rng, size, n_total, looks, P_CONVERSION, p_treatment)
        lk = look(c, t, alpha, target_n)
        pair_n = c.n + t.n
        for metric, lift in (("conversion", lk.conversion), ("revenue", lk.revenue)):
            seq = sequential(lift, pair_n, alpha, target_n)
            old = delta_lift_p(lift, pair_n, alpha, target_n)
            hits.setdefault(f"{metric}_delta_lift_any_look", []).append(np.any(old < alpha, axis=1))
            hits.setdefault(f"{metric}_fixed_any_look", []).append(np.any(lift.p_value < alpha, axis=1))
            hits.setdefault(f"{metric}_fixed_last_look", []).append(lift.p_value[:, -1] < alpha)
            hits.setdefault(f"{metric}_always_valid_any_look", []).append(np.any(seq < alpha, axis=1))
            if metric == "conversion":
                first = np.where(seq < alpha, np.arange(looks), looks).min(axis=1)
                hits.setdefault("conversion_always_valid_first_look", []).append(first)
        hits.setdefault("hint_ship_or_worse_any_look", []).append(
            np.any((lk.decision == SHIP) | (lk.decision == WORSE), axis=1)
        )
        if check is None:
            check = engine_check(c, t, lk, alpha, target_n, check_cells, rng)
    out: dict[str, Any] = {
        "runs": runs, "units": n_total, "looks": looks, "target_n": target_n, "alpha": alpha,
        "p_control": P_CONVERSION, "p_treatment": p_treatment, "revenue_lognormal": list(REVENUE_LOGNORMAL),
    }  # fmt: skip
    for key, parts in hits.items():
        values = _stack(parts)
        if key.endswith("first_look"):
            found = values[values < looks]
            out["conversion_always_valid_median_stop"] = (
                float((np.median(found) + 1) / looks) if found.size else None
            )  # share of the horizon at the median first significant look
        else:
            out[key] = _rate(int(values.sum()), runs)
    out["engine_check"] = check
    return out


def population_difference(n_total: float, p_control: float, p_treatment: float, metric: str
                           ) -> tuple[float, float]:  # fmt: skip
    """(treatment - control mean, its standard error) at ``n_total`` units split 50/50, from the
    true moments: what the estimate is normal around."""
    m1, m2 = 1.0, 1.0
    if metric == "revenue":
        mu, sigma = REVENUE_LOGNORMAL
        m1, m2 = math.exp(mu + sigma**2 / 2), math.exp(2 * mu + 2 * sigma**2)
    half = n_total / 2.0
    var = sum(p * m2 - (p * m1) ** 2 for p in (p_control, p_treatment)) / half
    return (p_treatment - p_control) * m1, math.sqrt(var)


def promised_power(n_total: float, lift: float, metric: str, alpha: float) -> float:
    """The report's promise: :func:`sequential_power` of the difference at target n = ``n_total``."""
    diff, se = population_difference(n_total, P_CONVERSION, P_CONVERSION * (1 + lift), metric)
    return sequential_power(diff, se, n_total, alpha, n_total)


def planned_units(lift: float, power: float, alpha: float, looks: int) -> int:
    """The smallest horizon (a multiple of ``2 looks`` x 100) at which the report promises to
    detect ``lift`` on conversion with ``power``."""
    step = 2 * looks * 100
    n = step
    while promised_power(n, lift, "conversion", alpha) < power:
        n += step
    return n


def _fixed_power(n_total: float, lift: float, metric: str, alpha: float) -> float:
    diff, se = population_difference(n_total, P_CONVERSION, P_CONVERSION * (1 + lift), metric)
    z, c = abs(diff) / se, float(sps.norm.ppf(1 - alpha / 2))
    return float(sps.norm.cdf(z - c) + sps.norm.cdf(-z - c))


def simulate_power(rng: np.random.Generator, runs: int, alpha: float = ALPHA, looks: int = LOOKS,
                   lift: float = LIFT, n_total: int | None = None) -> dict[str, Any]:  # fmt: skip
    """A +``lift`` relative on conversion (and so on revenue) over the planned horizon."""
    n = n_total or planned_units(lift, 0.8, alpha, looks)
    pt = P_CONVERSION * (1 + lift)
    out = simulate_peeking(rng, runs, n, n, pt, alpha, looks)
    out["lift"] = lift
    for metric in ("conversion", "revenue"):
        out[f"{metric}_promised_always_valid"] = promised_power(n, lift, metric, alpha)
        out[f"{metric}_promised_fixed"] = _fixed_power(n, lift, metric, alpha)
    # what the report itself says at the horizon: the lift it detects with 80 % power (median)
    c, t = ab_stream(rng, min(runs, 200), n, looks, P_CONVERSION, pt)
    shown = []
    for k in range(c.n.shape[0]):
        rep = experiment_report(AB, {"control": c.stats((k, -1)), "treatment": t.stats((k, -1))}, alpha,
                                target_n=n)  # fmt: skip
        shown.append(rep.rows[1].results[0].detectable_lift)  # conversion
    out["conversion_report_detectable_lift_median"] = float(np.median(shown))
    return out


def _x_eps_sums(rng: np.random.Generator, runs: int, n_total: int, looks: int, p_pre: float
                ) -> tuple[list[dict[str, np.ndarray]], tuple[float, float, float, float]]:  # fmt: skip
    """Per arm, cumulative sums of x, x^2, eps, eps^2, x eps and conversions, shape (runs, looks).

    Per unit: ``x`` = pre-period revenue (spent with probability ``p_pre``, log-normal),
    ``eps`` = the revenue x does not explain (converts at 5 %, log-normal), independent. Returns
    also the population mean and variance of x and of eps.
    """
    mu, sigma = REVENUE_LOGNORMAL
    m1, m2 = math.exp(mu + sigma**2 / 2), math.exp(2 * mu + 2 * sigma**2)
    p_post = P_CONVERSION
    batch = n_total // looks
    nc = rng.binomial(batch, 0.5, (runs, looks))
    arms = []
    for n in (nc, batch - nc):
        cat = rng.multinomial(n, [p_pre * p_post, p_pre * (1 - p_post), (1 - p_pre) * p_post,
                                  (1 - p_pre) * (1 - p_post)])  # fmt: skip
        both, pre_only, post_only = cat[..., 0], cat[..., 1], cat[..., 2]
        sx_a, sx2_a = _lognormal_sums(rng, pre_only, mu, sigma)
        se_a, se2_a = _lognormal_sums(rng, post_only, mu, sigma)
        # units with both: x and eps drawn per unit, their product summed too
        flat = both.ravel()
        x = rng.lognormal(mu, sigma, int(flat.sum()))
        e = rng.lognormal(mu, sigma, int(flat.sum()))
        ids = np.repeat(np.arange(flat.size), flat)

        def sums(v: np.ndarray) -> np.ndarray:
            return np.bincount(ids, weights=v, minlength=flat.size).reshape(both.shape)

        arms.append({
            "n": n, "conversions": both + post_only, "x": sx_a + sums(x), "x2": sx2_a + sums(x * x),
            "e": se_a + sums(e), "e2": se2_a + sums(e * e), "xe": sums(x * e),
        })  # fmt: skip
    cum = [{k: v.cumsum(axis=1) for k, v in a.items()} for a in arms]
    return cum, (p_pre * m1, p_pre * m2 - (p_pre * m1) ** 2, p_post * m1, p_post * m2 - (p_post * m1) ** 2)


def _cuped_arm(a: dict[str, np.ndarray], beta: float, scale: float) -> ArmSums:
    """Sums of ``y = beta x + scale eps`` from the sums of x and eps."""
    return ArmSums(
        a["n"], a["conversions"], beta * a["x"] + scale * a["e"],
        beta * beta * a["x2"] + 2 * beta * scale * a["xe"] + scale * scale * a["e2"],
        a["x"], a["x2"], beta * a["x2"] + scale * a["xe"],
    )  # fmt: skip


def simulate_cuped(rng: np.random.Generator, runs: int, n_total: int, rhos: tuple[float, ...],
                   alpha: float = ALPHA, looks: int = LOOKS, effect: float = LIFT, p_pre: float = 0.10,
                   check_cells: int = 50, bootstrap: int = 200,
                   adjust: Callable[[ArmSums, ArmSums], tuple[Moments, Moments, np.ndarray]] = cuped_moments,
                   ) -> dict[str, Any]:  # fmt: skip
    """``y = beta x + eps`` per unit, beta set for corr(x, y) = rho; the treatment's eps is scaled by
    ``1 + effect``. Per rho: the variance of the adjusted difference across runs over that of the
    unadjusted one (and the same ratio of the report's estimated variances) against ``1 - rho^2``;
    the coverage of the true relative lift by the fixed-horizon CI at the last look and by the
    always-valid CI at every look. ``adjust`` may be a broken CUPED (negative control).
    """
    per_chunk = max(1, int(2e6 / (n_total * 0.15 + looks)))
    parts = [_x_eps_sums(rng, size, n_total, looks, p_pre) for size in _chunks(runs, per_chunk)]
    arms = [{k: _stack([p[0][i][k] for p in parts]) for k in parts[0][0][i]} for i in (0, 1)]
    mean_x, var_x, mean_e, var_e = parts[0][1]
    out: dict[str, Any] = {"runs": runs, "units": n_total, "looks": looks, "target_n": n_total,
                           "alpha": alpha, "effect_on_eps": effect, "p_pre": p_pre, "by_rho": []}  # fmt: skip
    for rho in rhos:
        beta = rho / math.sqrt(1 - rho * rho) * math.sqrt(var_e / var_x)
        c, t = _cuped_arm(arms[0], beta, 1.0), _cuped_arm(arms[1], beta, 1.0 + effect)
        true_rel = effect * mean_e / (beta * mean_x + mean_e)
        mc, mt, theta = adjust(c, t)
        adj = welch_lift(mc, mt)
        raw = welch_lift(moments(c), moments(t))
        last = (slice(None), -1)
        d_adj, d_raw = adj.difference[last], raw.difference[last]
        ratio = float(np.var(d_adj) / np.var(d_raw))
        boot = []
        for _ in range(bootstrap):
            i = rng.integers(0, runs, runs)
            boot.append(np.var(d_adj[i]) / np.var(d_raw[i]))
        crit = sps.t.ppf(1 - alpha / 2, adj.df[last])
        true_diff = effect * mean_e
        covers_diff = np.abs(adj.difference[last] - true_diff) <= crit * adj.difference_se[last]
        covers_delta = np.abs(adj.relative[last] - true_rel) <= crit * adj.relative_se[last]
        covers_rel = fieller_covers(Moments(mc.n[last], mc.mean[last], mc.variance[last]),
                                    Moments(mt.n[last], mt.mean[last], mt.variance[last]), crit, true_rel)
        raw_crit = sps.t.ppf(1 - alpha / 2, raw.df[last])
        raw_covers = np.abs(raw.difference[last] - true_diff) <= raw_crit * raw.difference_se[last]
        pair_n = (c.n + t.n)[0]
        q = np.array([sequential_critical(float(n), alpha, n_total) for n in pair_n])
        seq_covers = fieller_covers(mc, mt, q, true_rel)
        row = {
            "rho": rho, "beta": beta, "theta_median": float(np.median(theta[last])),
            "variance_ratio": ratio, "variance_ratio_mc95": [float(np.quantile(boot, 0.025)),
                                                             float(np.quantile(boot, 0.975))],
            "variance_ratio_reported": float(np.mean(adj.difference_se[last] ** 2)
                                             / np.mean(raw.difference_se[last] ** 2)),
            "variance_ratio_theory": 1 - rho * rho,
            "true_difference": true_diff, "true_relative_lift": true_rel,
            "coverage_fixed_difference": _rate(int(covers_diff.sum()), runs),
            "coverage_fixed_lift": _rate(int(covers_rel.sum()), runs),
            "coverage_fixed_lift_delta_method": _rate(int(covers_delta.sum()), runs),
            "coverage_fixed_difference_unadjusted": _rate(int(raw_covers.sum()), runs),
            "coverage_always_valid_lift_every_look": _rate(int(seq_covers.all(axis=1).sum()), runs),
        }  # fmt: skip
        if check_cells:
            lk = look(c, t, alpha, n_total, cuped=True)
            check = row["engine_check"] = engine_check(c, t, lk, alpha, n_total, check_cells, rng)
            # the vectorised coverage against the report's intervals (always-valid: any look; fixed: last)
            check["intervals_differing"] = 0
            for k, j in zip(rng.integers(0, runs, check_cells), rng.integers(0, looks, check_cells)):
                for jj, covers, field in ((j, seq_covers[k, j], "sequential_ci"), (looks - 1, covers_rel[k], "lift_ci")):
                    rep = experiment_report(AB, {"control": c.stats((k, jj)), "treatment": t.stats((k, jj))},
                                            alpha, target_n=n_total).rows[1].result("revenue")  # fmt: skip
                    assert rep is not None
                    lo, hi = getattr(rep, field)
                    check["intervals_differing"] += bool(lo <= true_rel <= hi) != bool(covers)
        out["by_rho"].append(row)
    return out


def simulate_srm(rng: np.random.Generator, runs: int, sizes: tuple[int, ...], loss: float = 0.02,
                 looks: int = LOOKS, check_cells: int = 50) -> dict[str, Any]:  # fmt: skip
    """Correct 50/50 splits and splits where the treatment loses ``loss`` of its units (shares
    1 : 1 - loss): the share flagged (SRM p < 0.001) at the last look and at any of ``looks``."""
    out: dict[str, Any] = {"runs": runs, "looks": looks, "threshold": SRM_THRESHOLD, "loss": loss,
                           "by_units": []}  # fmt: skip
    worst = 0.0
    for n_total in sizes:
        row: dict[str, Any] = {"units": n_total}
        for name, share in (("correct", 0.5), ("lossy", 1.0 / (2.0 - loss))):
            batch = n_total // looks
            nc = rng.binomial(batch, share, (runs, looks)).cumsum(axis=1)
            nt = batch * np.arange(1, looks + 1) - nc
            p = srm_p(nc, nt)
            flagged = p < SRM_THRESHOLD
            row[f"{name}_last_look"] = _rate(int(flagged[:, -1].sum()), runs)
            row[f"{name}_any_look"] = _rate(int(flagged.any(axis=1).sum()), runs)
            for k in rng.choice(runs, size=min(check_cells, runs), replace=False):
                engine = srm_p_value([int(nc[k, -1]), int(nt[k, -1])], [0.5, 0.5])
                worst = max(worst, _rel_diff(float(p[k, -1]), engine))
        out["by_units"].append(row)
    out["engine_check"] = {"cells": check_cells * 2 * len(sizes), "max_relative_difference": worst,
                           "decisions_differing": 0}  # fmt: skip
    return out


def simulate_multiple(rng: np.random.Generator, runs: int, n_per_arm: int, lift: float, treatments: int = 3,
                      alpha: float = ALPHA) -> dict[str, Any]:  # fmt: skip
    """Control + ``treatments`` arms of ``n_per_arm`` units, two metrics, through the report.

    Scenarios: ``null`` (no effect anywhere) and ``one_effect`` (the first treatment lifts
    conversion, hence revenue, by ``lift``). Per scenario: the family-wise error (any true null
    rejected) of the raw p, of the report's Holm-adjusted p, of Benjamini-Hochberg
    (``corrections.benjamini_hochberg``), the false discovery rate (mean share of false rejections
    among the rejections) of raw, Holm and BH, the share of true effects found, and how often the
    decision hint (always-valid, Holm over treatments) says ship / stop: worse for a null treatment.
    """
    names = ("control", *(f"t{i}" for i in range(1, treatments + 1)))
    exp = Experiment(key="multi", variations=names)
    out: dict[str, Any] = {"runs": runs, "units_per_arm": n_per_arm, "treatments": treatments,
                           "metrics": 2, "lift": lift, "alpha": alpha}  # fmt: skip
    for scenario in ("null", "one_effect"):
        rates = [P_CONVERSION] + [P_CONVERSION * (1 + lift) if (scenario == "one_effect" and i == 1)
                                  else P_CONVERSION for i in range(1, treatments + 1)]  # fmt: skip
        is_null = np.array([[r == P_CONVERSION] * 2 for r in rates[1:]]).ravel()
        conv = rng.binomial(n_per_arm, rates, (runs, len(rates)))
        s, s2 = _lognormal_sums(rng, conv, *REVENUE_LOGNORMAL)
        fwer = {"raw": 0, "holm": 0, "bh": 0}
        fdp = {"raw": 0.0, "holm": 0.0, "bh": 0.0}
        found, hint_false = 0, 0
        for k in range(runs):
            stats = {v: VariantStats(n_per_arm, int(conv[k, j]), float(s[k, j]), float(s2[k, j]))
                     for j, v in enumerate(names)}  # fmt: skip
            rep = experiment_report(exp, stats, alpha, correction="holm", target_n=2 * n_per_arm)
            results = [r for row in rep.rows[1:] for r in row.results]
            raw = np.array([r.p_value for r in results])
            for name, p in (("raw", raw), ("holm", np.array([r.p_adjusted for r in results])),
                            ("bh", np.array(benjamini_hochberg(list(raw))))):  # fmt: skip
                rejected = p < alpha
                false = int((rejected & is_null).sum())
                fwer[name] += false > 0
                fdp[name] += false / max(1, int(rejected.sum()))
                if name == "holm" and (~is_null).any():
                    found += int((rejected & ~is_null).sum())
            hint_false += any(row.decision in ("ship", "stop: worse")
                              for row, null in zip(rep.rows[1:], is_null[::2]) if null)  # fmt: skip
        effects = int((~is_null).sum()) * runs
        out[scenario] = {
            **{f"fwer_{k}": _rate(v, runs) for k, v in fwer.items()},
            **{f"fdr_{k}": v / runs for k, v in fdp.items()},
            "power_holm": found / effects if effects else None,
            "hint_false_decision": _rate(hint_false, runs),
        }
    return out


# ---- run, table --------------------------------------------------------------------------------

SCALES = {
    # runs of each simulation; the small scale is the test's
    "full": {"aa": 10_000, "power": 10_000, "cuped": 10_000, "srm": 100_000, "multiple": 10_000},
    "small": {"aa": 400, "power": 400, "cuped": 400, "srm": 4_000, "multiple": 300},
}


def run(scale: str = "full", seed: int = 19) -> dict[str, Any]:
    """Every simulation at ``scale``; child seeds of ``seed`` per simulation."""
    runs = SCALES[scale]
    rngs = iter(np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(8))
    started = time.perf_counter()
    power_units = planned_units(LIFT, 0.8, ALPHA, LOOKS)
    doc: dict[str, Any] = {"issue": 19, "seed": seed, "scale": scale, "alpha": ALPHA, "looks": LOOKS}
    doc["aa"] = [
        simulate_peeking(next(rngs), runs["aa"], 5_000, 5_000, P_CONVERSION),
        simulate_peeking(next(rngs), runs["aa"], power_units, power_units, P_CONVERSION),
    ]
    doc["power"] = simulate_power(next(rngs), runs["power"], n_total=power_units)
    doc["cuped"] = simulate_cuped(next(rngs), runs["cuped"], 20_000, (0.3, 0.5, 0.7, 0.9))
    doc["srm"] = simulate_srm(next(rngs), runs["srm"], (5_000, 50_000, power_units))
    doc["multiple"] = simulate_multiple(next(rngs), runs["multiple"], 10_000, 0.15)
    doc["seconds"] = round(time.perf_counter() - started, 1)
    return doc


def _pct(x: float) -> str:
    return f"{x * 100:.2f}%"


def _r(rate: dict[str, Any]) -> str:
    return f"{_pct(rate['rate'])} [{_pct(rate['mc95'][0])}, {_pct(rate['mc95'][1])}]"


Row = tuple[str, str, str, str, str]


def _below(where: str, what: str, rate: dict[str, Any], bound: float) -> Row:
    """A rate that must not exceed ``bound``: ok while its MC interval reaches down to it."""
    return (where, what, _r(rate), f"<= {_pct(bound)}", "yes" if rate["mc95"][0] <= bound else "NO")


def _above(where: str, what: str, rate: dict[str, Any], bound: float, note: str = "") -> Row:
    """A rate that must reach ``bound``: ok while its MC interval reaches up to it."""
    return (where, what, _r(rate), f">= {_pct(bound)}{note}", "yes" if rate["mc95"][1] >= bound else "NO")


def _near(where: str, what: str, rate: dict[str, Any], value: float, note: str = "") -> Row:
    lo, hi = rate["mc95"]
    return (where, what, _r(rate), f"~ {_pct(value)}{note}", "yes" if lo <= value <= hi else "NO")


def _control(where: str, what: str, rate: dict[str, Any], bound: float) -> Row:
    """A negative control: must be above ``bound``."""
    return (where, what, _r(rate), f"> {_pct(bound)} (control)", "yes" if rate["mc95"][0] > bound else "NO")


def table_rows(doc: dict[str, Any]) -> list[Row]:
    """(simulation, what is measured, measured [MC 95 %], should be, holds) per number."""
    a = doc["alpha"]
    rows: list[Row] = []
    for aa in doc["aa"]:
        where = f"A/A, {aa['units']:,} units, {aa['looks']} looks"
        for m in ("conversion", "revenue"):
            rows += [
                _control(where, f"{m}: fixed-horizon p < {a:g} at any look", aa[f"{m}_fixed_any_look"], 2 * a),
                _below(where, f"{m}: fixed-horizon p < {a:g} at the last look only", aa[f"{m}_fixed_last_look"], a),
                _below(where, f"{m}: always-valid p < {a:g} at any look", aa[f"{m}_always_valid_any_look"], a),
                _below(where, f"{m}: the same on the delta-method lift (before issue 19)",
                       aa[f"{m}_delta_lift_any_look"], a),
            ]  # fmt: skip
        rows.append(_below(where, "decision hint ever ship / stop: worse", aa["hint_ship_or_worse_any_look"], a))
    pw = doc["power"]
    where = f"+{pw['lift'] * 100:g} % lift, {pw['units']:,} units, {pw['looks']} looks"
    for m in ("conversion", "revenue"):
        rows += [
            _above(where, f"{m}: always-valid, detected at any look", pw[f"{m}_always_valid_any_look"],
                   pw[f"{m}_promised_always_valid"], " (report's promise)"),
            _above(where, f"{m}: fixed-horizon, detected at the last look", pw[f"{m}_fixed_last_look"],
                   pw[f"{m}_promised_fixed"], " (textbook power)"),
        ]  # fmt: skip
    shown = pw["conversion_report_detectable_lift_median"]
    rows.append((where, "conversion: lift the report says it detects with 80 % power", _pct(shown) + " (median)",
                 f"~ {_pct(pw['lift'])}", "yes" if abs(shown / pw["lift"] - 1) < 0.05 else "NO"))  # fmt: skip
    if pw.get("conversion_always_valid_median_stop") is not None:
        rows.append((where, "conversion: median look of the first detection",
                     f"{_pct(pw['conversion_always_valid_median_stop'])} of the horizon", "", ""))  # fmt: skip
    cu = doc["cuped"]
    for r in cu["by_rho"]:
        where = f"CUPED rho {r['rho']:g}, {cu['units']:,} units"
        lo, hi = r["variance_ratio_mc95"]
        theory = r["variance_ratio_theory"]
        rows += [
            (where, "variance of the adjusted / unadjusted difference",
             f"{r['variance_ratio']:.3f} [{lo:.3f}, {hi:.3f}]; report's SE: {r['variance_ratio_reported']:.3f}",
             f"{theory:.3f} (1 - rho^2)", "yes" if lo <= theory <= hi else "NO"),
            _above(where, "fixed-horizon CI covers the true difference", r["coverage_fixed_difference"], 1 - a),
            _above(where, "fixed-horizon CI covers the true lift (Fieller)", r["coverage_fixed_lift"], 1 - a),
            _above(where, "the same by the delta method (before issue 19)", r["coverage_fixed_lift_delta_method"],
                   1 - a),
            _above(where, "always-valid CI covers the lift at every look",
                   r["coverage_always_valid_lift_every_look"], 1 - a),
        ]  # fmt: skip
    srm = doc["srm"]
    for r in srm["by_units"]:
        where = f"SRM, {r['units']:,} units"
        rows += [
            _near(where, "false alarm on a correct split, last look", r["correct_last_look"], srm["threshold"]),
            (where, f"false alarm, any of {srm['looks']} looks", _r(r["correct_any_look"]), "(peeked)", ""),
            (where, f"detects a {srm['loss'] * 100:g} % loss of one arm, last look", _r(r["lossy_last_look"]),
             "(power)", ""),
        ]  # fmt: skip
    mt = doc["multiple"]
    for sc in ("null", "one_effect"):
        s = mt[sc]
        where = f"{mt['treatments']} treatments x 2 metrics, {mt['units_per_arm']:,}/arm, " + (
            "no effect" if sc == "null" else f"t1 +{mt['lift'] * 100:g} %"
        )
        rows += [
            _control(where, "family-wise error, raw p", s["fwer_raw"], a),
            _below(where, "family-wise error, Holm (the report's p adj)", s["fwer_holm"], a),
            (where, "false discovery rate, Benjamini-Hochberg", _pct(s["fdr_bh"]), f"<= {_pct(a)}",
             "yes" if s["fdr_bh"] <= a else "NO"),
            _below(where, "decision hint ship / stop: worse on a null treatment", s["hint_false_decision"], a),
        ]  # fmt: skip
        if s["power_holm"] is not None:
            rows.append((where, "true effects found (Holm)", _pct(s["power_holm"]), "", ""))
    return rows


def format_table(doc: dict[str, Any]) -> str:
    """The results as a Markdown table (docs/experiments.md)."""
    rows = [("simulation", "what is measured", "measured [MC 95 %]", "should be", "holds"), *table_rows(doc)]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.experiments_sim", description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="the test's scale (a few hundred runs, seconds)")
    ap.add_argument("--seed", type=int, default=19)
    ap.add_argument("--out", type=Path, default=None,
                    help=f"JSON results (default at full scale: {DEFAULT_OUT.relative_to(ROOT)})")  # fmt: skip
    args = ap.parse_args(argv)
    scale = "small" if args.small else "full"
    doc = run(scale, args.seed)
    out = args.out or (DEFAULT_OUT if scale == "full" else None)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=1) + "\n")
    print(format_table(doc))
    print(f"\n{scale} scale, seed {args.seed}, {doc['seconds']} s" + (f"; results in {out}" if out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
