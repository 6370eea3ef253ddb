"""Experiment statistics in the real Redis: idempotent absolute writes, reads, and the report CLI.

Numbers in the CLI output are checked against scipy/statsmodels computed from the per-unit data
the statistics were summed from (not from the statistics themselves).
"""

from __future__ import annotations

import json
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from statsmodels.stats.proportion import proportions_ztest

from config.settings import settings_to_json
from connectors.redis_experiments import ExperimentRow, RedisExperiments
from operators.experiments.definitions import ExperimentRegistry, load_definitions, parse_definitions
from operators.experiments.stats import VariantStats
from pipelines.experiment_stats import EXPERIMENT_STORE_COLUMNS, ExperimentStoreWriter
from tests.helpers import ROOT, fresh_names, make_settings
from zhongtai.cli import main

pytestmark = pytest.mark.stack

(DEFN,) = parse_definitions("""
experiments:
  - key: coupon-test
    variants: [{key: coupon10, weight: 0.5}, {key: coupon20, weight: 0.5}]
    assign_on: [register]
    conversion: {event_type: coupon_redeem, window: 7d}
    cuped: {covariate_days: 30}
""")


@pytest.fixture
def store():
    settings = make_settings()
    s = RedisExperiments(settings.redis, prefix=fresh_names().prefix)
    yield s
    for k in s.client.scan_iter(match=f"{s.prefix}:*"):
        s.client.delete(k)
    s.close()


