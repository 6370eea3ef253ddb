"""Issue 19: the experiment statistics hold what they promise under simulation (pure, seconds).

The small scale of ``bench.experiments_sim`` (seeded, 300-4,000 runs per simulation): A/A tests
peeked at 50 times, a known lift, CUPED with a covariate of known correlation, SRM on correct and
lossy splits, Holm/BH over 3 treatments x 2 metrics. Bounds are the claim plus three Monte-Carlo
standard errors, so a broken method fails them; each simulation also runs a broken method (the
negative control) and shows that it does fail. The full scale (10,000 runs) is
``python -m bench.experiments_sim``, results in docs/experiments.md ("Proven by simulation").
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from bench import experiments_sim as sim
from operators.experiments.stats import Moments

ALPHA = sim.ALPHA


def margin(p: float, runs: int) -> float:
    """Three Monte-Carlo standard errors of a share p over ``runs``."""
    return 3.0 * math.sqrt(p * (1.0 - p) / runs)


def at_most(rate: dict[str, Any], bound: float) -> bool:
    return rate["rate"] <= bound + margin(bound, rate["runs"])


def at_least(rate: dict[str, Any], bound: float) -> bool:
    return rate["rate"] >= bound - margin(bound, rate["runs"])


@pytest.fixture(scope="module")
def small() -> dict[str, Any]:
    return sim.run("small", seed=19)


def _checks(doc: Any) -> Iterator[dict[str, Any]]:
    if isinstance(doc, dict):
        if "max_relative_difference" in doc:
            yield doc
        for v in doc.values():
            yield from _checks(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from _checks(v)


def test_the_vectorised_path_gives_the_engines_numbers(small):
    # every simulation compared a sample of its cells with experiment_report / srm_p_value
    checks = list(_checks(small))
    assert len(checks) >= 8 and sum(c["cells"] for c in checks) >= 400
    for c in checks:
        assert c["max_relative_difference"] < 1e-9, c
        assert c["decisions_differing"] == 0 and c.get("intervals_differing", 0) == 0, c


def test_peeking_breaks_the_fixed_horizon_test_but_not_the_always_valid_one(small):
    for aa in small["aa"]:
        assert aa["runs"] >= 300 and aa["looks"] >= 50
        for metric in ("conversion", "revenue"):
            assert aa[f"{metric}_fixed_any_look"]["rate"] > 2 * ALPHA  # the negative control
            assert at_most(aa[f"{metric}_fixed_last_look"], ALPHA)  # one look: what it is made for
            assert at_most(aa[f"{metric}_always_valid_any_look"], ALPHA), (aa["units"], metric)
        assert at_most(aa["hint_ship_or_worse_any_look"], ALPHA)


def test_the_always_valid_test_on_the_delta_method_lift_fails_the_same_bound():
    # Negative control, and the flaw this simulation found: the report's always-valid p on the
    # delta-method relative lift (before issue 19) "finds" an effect in a third of A/A tests.
    aa = sim.simulate_peeking(np.random.default_rng(7), 400, 5_000, 5_000, sim.P_CONVERSION,
                              sequential=sim.delta_lift_p)  # fmt: skip
    assert not at_most(aa["revenue_always_valid_any_look"], ALPHA)
    assert aa["revenue_always_valid_any_look"]["rate"] > 0.2


def test_power_is_at_least_what_the_report_promises(small):
    pw = small["power"]
    for metric in ("conversion", "revenue"):
        assert at_least(pw[f"{metric}_always_valid_any_look"], pw[f"{metric}_promised_always_valid"])
        assert at_least(pw[f"{metric}_fixed_last_look"], pw[f"{metric}_promised_fixed"])
    assert pw["conversion_promised_always_valid"] == pytest.approx(0.8, abs=0.01)
    assert pw["conversion_report_detectable_lift_median"] == pytest.approx(pw["lift"], rel=0.05)


def _cuped_holds(row: dict[str, Any]) -> bool:
    theory = row["variance_ratio_theory"]
    return (
        abs(row["variance_ratio"] - theory) <= 0.15
        and abs(row["variance_ratio_reported"] - theory) <= 0.07
        and at_least(row["coverage_fixed_difference"], 1 - ALPHA)
        and at_least(row["coverage_fixed_lift"], 1 - ALPHA)
        and at_least(row["coverage_always_valid_lift_every_look"], 1 - ALPHA)
    )


def test_cuped_cuts_the_variance_by_rho_squared_and_keeps_its_coverage(small):
    rows = small["cuped"]["by_rho"]
    assert [r["rho"] for r in rows] == [0.3, 0.5, 0.7, 0.9]
    for row in rows:
        assert _cuped_holds(row), row
        assert row["theta_median"] == pytest.approx(row["beta"], rel=0.05)


def _mean_x_per_arm(c: sim.ArmSums, t: sim.ArmSums) -> tuple[Moments, Moments, np.ndarray]:
    """A broken CUPED: each arm centred on its own mean of x, so the means are not adjusted while
    the variances are."""
    mc, mt, theta = sim.cuped_moments(c, t)
    return Moments(c.n, c.sum_y / c.n, mc.variance), Moments(t.n, t.sum_y / t.n, mt.variance), theta


def test_a_broken_cuped_fails_the_same_bounds():
    doc = sim.simulate_cuped(np.random.default_rng(3), 300, 20_000, (0.7, 0.9), check_cells=0,
                             adjust=_mean_x_per_arm)  # fmt: skip
    for row in doc["by_rho"]:
        assert not _cuped_holds(row)
        assert not at_least(row["coverage_fixed_difference"], 1 - ALPHA)  # overconfident intervals


def test_srm_false_alarms_at_its_threshold_and_finds_a_lossy_arm(small):
    srm = small["srm"]
    for row in srm["by_units"]:
        assert at_most(row["correct_last_look"], srm["threshold"])
        assert row["correct_any_look"]["rate"] >= row["correct_last_look"]["rate"]
        assert row["lossy_last_look"]["rate"] > row["correct_last_look"]["rate"]
    assert srm["by_units"][-1]["lossy_last_look"]["rate"] > 0.95  # 2 % lost at the power horizon


def test_holm_holds_the_family_wise_error_and_bh_the_false_discovery_rate(small):
    mt = small["multiple"]
    for scenario in ("null", "one_effect"):
        s = mt[scenario]
        assert s["fwer_raw"]["rate"] > ALPHA + margin(ALPHA, mt["runs"])  # negative control: no correction
        assert at_most(s["fwer_holm"], ALPHA)
        assert s["fdr_bh"] <= ALPHA + margin(ALPHA, mt["runs"])
        assert at_most(s["hint_false_decision"], ALPHA)
    assert mt["one_effect"]["power_holm"] > 0.1


def test_the_simulations_are_seeded():
    def once() -> dict[str, Any]:
        return sim.simulate_peeking(np.random.default_rng(11), 100, 5_000, 5_000, sim.P_CONVERSION)

    assert once() == once()


def test_the_bench_command_writes_its_json_and_table(small, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sim, "run", lambda scale, seed: small if (scale, seed) == ("small", 19) else None)
    out = tmp_path / "sim.json"
    assert sim.main(["--small", "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == small
    table = capsys.readouterr().out
    assert table.startswith("| simulation") and "| A/A, 5,000 units, 50 looks" in table
    assert len(sim.table_rows(small)) == len(table.splitlines()) - 4  # header, rule, blank, footer
