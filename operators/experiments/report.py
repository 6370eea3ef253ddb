"""An experiment's results from its per-variant sufficient statistics: table and JSON.

Pure: :func:`experiment_report` only reads the definition and the :class:`VariantStats` kept by
the stream, so the CLI and the dashboard show the same numbers.

For each treatment (every variation after the first, the control) and each metric:

- ``conversion``: two-proportion z-test on the conversion rate;
- ``revenue``: Welch t-test on revenue per exposed unit, CUPED-adjusted when the variants carry a
  pre-exposure covariate (one theta pooled over all variants); ``value`` shows the unadjusted mean;

Each number carries one of two guarantees (:data:`GUARANTEES`, in the JSON too):

- *fixed-horizon*: the relative lift's CI (Fieller's, :func:`.stats.fixed_lift_interval`: the
  delta-method one undercovers skewed revenue), the p-value and that p-value adjusted across all
  (treatment x metric) comparisons (Holm by default, or Benjamini-Hochberg). They hold
  for ONE look at the planned size; a dashboard looked at 50 times until it turns green "finds" an
  A/A effect 23-32 % of the time at alpha 0.05 (docs/experiments.md, "Proven by simulation");
- *always-valid* (:mod:`.sequential`): the p-value of the difference (treatment - control, its
  standard error; 0 difference = 0 lift) and the lift's interval by Fieller's theorem
  (:func:`.stats.lift_interval`) at the confidence sequence's critical value, which excludes 0
  exactly when that p-value is <= alpha. They hold at every look at once. Not the delta-method
  lift and its standard error: on skewed revenue its standard error shrinks with the treatment's
  mean, and the always-valid test on it rejected 35 % of simulated A/A tests;
- ``detectable_lift``: the relative lift the always-valid test finds with 80 % power
  (:data:`DETECTABLE_POWER`) at ``target_n`` units, from the current standard error scaled to
  ``target_n`` (:func:`.sequential.sequential_detectable_effect`): what "no difference" means.

Decision hint per treatment, from the ``primary`` metric and the always-valid numbers only, in
this order:

- ``"stop: SRM"``: the sample-ratio-mismatch p-value is below 0.001; nothing else can be trusted;
- ``"ship"`` / ``"stop: worse"``: the always-valid p-value, adjusted across treatments with the
  same correction (``decision_p``), is below alpha and the difference is positive / negative (safe
  to act on while peeking);
- ``"no difference"``: not significant although the comparison has reached ``target_n`` units;
- ``"keep running"``: otherwise (including while a test cannot be computed yet).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .assignment import Experiment
from .corrections import adjust
from .sequential import (
    DEFAULT_TARGET_N,
    sequential_critical,
    sequential_detectable_effect,
    sequential_p_value,
)
from .stats import (
    Comparison,
    VariantStats,
    cuped_test,
    cuped_theta,
    fixed_lift_interval,
    lift_interval,
    srm_p_value,
    two_proportion_test,
)

__all__ = [
    "GUARANTEES",
    "MetricResult",
    "Report",
    "VariantRow",
    "experiment_report",
    "format_table",
    "to_json",
]

SRM_THRESHOLD = 0.001
METRICS = ("conversion", "revenue")
DETECTABLE_POWER = 0.8
FIXED, ALWAYS_VALID = "fixed-horizon", "always-valid"
#: Which guarantee each number of a metric result (JSON names) carries.
GUARANTEES = {
    "lift_ci": FIXED, "difference_ci": FIXED, "p_value": FIXED, "p_adjusted": FIXED,
    "sequential_lift_ci": ALWAYS_VALID, "sequential_p_value": ALWAYS_VALID,
    "detectable_lift": ALWAYS_VALID, "decision": ALWAYS_VALID, "decision_p_value": ALWAYS_VALID,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class MetricResult:
    """One treatment vs control on one metric: the fixed-horizon ``comparison``, ``p_adjusted`` and
    ``lift_ci`` (Fieller's), the always-valid ``sequential_ci`` (of the lift) and ``sequential_p``
    (of the difference), and ``detectable_lift``: the lift the always-valid test finds with 80 %
    power at target n."""

    metric: str
    comparison: Comparison
    p_adjusted: float
    sequential_ci: tuple[float, float]
    sequential_p: float
    detectable_lift: float = math.nan
    lift_ci: tuple[float, float] = (math.nan, math.nan)

    @property
    def lift(self) -> float:
        return self.comparison.relative

    @property
    def p_value(self) -> float:
        return self.comparison.p_value


@dataclass(frozen=True, slots=True)
class VariantRow:
    """One variation: its counts and, for a treatment, its results and decision hint."""

    variation: str
    is_control: bool
    n: int
    conversions: int
    rate: float
    mean: float
    results: tuple[MetricResult, ...]
    decision: str | None
    decision_p: float = math.nan  # the always-valid p of the primary metric, adjusted across treatments

    def result(self, metric: str) -> MetricResult | None:
        return next((r for r in self.results if r.metric == metric), None)


@dataclass(frozen=True, slots=True)
class Report:
    experiment_key: str
    alpha: float
    correction: str
    primary: str
    target_n: float
    total_n: int
    cuped_theta: float
    srm_p_value: float
    srm_warning: bool
    rows: tuple[VariantRow, ...]


def _sequential(
    c: Comparison, n: int, alpha: float, target_n: float
) -> tuple[tuple[float, float], float, float]:
    """Always-valid lift interval, p-value and detectable lift of ``c`` at ``n`` units."""
    if n <= 0:
        return (math.nan, math.nan), math.nan, math.nan
    critical = sequential_critical(n, alpha, target_n)
    ci = lift_interval(c.control, c.control_se, c.treatment, c.treatment_se, critical)
    se_at_target = c.difference_se * math.sqrt(n / target_n)
    detectable = sequential_detectable_effect(se_at_target, target_n, alpha, target_n, DETECTABLE_POWER)
    detectable = detectable / abs(c.control) if c.control else math.nan
    return ci, sequential_p_value(c.difference, c.difference_se, n, alpha, target_n), detectable


def _decide(
    srm: bool, difference: float, seq_p_adj: float, pair_n: int, target_n: float, alpha: float
) -> str:
    if srm:
        return "stop: SRM"
    if not math.isnan(seq_p_adj) and seq_p_adj < alpha:
        return "ship" if difference > 0 else "stop: worse"
    if not math.isnan(seq_p_adj) and pair_n >= target_n:
        return "no difference"
    return "keep running"


def experiment_report(
    definition: Experiment,
    stats_by_variant: Mapping[str, VariantStats],
    alpha: float = 0.05,
    *,
    correction: str = "holm",
    primary: str = "conversion",
    target_n: float = DEFAULT_TARGET_N,
) -> Report:
    """Report on ``definition`` from ``stats_by_variant`` (keyed by variation; missing = no units).

    ``target_n`` is the planned number of units per comparison (control + that treatment, as
    gbstats' sequential tuning parameter): the sequential intervals are tightest there, and a
    non-significant result past it reads "no difference".
    """
    unknown = set(stats_by_variant) - set(definition.variations)
    if unknown:
        raise ValueError(
            f"experiment report {definition.key!r}: statistics for unknown variations {sorted(unknown)}; "
            f"the definition has {list(definition.variations)}"
        )
    if primary not in METRICS:
        raise ValueError(f"experiment report {definition.key!r}: primary metric {primary!r} not in {METRICS}")
    stats = [stats_by_variant.get(v, VariantStats()) for v in definition.variations]
    total = stats[0]
    for s in stats[1:]:
        total = total.merge(s)
    theta = cuped_theta(stats)
    mean_x = total.mean_x if total.n else 0.0
    srm_p = srm_p_value([s.n for s in stats], definition.effective_weights)
    srm = srm_p < SRM_THRESHOLD

    control = stats[0]
    raw: list[tuple[str, int, Comparison]] = []  # (metric, treatment index, comparison)
    for i, s in enumerate(stats[1:], start=1):
        raw.append(
            ("conversion", i, two_proportion_test(control.conversions, control.n, s.conversions, s.n, alpha))
        )
        raw.append(("revenue", i, cuped_test(control, s, alpha, theta, mean_x)[0]))
    p_adj = adjust([c.p_value for _, _, c in raw], correction)

    results: dict[int, list[MetricResult]] = {}
    for (metric, i, comp), pa in zip(raw, p_adj):
        seq_ci, seq_p, detectable = _sequential(comp, control.n + stats[i].n, alpha, target_n)
        result = MetricResult(metric, comp, pa, seq_ci, seq_p, detectable, fixed_lift_interval(comp))
        results.setdefault(i, []).append(result)

    primaries = {i: next(r for r in rs if r.metric == primary) for i, rs in results.items()}
    seq_adj = dict(zip(primaries, adjust([r.sequential_p for r in primaries.values()], correction)))

    rows = []
    for i, (variation, s) in enumerate(zip(definition.variations, stats)):
        decision, decision_p = None, math.nan
        if i > 0:
            decision_p = seq_adj[i]
            difference = primaries[i].comparison.difference
            decision = _decide(srm, difference, decision_p, control.n + s.n, target_n, alpha)
        rows.append(
            VariantRow(
                variation, i == 0, s.n, s.conversions, s.rate, s.mean, tuple(results.get(i, ())), decision,
                decision_p,
            )
        )
    return Report(
        definition.key, alpha, correction, primary, target_n, total.n, theta, srm_p, srm, tuple(rows)
    )


# ---- presentation -----------------------------------------------------------------------------


def _pct(x: float, signed: bool = True) -> str:
    if math.isnan(x):
        return "-"
    return f"{x * 100:+.1f}%" if signed else f"{x * 100:.2f}%"


def _ci(ci: tuple[float, float]) -> str:
    if math.isnan(ci[0]) or math.isnan(ci[1]):
        return "-"
    return f"[{_pct(ci[0])}, {_pct(ci[1])}]"


def _p(p: float) -> str:
    if math.isnan(p):
        return "-"
    return "<0.0001" if p < 0.0001 else f"{p:.4f}"


_HEADER = (
    "variant",
    "metric",
    "n",
    "value",
    "lift",
    "fixed {level} CI",
    "fixed p",
    "fixed p adj",
    "always-valid {level} CI",
    "decision",
)
_RIGHT = {2, 3, 4, 6, 7}


def _cells(report: Report, row: VariantRow, metric: str) -> list[str]:
    if metric == "conversion":
        value = _pct(row.rate, signed=False)
    else:
        value = "-" if math.isnan(row.mean) else f"{row.mean:.4g}"
    decision = (row.decision or "(control)") if metric == report.primary else ""
    r = row.result(metric)
    if r is None:
        return [row.variation, metric, str(row.n), value, "", "", "", "", "", decision]
    stats = [_pct(r.lift), _ci(r.lift_ci), _p(r.p_value), _p(r.p_adjusted), _ci(r.sequential_ci)]
    return [row.variation, metric, str(row.n), value, *stats, decision]


def format_table(report: Report) -> str:
    """The report as aligned plain text (one line per variant x metric)."""
    correction = {"holm": "Holm", "bh": "Benjamini-Hochberg"}.get(report.correction, report.correction)
    srm_note = "WARNING: sample ratio mismatch, results not trustworthy" if report.srm_warning else "ok"
    lines = [
        f"Experiment {report.experiment_key}: {report.total_n} units (alpha {report.alpha:g}, "
        + f"{correction}-adjusted p, sequential target n {report.target_n:g})",
        f"SRM p-value {_p(report.srm_p_value)}  {srm_note}",
    ]
    if report.cuped_theta:
        lines.append(f"revenue lift CUPED-adjusted (theta {report.cuped_theta:.4g})")
    header = [h.format(level=f"{(1 - report.alpha) * 100:g}%") for h in _HEADER]
    table = [header] + [_cells(report, row, metric) for row in report.rows for metric in METRICS]
    widths = [max(len(cells[i]) for cells in table) for i in range(len(header))]
    for cells in table:
        padded = (c.rjust(w) if i in _RIGHT else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        lines.append("  ".join(padded).rstrip())
    detectable = [
        f"{r.detectable_lift * 100:.1f}% ({row.variation})"
        for row in report.rows[1:]
        if (r := row.result(report.primary)) is not None and not math.isnan(r.detectable_lift)
    ]
    if detectable:
        lines.append(
            f"detectable at target n {report.target_n:g} with {DETECTABLE_POWER:.0%} power (always-valid): "
            + f"{report.primary} lift of +/-" + ", +/-".join(detectable)
        )
    lines += [
        "fixed: valid for one look at the planned n; looked at again and again it finds effects not there",
        "always-valid: valid at every look; the decision uses its p-value, adjusted across treatments",
    ]
    return "\n".join(lines)


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def _pair(ci: tuple[float, float]) -> list[float | None]:
    return [_num(ci[0]), _num(ci[1])]


def to_json(report: Report) -> dict[str, Any]:
    """The report as JSON-ready dict (NaN and infinities become None)."""
    variants = []
    for row in report.rows:
        metrics = {}
        for r in row.results:
            c = r.comparison
            metrics[r.metric] = {
                "method": c.method,
                "control": _num(c.control),
                "treatment": _num(c.treatment),
                "difference": _num(c.difference),
                "difference_ci": _pair(c.difference_ci),
                "lift": _num(c.relative),
                "lift_ci": _pair(r.lift_ci),
                "statistic": _num(c.statistic),
                "df": _num(c.df),
                "p_value": _num(c.p_value),
                "p_adjusted": _num(r.p_adjusted),
                "sequential_lift_ci": _pair(r.sequential_ci),
                "sequential_p_value": _num(r.sequential_p),
                "detectable_lift": _num(r.detectable_lift),
            }
        variants.append({
            "variation": row.variation,
            "control": row.is_control,
            "n": row.n,
            "conversions": row.conversions,
            "rate": _num(row.rate),
            "mean": _num(row.mean),
            "decision": row.decision,
            "decision_p_value": _num(row.decision_p),
            "metrics": metrics,
        })  # fmt: skip
    return {
        "experiment": report.experiment_key,
        "alpha": report.alpha,
        "correction": report.correction,
        "primary_metric": report.primary,
        "sequential_target_n": report.target_n,
        "detectable_lift_power": DETECTABLE_POWER,
        "guarantees": dict(GUARANTEES),
        "total_n": report.total_n,
        "cuped_theta": _num(report.cuped_theta),
        "srm": {
            "p_value": _num(report.srm_p_value),
            "warning": report.srm_warning,
            "threshold": SRM_THRESHOLD,
        },
        "variants": variants,
    }
