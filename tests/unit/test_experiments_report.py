"""experiment_report / format_table / to_json: numbers come from the engine, decisions follow the rules."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import chisquare
from statsmodels.stats.multitest import multipletests

from operators.experiments.assignment import Experiment
from operators.experiments.report import GUARANTEES, experiment_report, format_table, to_json
from operators.experiments.sequential import sequential_critical, sequential_detectable_effect
from operators.experiments.stats import (
    VariantStats,
    cuped_test,
    cuped_theta,
    fixed_lift_interval,
    lift_interval,
    sequential_p_value,
    two_proportion_test,
)

AB = Experiment(key="checkout-button", variations=("control", "green"))


def rates(n: int, conversions: int, revenue_per_conversion: float = 10.0) -> VariantStats:
    """n units, ``conversions`` of which converted with a fixed revenue (no covariate)."""
    r = revenue_per_conversion
    return VariantStats(n=n, conversions=conversions, sum_y=conversions * r, sum_y2=conversions * r * r)


def decision(report, variation="green"):
    return next(row.decision for row in report.rows if row.variation == variation)


@pytest.mark.parametrize("control, treatment, expected", [
    (rates(10_000, 1000), rates(10_000, 1300), "ship"),
    (rates(10_000, 1000), rates(10_000, 700), "stop: worse"),
    (rates(10_000, 1000), rates(9_000, 900), "stop: SRM"),
    (rates(1_000, 100), rates(1_000, 110), "keep running"),  # 2,000 < target 5,000 units
    (rates(10_000, 1000), rates(10_000, 1010), "no difference"),  # 20,000 >= target, nothing there
    (rates(1, 0), rates(0, 0), "keep running"),  # nothing computable yet
])  # fmt: skip
def test_decision_hints(control, treatment, expected):
    report = experiment_report(AB, {"control": control, "green": treatment})
    assert decision(report) == expected
    assert report.rows[0].decision is None
    assert report.srm_warning is (expected == "stop: SRM")


def test_fixed_significance_alone_does_not_ship_while_peeking():
    # 2,000 units: the fixed-horizon p is below 0.05 but the always-valid p is not yet.
    report = experiment_report(AB, {"control": rates(1000, 100), "green": rates(1000, 135)})
    conv = report.rows[1].result("conversion")
    assert conv.p_value < 0.05 < conv.sequential_p
    assert decision(report) == "keep running"


def test_srm_threshold_is_one_in_a_thousand():
    # 50/50 split, 10,000 units: chi2 p ~ 0.00047 (warn) vs ~ 0.0016 (no warning)
    warn = experiment_report(AB, {"control": rates(5175, 500), "green": rates(4825, 480)})
    ok = experiment_report(AB, {"control": rates(5157, 500), "green": rates(4843, 480)})
    assert warn.srm_p_value < 0.001 < ok.srm_p_value
    assert warn.srm_warning and not ok.srm_warning
    assert "WARNING: sample ratio mismatch" in format_table(warn) and "WARNING" not in format_table(ok)


def test_report_numbers_are_the_engines_numbers():
    rng = np.random.default_rng(9)
    exp = Experiment(key="three-way", variations=("control", "a", "b"), weights=(0.4, 0.3, 0.3))
    stats = {}
    for name, n, p in (("control", 4000, 0.10), ("a", 3000, 0.12), ("b", 3000, 0.10)):
        x = rng.gamma(2.0, 10.0, n)
        conv = rng.random(n) < p
        y = np.where(conv, 30.0 + 0.7 * x + rng.normal(0, 5, n), 0.0)
        stats[name] = VariantStats.from_units(zip(conv.tolist(), y.tolist(), x.tolist()))
    report = experiment_report(exp, stats, alpha=0.1, target_n=8000)
    c = stats["control"]
    theta = cuped_theta(stats.values())
    mean_x = (c.sum_x + stats["a"].sum_x + stats["b"].sum_x) / 10_000
    assert report.cuped_theta == theta and report.total_n == 10_000

    raw_p = []
    for row in report.rows[1:]:
        s = stats[row.variation]
        conv = two_proportion_test(c.conversions, c.n, s.conversions, s.n, 0.1)
        rev, _ = cuped_test(c, s, 0.1, theta, mean_x)
        assert row.result("conversion").comparison == conv
        assert row.result("revenue").comparison == rev
        assert rev.method == "welch+cuped"
        n = c.n + s.n
        for r, comp in ((row.result("conversion"), conv), (row.result("revenue"), rev)):
            # always-valid: the difference's p-value and Fieller's lift interval at the sequence's
            # critical value (not the delta-method lift: it fails A/A tests, see test_experiments_simulation)
            assert r.sequential_ci == lift_interval(
                comp.control, comp.control_se, comp.treatment, comp.treatment_se, sequential_critical(n, 0.1, 8000)
            )
            assert r.sequential_p == sequential_p_value(comp.difference, comp.difference_se, n, 0.1, 8000)
            assert r.lift_ci == fixed_lift_interval(comp)
            assert r.detectable_lift == sequential_detectable_effect(
                comp.difference_se * math.sqrt(n / 8000), 8000, 0.1, 8000, 0.8
            ) / comp.control
        raw_p += [conv.p_value, rev.p_value]
    adjusted = [r.p_adjusted for row in report.rows[1:] for r in row.results]
    assert np.allclose(adjusted, multipletests(raw_p, method="holm")[1], rtol=1e-12, atol=0)
    bh = experiment_report(exp, stats, alpha=0.1, target_n=8000, correction="bh")
    assert np.allclose(
        [r.p_adjusted for row in bh.rows[1:] for r in row.results],
        multipletests(raw_p, method="fdr_bh")[1],
        rtol=1e-12,
        atol=0,
    )
    assert report.srm_p_value == pytest.approx(chisquare([4000, 3000, 3000], [4000, 3000, 3000]).pvalue)


def test_primary_metric_can_be_revenue():
    # same conversions, but green's converters spend twice as much
    stats = {"control": rates(10_000, 1000, 10.0), "green": rates(10_000, 1000, 20.0)}
    assert decision(experiment_report(AB, stats)) == "no difference"
    assert decision(experiment_report(AB, stats, primary="revenue")) == "ship"


def test_missing_variations_count_as_empty_and_unknown_ones_are_refused():
    report = experiment_report(AB, {"control": rates(100, 10)})
    assert report.rows[1].n == 0 and math.isnan(report.rows[1].rate)
    assert report.srm_warning  # 100 vs 0 on a 50/50 split
    with pytest.raises(ValueError, match=r"checkout-button.*unknown variations \['blue'\]"):
        experiment_report(AB, {"blue": rates(1, 0)})
    with pytest.raises(ValueError, match="primary metric 'clicks'"):
        experiment_report(AB, {}, primary="clicks")


# Both lift intervals are Fieller's (asymmetric around the lift), no longer the delta method's
# ([+19.9%, +40.1%] and [+13.9%, +46.1%]: the simulation found the first undercovering skewed revenue
# and the test on the second failing A/A tests); the columns say which guarantee they carry, the
# last lines what that means.
EXPECTED_TABLE = """\
Experiment checkout-button: 20000 units (alpha 0.05, Holm-adjusted p, sequential target n 5000)
SRM p-value 1.0000  ok
variant  metric          n   value    lift  fixed 95% CI      fixed p  fixed p adj  always-valid 95% CI  decision
control  conversion  10000  10.00%                                                                       (control)
control  revenue     10000       1
green    conversion  10000  13.00%  +30.0%  [+20.3%, +40.6%]  <0.0001      <0.0001  [+14.9%, +47.4%]     ship
green    revenue     10000     1.3  +30.0%  [+20.3%, +40.6%]  <0.0001      <0.0001  [+14.9%, +47.4%]
detectable at target n 5000 with 80% power (always-valid): conversion lift of +/-34.9% (green)
fixed: valid for one look at the planned n; looked at again and again it finds effects not there
always-valid: valid at every look; the decision uses its p-value, adjusted across treatments"""


def test_format_table_exact():
    report = experiment_report(AB, {"control": rates(10_000, 1000), "green": rates(10_000, 1300)})
    assert format_table(report) == EXPECTED_TABLE


def test_format_table_columns_are_aligned_and_nan_is_a_dash():
    exp = Experiment(key="k", variations=("control", "a-much-longer-name", "b"))
    text = format_table(
        experiment_report(exp, {"control": rates(500, 50), "a-much-longer-name": rates(480, 60)})
    )
    table = text.splitlines()[2:-3]  # without the detectable-lift line and the legend
    metric_col = table[0].index("metric")
    assert all(line[metric_col:].startswith(("metric", "conversion", "revenue")) for line in table)
    assert any(line.startswith("b ") and " - " in line for line in table)


def test_to_json_is_strict_json_with_the_report_numbers():
    stats = {"control": rates(10_000, 1000), "green": rates(10_000, 1300)}
    report = experiment_report(AB, stats)
    doc = to_json(report)
    assert json.loads(json.dumps(doc, allow_nan=False)) == doc
    green = doc["variants"][1]
    conv = report.rows[1].result("conversion")
    assert green["decision"] == "ship" and green["n"] == 10_000 and green["conversions"] == 1300
    assert green["metrics"]["conversion"]["lift"] == conv.lift
    assert green["metrics"]["conversion"]["lift_ci"] == list(conv.lift_ci)
    assert green["metrics"]["conversion"]["sequential_lift_ci"] == list(conv.sequential_ci)
    assert green["metrics"]["conversion"]["df"] is None  # z-test: infinite df
    assert doc["srm"] == {"p_value": report.srm_p_value, "warning": False, "threshold": 0.001}
    empty = to_json(experiment_report(AB, {}))
    assert empty["variants"][1]["metrics"]["conversion"]["p_value"] is None
    json.dumps(empty, allow_nan=False)


def test_json_says_which_guarantee_each_number_carries():
    doc = to_json(experiment_report(AB, {"control": rates(10_000, 1000), "green": rates(10_000, 1300)}))
    assert doc["guarantees"] == GUARANTEES
    green = doc["variants"][1]
    named = set(green["metrics"]["conversion"]) | set(green)
    assert set(GUARANTEES) <= named, set(GUARANTEES) - named
    assert {GUARANTEES[k] for k in ("lift_ci", "p_value", "p_adjusted")} == {"fixed-horizon"}
    assert {GUARANTEES[k] for k in ("sequential_lift_ci", "sequential_p_value", "decision")} == {"always-valid"}
    assert green["decision_p_value"] == green["metrics"]["conversion"]["sequential_p_value"]  # one treatment


def test_one_big_spender_in_the_control_does_not_stop_the_treatment():
    # 100 units per arm, revenue primary: the control's five buyers include one of 5,000, the
    # treatment's three spent 20 each. The delta-method lift (-98.8%) has a standard error of 0.013,
    # so the always-valid test on it said "stop: worse"; the difference test (t = -1.0) does not,
    # and Fieller's interval is unbounded (the control mean is within its critical value of 0).
    control = VariantStats.from_units([(True, 5000.0)] + [(True, 20.0)] * 4 + [(False, 0.0)] * 95)
    treatment = VariantStats.from_units([(True, 20.0)] * 3 + [(False, 0.0)] * 97)
    report = experiment_report(AB, {"control": control, "green": treatment}, primary="revenue")
    revenue = report.rows[1].result("revenue")
    assert revenue.lift < -0.95 and abs(revenue.lift / revenue.comparison.relative_se) > 40
    old_p = sequential_p_value(revenue.lift, revenue.comparison.relative_se, 200)  # the method before
    assert old_p < 1e-10  # negative control: the old always-valid p "found" the effect
    assert revenue.sequential_p > 0.5 and revenue.comparison.p_value > 0.1
    assert decision(report) == "keep running"
    lo, hi = revenue.sequential_ci
    assert lo < 0 < hi