def units(seed: int, n: int, p: float, lift: float) -> list[tuple[bool, Decimal, Decimal]]:
    """Per-unit (converted, post-exposure revenue y, pre-exposure revenue x), cents exact."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = Decimal(int(rng.gamma(2.0, 1500.0))) / 100 if rng.random() < 0.6 else Decimal("0.00")
        conv = bool(rng.random() < p)
        y = Decimal(int((3000 + float(x) * 40 + rng.normal(0, 800)) * lift)) / 100 if conv else Decimal("0.00")
        out.append((conv, max(y, Decimal("0.00")), x))
    return out


def row_of(variant: str, us: list[tuple[bool, Decimal, Decimal]]) -> ExperimentRow:
    """What the SQL views emit for these units: exact decimal sums."""
    return ExperimentRow(
        "coupon-test", variant, len(us), sum(c for c, _, _ in us),
        sum((y for _, y, _ in us), Decimal(0)), sum((y * y for _, y, _ in us), Decimal(0)),
        sum((x for _, _, x in us), Decimal(0)), sum((x * x for _, _, x in us), Decimal(0)),
        sum((x * y for _, y, x in us), Decimal(0)),
    )  # fmt: skip


def test_absolute_writes_are_idempotent_and_read_back_exactly(store):
    older = ExperimentRow("coupon-test", "coupon10", 3, 1, Decimal("12.50"), Decimal("156.25"), Decimal(4),
                          Decimal(16), Decimal(50))  # fmt: skip
    newer = ExperimentRow("coupon-test", "coupon10", 4, 2, Decimal("20.00"), Decimal("212.5"), Decimal("4.00"),
                          Decimal("16.0000"), Decimal("50.0000"))  # fmt: skip
    store.write([older, newer])
    store.write([older, newer])  # a replay of the same batch
    assert store.raw("coupon-test", "coupon10") == {
        "units": "4", "converted": "2", "rev_sum": "20.00", "rev_sumsq": "212.5000", "cov_sum": "4.00",
        "cov_sumsq": "16.0000", "cov_rev_sum": "50.0000"}  # fmt: skip
    assert store.read_stats("coupon-test", ["coupon10", "coupon20"]) == {
        "coupon10": VariantStats(4, 2, 20.0, 212.5, 4.0, 16.0, 50.0)}  # fmt: skip
    # Negative control: blind increments (what a replay must never do) double the counts.
    naive = f"{store.prefix}:naive"
    for _ in range(2):
        store.client.hincrby(naive, "units", newer.units)
    assert store.client.hget(naive, "units") != "4"


def test_meta_and_variants(store):
    assert store.definition("coupon-test") is None
    store.write([row_of("coupon20", units(1, 5, 0.5, 1.0))])
    assert store.variants("coupon-test") == ["coupon20"]  # by scanning, no meta yet
    store.write_meta([DEFN])
    assert store.definition("coupon-test") == DEFN
    assert store.variants("coupon-test") == ["coupon10", "coupon20"]
    assert store.client.hget(store.meta_key("coupon-test"), "version") == "1"
    assert store.delete_experiment("coupon-test") == 2 and store.variants("coupon-test") == []


def test_the_flink_writer_function_writes_batches_and_meta(store):
    settings = make_settings()
    writer = ExperimentStoreWriter(settings_to_json(settings), [DEFN], redis_prefix=store.prefix)
    r = row_of("coupon10", units(2, 50, 0.3, 1.0))
    cols = [pd.Series([getattr(r, f) for _ in range(2)]) for f in ExperimentRow.__slots__]
    assert len(cols) == len(EXPERIMENT_STORE_COLUMNS)
    out = writer(*cols)
    assert out.tolist() == [2, 2]
    assert store.raw("coupon-test", "coupon10") == r.fields()
    assert store.definition("coupon-test") == DEFN


def _report(store, capsys, *extra: str) -> str:
    code = main(["experiment", "report", "coupon-test", "--prefix", store.prefix, *extra])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def test_report_cli_numbers_match_scipy_on_the_unit_data(store, capsys):
    control, treat = units(3, 2400, 0.10, 1.0), units(4, 2600, 0.13, 1.15)
    store.write_meta([DEFN])
    store.write([row_of("coupon10", control), row_of("coupon20", treat)])
    rep = json.loads(_report(store, capsys, "--json"))

    c_conv = np.array([c for c, _, _ in control], dtype=float)
    t_conv = np.array([c for c, _, _ in treat], dtype=float)
    _, p_conv = proportions_ztest([t_conv.sum(), c_conv.sum()], [len(t_conv), len(c_conv)])
    # CUPED by hand: theta = pooled cov(x, y) / var(x); Welch on y - theta (x - mean x).
    y = np.array([float(v) for _, v, _ in control + treat])
    x = np.array([float(v) for _, _, v in control + treat])
    theta = np.cov(x, y, ddof=1)[0, 1] / np.var(x, ddof=1)
    adj = y - theta * (x - x.mean())
    welch = sps.ttest_ind(adj[len(control):], adj[:len(control)], equal_var=False)
    srm = sps.chisquare([len(control), len(treat)], [2500, 2500]).pvalue

    assert rep["total_n"] == 5000 and rep["cuped_theta"] == pytest.approx(theta, rel=1e-9)
    assert rep["srm"]["p_value"] == pytest.approx(srm, rel=1e-9) and rep["srm"]["warning"] is False
    ctl, trt = rep["variants"]
    assert (ctl["variation"], ctl["n"], ctl["conversions"]) == ("coupon10", 2400, int(c_conv.sum()))
    assert (trt["variation"], trt["n"], trt["conversions"]) == ("coupon20", 2600, int(t_conv.sum()))
    conv, revenue = trt["metrics"]["conversion"], trt["metrics"]["revenue"]
    assert conv["p_value"] == pytest.approx(p_conv, rel=1e-9)
    assert conv["lift"] == pytest.approx(t_conv.mean() / c_conv.mean() - 1, rel=1e-12)
    assert revenue["method"] == "welch+cuped"
    assert revenue["p_value"] == pytest.approx(welch.pvalue, rel=1e-6)
    assert revenue["statistic"] == pytest.approx(welch.statistic, rel=1e-9)
    assert revenue["df"] == pytest.approx(welch.df, rel=1e-9)
    assert trt["mean"] == pytest.approx(float(np.mean([float(v) for _, v, _ in treat])), rel=1e-12)

    table = _report(store, capsys)
    lines = table.splitlines()
    assert lines[0] == "Experiment coupon-test: 5000 units (alpha 0.05, Holm-adjusted p, sequential target n 5000)"
    assert lines[1] == f"SRM p-value {srm:.4f}  ok"
    assert lines[2] == f"revenue lift CUPED-adjusted (theta {theta:.4g})"
    conv_line = next(ln for ln in lines if ln.startswith("coupon20") and " conversion " in ln)
    rate = f"{t_conv.mean() * 100:.2f}%"
    lift = f"{(t_conv.mean() / c_conv.mean() - 1) * 100:+.1f}%"
    p_txt = "<0.0001" if p_conv < 0.0001 else f"{p_conv:.4f}"
    assert conv_line.split()[:5] == ["coupon20", "conversion", "2600", rate, lift]
    assert p_txt in conv_line.split() and conv_line.split()[-1] == trt["decision"] == "ship"


def test_report_warns_on_sample_ratio_mismatch(store, capsys):
    store.write_meta([DEFN])
    store.write([row_of("coupon10", units(5, 2700, 0.1, 1.0)), row_of("coupon20", units(6, 2300, 0.1, 1.0))])
    table = _report(store, capsys)
    assert "WARNING: sample ratio mismatch" in table and "stop: SRM" in table
    # Negative control: a balanced split carries no warning.
    store.write([row_of("coupon20", units(6, 2700, 0.1, 1.0))])
    assert "WARNING" not in _report(store, capsys)


def test_report_of_an_unknown_experiment_says_what_to_do(store, capsys):
    code = main(["experiment", "report", "nope", "--prefix", store.prefix])
    err = capsys.readouterr().err
    assert code == 1 and "no experiment 'nope'" in err and "--file" in err


def test_validate_and_publish_dry_run(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text("experiments:\n  - {key: k1, variants: [a, b]}\n", encoding="utf-8")
    assert main(["experiment", "validate", str(good)]) == 0
    assert capsys.readouterr().out.strip() == f"{good}: ok, 1 experiment(s): k1"
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiments:\n  - key: k1\n    variants: [a, b]\n    coverage: 3\n", encoding="utf-8")
    assert main(["experiment", "validate", str(bad)]) == 1
    assert capsys.readouterr().err.splitlines()[0] == f"{bad}:4: experiments[0].coverage: must be within [0, 1], got 3"
    assert main(["experiment", "publish", str(bad)]) == 1
    assert main(["experiment", "publish", str(good), "--dry-run"]) == 0
    (msg,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert (msg["kind"], msg["op"], msg["key"], msg["version"]) == ("experiment", "upsert", "k1", 1)


def test_publish_sends_one_upsert_per_definition_to_the_control_topic(capsys):
    from confluent_kafka import Consumer, TopicPartition

    settings = make_settings()
    topic = f"zt.t{fresh_names().tag}.control"
    shipped = str(ROOT / "config" / "experiments.yaml")
    assert main(["experiment", "publish", shipped, "--topic", topic]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"published coupon-value v1 to {topic}", f"published homepage-banner v1 to {topic}"]  # fmt: skip
    c = Consumer({"bootstrap.servers": settings.kafka.bootstrap, "group.id": f"chk-{topic}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        got = []
        for _ in range(20):
            got += [m for m in c.consume(10, timeout=1.0) if not m.error()]
            if len(got) >= 2:
                break
    finally:
        c.close()
        from confluent_kafka.admin import AdminClient

        AdminClient({"bootstrap.servers": settings.kafka.bootstrap}).delete_topics([topic])
    registry = ExperimentRegistry()
    for m in got:
        registry, res = registry.apply(json.loads(m.value()), now_ms=0)
        assert res.accepted and m.key().decode() == f"experiment:{res.key}"
    assert [d.key for d in registry.running()] == ["coupon-value", "homepage-banner"]
    assert registry.running() == load_definitions(shipped)
