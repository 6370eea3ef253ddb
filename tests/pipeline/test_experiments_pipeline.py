"""Experiment statistics views on the embedded mini-cluster: a hand-computed table and an oracle.

One Flink run per parallelism (1 and 2) carries two experiments at once: ``hand`` (a small
scenario whose expected table is written out below) and ``gen`` (a seeded random stream with
out-of-order arrival, checked against :func:`oracle`, an independent plain-Python reading of
the rules in docs/experiments.md). The oracle and the scenario are also checked without Flink,
with naive variants of the rules as negative controls.
"""

from __future__ import annotations

import random
import sys
from decimal import Decimal

import pytest

from operators.experiments.definitions import ExperimentDefinition, assign, parse_definitions
from pipelines.experiment_stats import (
    EXPERIMENT_STORE_COLUMNS,
    definition_rows_statement,
    definitions_statements,
    experiment_statements,
)

H = 3_600_000
DAY = 24 * H
T0 = 1_790_000_000_000  # the generated stream
T1 = T0 + 100 * DAY  # the hand scenario, far from the generated one

DEFS = parse_definitions(f"""
experiments:
  - key: hand
    variants: [control, treat]
    start: {T1}
    stop: {T1 + 10 * DAY}
    assign_on: [register]
    conversion: {{event_type: coupon_redeem, window: 1d}}
    revenue: {{event_type: purchase, window: 2d}}
    cuped: {{covariate_days: 1}}
  - key: gen
    hash_seed: gen-seed
    variants: [{{key: c, weight: 0.5}}, {{key: t1, weight: 0.3}}, {{key: t2, weight: 0.2}}]
    coverage: 0.9
    namespace: [ns, 0.0, 0.7]
    start: {T0}
    stop: {T0 + 7 * DAY}
    assign_on: [register, login]
    conversion: {{event_type: purchase, window: 3d}}
    revenue: purchase
    cuped: {{covariate_days: 2}}
""")
HAND, GEN = DEFS


def ev(event_type, ts, unit, amount=None, exp_key=None, variation=None):
    return (event_type, ts, unit, None if amount is None else Decimal(amount), exp_key, variation)


# In arrival order. Comments give what each event does to the unit.
HAND_EVENTS = [
    # a1: control; pre-exposure revenue 100 inside the 1-day lookback, 50 outside it; a duplicate
    # exposure; converted; 20 after exposure; 999 exactly at the end of the 2-day window (excluded).
    ev("purchase", T1 - 2 * H, "a1", "100.00"),
    ev("purchase", T1 - 2 * DAY, "a1", "50.00"),
    ev("exposure", T1 + 1 * H, "a1", exp_key="hand", variation=0),
    ev("exposure", T1 + 3 * H, "a1", exp_key="hand", variation=0),
    ev("coupon_redeem", T1 + 2 * H, "a1"),
    ev("purchase", T1 + 2 * H, "a1", "20.00"),
    ev("purchase", T1 + 1 * H + 2 * DAY, "a1", "999.00"),
    # a2: treat; a redemption before exposure and one exactly at the 1-day window end (neither
    # counts); a purchase at exactly the exposure time counts.
    ev("coupon_redeem", T1 + H // 2, "a2"),
    ev("exposure", T1 + 1 * H, "a2", exp_key="hand", variation=1),
    ev("purchase", T1 + 1 * H, "a2", "10.00"),
    ev("coupon_redeem", T1 + 1 * H + DAY, "a2"),
    # a3: first arrives as treat at +10h, then an earlier control exposure (+2h) arrives: control,
    # first exposure +2h, so the +1h purchase is the covariate and the +5h one the metric.
    ev("exposure", T1 + 10 * H, "a3", exp_key="hand", variation=1),
    ev("purchase", T1 + 1 * H, "a3", "7.00"),
    ev("purchase", T1 + 5 * H, "a3", "30.00"),
    ev("exposure", T1 + 2 * H, "a3", exp_key="hand", variation=0),
    ev("coupon_redeem", T1 + 3 * H, "a3"),
    # a4: never exposed: variation out of range, before the start, unknown experiment.
    ev("exposure", T1 + 1 * H, "a4", exp_key="hand", variation=5),
    ev("exposure", T1 - 1 * H, "a4", exp_key="hand", variation=0),
    ev("exposure", T1 + 1 * H, "a4", exp_key="nope", variation=0),
    ev("purchase", T1 + 2 * H, "a4", "15.00"),
    # s1: assigned by the stream at its register event (assign() says control).
    ev("register", T1 + 1 * H, "s1"),
    ev("purchase", T1 + H // 2, "s1", "12.00"),
    ev("coupon_redeem", T1 + 2 * H, "s1"),
    ev("purchase", T1 + 3 * H, "s1", "40.00"),
    # s2: the stream says treat at +1h, the app exposes control at +2h: the app's variation, the
    # stream's (earlier) exposure time; so the +90m purchase is post-exposure.
    ev("register", T1 + 1 * H, "s2"),
    ev("exposure", T1 + 2 * H, "s2", exp_key="hand", variation=0),
    ev("purchase", T1 + 90 * 60_000, "s2", "5.00"),
    # s3: registers before the start: never exposed.
    ev("register", T1 - 1 * H, "s3"),
    ev("purchase", T1, "s3", "3.00"),
]

#: (units, converted, rev_sum, rev_sumsq, cov_sum, cov_sumsq, cov_rev_sum), by hand:
#: control = a1 (1, 20, 100), a3 (1, 30, 7), s1 (1, 40, 12), s2 (0, 5, 0); treat = a2 (0, 10, 0).
HAND_EXPECTED = {
    ("hand", "control"): (4, 3, Decimal("95.00"), Decimal("2925.0000"), Decimal("119.00"),
                          Decimal("10193.0000"), Decimal("2690.0000")),
    ("hand", "treat"): (1, 0, Decimal("10.00"), Decimal("100.0000"), Decimal("0.00"), Decimal("0.0000"),
                        Decimal("0.0000")),
}  # fmt: skip


def generated_events(seed: int = 11, units: int = 400) -> list[tuple]:
    """Registers/logins, app exposures (mostly agreeing with the hash, some not, some invalid),
    purchases around the experiment window; shuffled, so exposures often arrive late."""
    rng = random.Random(seed)
    out = []
    for i in range(units):
        u = f"g{i}"
        for _ in range(rng.randint(0, 2)):
            out.append(ev(rng.choice(["register", "login", "page_view"]), T0 + rng.randint(-DAY, 8 * DAY), u))
        for _ in range(rng.choice([0, 0, 1, 2, 3])):
            v = assign(GEN, u)
            if v is None or rng.random() < 0.15:
                v = rng.choice([0, 1, 2, 3, -1])
            out.append(ev("exposure", T0 + rng.randint(-DAY, 8 * DAY), u, exp_key="gen", variation=v))
        for _ in range(rng.randint(0, 4)):
            amount = f"{rng.randint(1, 50_000) / 100:.2f}"
            out.append(ev("purchase", T0 + rng.randint(-3 * DAY, 10 * DAY), u, amount))
    rng.shuffle(out)
    return out


def oracle(defs: list[ExperimentDefinition], events: list[tuple], *, naive_first: bool = False,
           naive_conversions: bool = False) -> dict[tuple[str, str], tuple]:  # fmt: skip
    """Per (experiment, variant) statistics, straight from the rules.

    ``naive_first``: the first exposure to arrive decides (instead of the earliest in event time);
    ``naive_conversions``: conversions and revenue count whatever their time (negative controls).
    """
    out: dict[tuple[str, str], list] = {}
    for d in defs:
        start, stop = d.experiment.start_ms, d.experiment.stop_ms

        def in_run(ts: int, start=start, stop=stop) -> bool:
            return (start is None or ts >= start) and (stop is None or ts < stop)

        app: dict[str, tuple[int, int]] = {}
        trig: dict[str, int] = {}
        for etype, ts, u, _, key, var in events:
            if not u:
                continue
            if (etype == "exposure" and key == d.key and var is not None and 0 <= var < len(d.variations)
                    and ts >= 0 and in_run(ts)):  # fmt: skip
                if naive_first:
                    app.setdefault(u, (ts, var))
                else:
                    app[u] = min(app.get(u, (ts, var)), (ts, var))
            if etype in d.assign_on and in_run(ts):
                trig[u] = min(trig.get(u, ts), ts)
        for u in sorted(set(app) | set(trig)):
            sv = assign(d, u) if u in trig else None
            if u in app:
                var, first = app[u][1], app[u][0] if sv is None else min(app[u][0], trig[u])
            elif sv is not None:
                var, first = sv, trig[u]
            else:
                continue
            mine = [(e[0], e[1], e[3] or Decimal(0)) for e in events if e[2] == u]
            cw = d.conversion.window_ms or 10**15
            rw = d.revenue.window_ms or 10**15

            def post(ts: int, w: int, first: int = first) -> bool:
                return naive_conversions or first <= ts < first + w

            conv = any(t == d.conversion.event_type and post(ts, cw) for t, ts, _ in mine)
            y = sum((a for t, ts, a in mine if t == d.revenue.event_type and post(ts, rw)), Decimal("0.00"))
            x = Decimal("0.00")
            if d.covariate_days:
                x = sum((a for t, ts, a in mine if t == d.revenue.event_type and first - d.covariate_ms <= ts < first),
                        Decimal("0.00"))  # fmt: skip
            acc = out.setdefault((d.key, d.variations[var]), [0, 0, Decimal("0.00"), Decimal("0.0000"),
                                                              Decimal("0.00"), Decimal("0.0000"), Decimal("0.0000")])
            for i, v in enumerate((1, int(conv), y, y * y, x, x * x, x * y)):
                acc[i] += v
    return {k: tuple(v) for k, v in out.items()}


def _quantized(table: dict) -> dict:
    q2, q4 = Decimal("0.01"), Decimal("0.0001")
    return {k: (v[0], v[1], v[2].quantize(q2), v[3].quantize(q4), v[4].quantize(q2), v[5].quantize(q4),
                v[6].quantize(q4)) for k, v in table.items()}  # fmt: skip


# ---- pure: the scenario, the oracle and the controls ---------------------------------------------------


def test_hand_scenario_preconditions():
    assert (assign(HAND, "s1"), assign(HAND, "s2")) == (0, 1)  # s2's app exposure (0) disagrees on purpose


def test_oracle_reproduces_the_hand_table():
    assert _quantized(oracle([HAND], HAND_EVENTS)) == HAND_EXPECTED


def test_negative_controls_naive_rules_give_other_tables():
    # The scenario can tell the rules apart: first-arrived exposure, or counting conversions and
    # revenue regardless of the exposure time, give different tables.
    assert _quantized(oracle([HAND], HAND_EVENTS, naive_first=True)) != HAND_EXPECTED
    assert _quantized(oracle([HAND], HAND_EVENTS, naive_conversions=True)) != HAND_EXPECTED
    gen = generated_events()
    assert oracle([GEN], gen, naive_first=True) != oracle([GEN], gen)
    assert oracle([GEN], gen, naive_conversions=True) != oracle([GEN], gen)


def test_generated_stream_exercises_every_path():
    table = oracle([GEN], generated_events())
    assert set(table) == {("gen", "c"), ("gen", "t1"), ("gen", "t2")}
    assert all(v[0] > 20 and 0 < v[1] < v[0] and v[4] > 0 for v in table.values()), table


def test_statements_refuse_an_unknown_unit():
    with pytest.raises(ValueError, match="unit must be person, device or item"):
        experiment_statements("src", unit="session")


# ---- on the mini-cluster -------------------------------------------------------------------------------


class _Hold:
    """A filter that lets everything through but waits ``seconds`` on its first call in a worker."""

    def __init__(self, seconds: float) -> None:
        self.__name__ = "exp_hold"
        self.seconds = seconds
        self.waited = False

    def __call__(self, _value: object) -> bool:
        if not self.waited:
            import time

            time.sleep(self.seconds)
            self.waited = True
        return True


def hold_udf(seconds: float = 4.0):
    from pyflink.table import DataTypes
    from pyflink.table.udf import udf

    return udf(_Hold(seconds), input_types=[DataTypes.STRING()], result_type=DataTypes.BOOLEAN(), name="exp_hold")


def run_statements(defs, events, parallelism: int, redis_prefix: str | None = None) -> dict[tuple[str, str], tuple]:
    """Run the views over ``events`` and return the last store row per (experiment, variant).

    With ``redis_prefix`` the rows go through the job's Redis writer (``experiment_store_udf``)
    and are read back from Redis instead of collected.
    """
    from pyflink.table import DataTypes, EnvironmentSettings, TableEnvironment

    from pipelines.events import job_options
    from pipelines.experiment_stats import assign_udf
    from tests.helpers import make_settings

    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    conf = t_env.get_config()
    for k, v in job_options(make_settings()).items():
        conf.set(k, v)
    conf.set("parallelism.default", str(parallelism))
    conf.set("python.executable", sys.executable)
    conf.set("python.client.executable", sys.executable)
    schema = DataTypes.ROW([
        DataTypes.FIELD("event_type", DataTypes.STRING()), DataTypes.FIELD("ts_ms", DataTypes.BIGINT()),
        DataTypes.FIELD("unit", DataTypes.STRING()), DataTypes.FIELD("amount", DataTypes.DECIMAL(18, 2)),
        DataTypes.FIELD("exp_key", DataTypes.STRING()), DataTypes.FIELD("variation", DataTypes.INT()),
    ])  # fmt: skip
    t_env.create_temporary_view("exp_src_all", t_env.from_elements(events, schema))
    # Definitions are looked up by the events that reach the join after them (docs/experiments.md):
    # hold the events back until the definition rows are in (the job's events wait for Kafka).
    t_env.create_temporary_function("exp_hold", hold_udf())
    t_env.execute_sql("CREATE TEMPORARY VIEW exp_src AS SELECT * FROM exp_src_all WHERE exp_hold(event_type)")
    t_env.create_temporary_function("zt_exp_assign", assign_udf())
    for stmt in [definition_rows_statement(defs, "exp_def_rows"), *definitions_statements("exp_def_rows"),
                 *experiment_statements("exp_src", unit="person")]:
        t_env.execute_sql(stmt)
    last: dict[tuple[str, str], tuple] = {}
    cols = ", ".join(EXPERIMENT_STORE_COLUMNS)
    if redis_prefix is not None:
        return _through_redis(t_env, defs, cols, redis_prefix)
    with t_env.sql_query(f"SELECT {cols} FROM zt_exp_store_rows").execute().collect() as rows:
        for r in rows:
            last[(r[0], r[1])] = tuple(r[2:])
    return {k: v for k, v in last.items() if v[0] > 0}  # a variant emptied by moves is written as zeros


@pytest.mark.flink
@pytest.mark.parametrize("parallelism, sink", [(1, "collect"), (2, "redis")])
def test_views_match_the_hand_table_and_the_oracle_exactly(parallelism, sink):
    """p=1: rows collected from the view; p=2: through the job's Redis writer, read back from Redis."""
    from tests.helpers import fresh_names

    gen = generated_events(seed=11 + parallelism)
    prefix = fresh_names().prefix if sink == "redis" else None
    got = run_statements(list(DEFS), HAND_EVENTS + gen, parallelism, prefix)
    assert {k: v for k, v in got.items() if k[0] == "hand"} == HAND_EXPECTED
    assert got == _quantized(oracle(list(DEFS), HAND_EVENTS + gen))


def _through_redis(t_env, defs, cols: str, prefix: str) -> dict[tuple[str, str], tuple]:
    from config.settings import settings_to_json
    from connectors.redis_experiments import STAT_FIELDS, RedisExperiments
    from pipelines.experiment_stats import experiment_store_udf
    from tests.helpers import make_settings

    settings = make_settings()
    t_env.create_temporary_function("zt_exp_store", experiment_store_udf(settings_to_json(settings), defs,
                                                                         redis_prefix=prefix))  # fmt: skip
    t_env.execute_sql("CREATE TEMPORARY TABLE exp_written (n BIGINT) WITH ('connector' = 'blackhole')")
    t_env.execute_sql(f"INSERT INTO exp_written SELECT zt_exp_store({cols}) FROM zt_exp_store_rows").wait()
    store = RedisExperiments(settings.redis, prefix=prefix)
    try:
        assert store.definition("hand") == HAND  # the writer recorded what it measured
        out = {}
        for d in defs:
            for v in d.variations:
                h = store.raw(d.key, v)
                if h and int(h["units"]) > 0:
                    out[(d.key, v)] = tuple(int(h[f]) if f in ("units", "converted") else Decimal(h[f])
                                            for f in STAT_FIELDS)  # fmt: skip
        return out
    finally:
        for k in store.client.scan_iter(match=f"{prefix}:*"):
            store.client.delete(k)
        store.close()
