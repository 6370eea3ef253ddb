"""The JVM bundler (``io.zhongtai.flink.bundle.KeyBundler``) against its Python reference
(``pipelines.bundles.bundle_rows``), on the embedded mini-cluster.

Rows with awkward values (quotes, backslashes, new lines, non-ASCII, decimals, nulls, a null key) go
through ``keyed_bundles`` into a keyed Python function that unpacks every bundle. Per key, the
concatenated bundles equal the reference's rows, in order; the bundles are fewer than the rows; the
event-time timers a row registers fire after it. Negative control: ``max_rows=1`` gives one bundle per
row (so the count check has teeth).
"""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from pipelines.bundles import bundle_rows
from tests.helpers import fresh_names, make_settings

T0 = 1_767_225_600_000
PAR = 2

ROWS = [
    ("p1", T0, "a", 1, Decimal("12.50"), True),
    ("p2", T0 + 1, 'q"uote\\back\nline\t', 2, None, False),
    ("p1", T0 + 2, "中文 ✓", -3, Decimal("0.00"), None),
    (None, T0 + 3, "null key", 4, Decimal("-7.05"), True),
    ("p,1", T0 + 4, "\u0001ctl", 5, Decimal("123456789012345.99"), False),
    ("p2", T0 + 5, "", 6, Decimal("1.00"), True),
    *[(f"k{i % 7}", T0 + 10 + i, f"v{i}", i, (Decimal(i) / 100).quantize(Decimal("0.01")), i % 2 == 0) for i in range(200)],
]


def test_reference_groups_in_arrival_order() -> None:
    got = bundle_rows([("a", 1, Decimal("1.10")), ("b", 2, None), ("a", 3, 4.5), (None, 0, float("nan"))])
    assert got == {"a": [[1, "1.10"], [3, 4.5]], "b": [[2, None]], "": [[0, None]]}
    assert list(got) == ["a", "b", ""]


def _run(max_rows: int) -> tuple[dict[str, list[list]], int, list[tuple[str, int]]]:
    from pyflink.common import Row, Types
    from pyflink.datastream.functions import KeyedProcessFunction
    from pyflink.table import DataTypes, Schema

    from connectors.jvm import zhongtai_jar
    from pipelines.bundles import keyed_bundles
    from zhongtai.jobs.runner import RunOptions, make_envs

    settings = make_settings(flink={"parallelism": PAR, "options": {"restart-strategy.type": "none"}})
    n = fresh_names()
    env, t_env = make_envs(settings, RunOptions(resume=False, job_name=n.job), [zhongtai_jar(settings)])
    in_type = Types.ROW_NAMED(["k", "ts", "s", "n", "d", "b"], [Types.STRING(), Types.LONG(), Types.STRING(),
                                                               Types.LONG(), Types.BIG_DEC(), Types.BOOLEAN()])
    # keyed before the table so that each key's rows stay in one subtask, in order, at any parallelism (in the
    # job a person's rows come from the subtasks of the aggregates that produce them, each in order)
    ds = env.from_collection([Row(*r) for r in ROWS], type_info=in_type).set_parallelism(1) \
        .key_by(lambda r: r[0] or "", key_type=Types.STRING()).map(lambda r: r, output_type=in_type)
    schema = (Schema.new_builder().column("k", DataTypes.STRING()).column("ts", DataTypes.BIGINT())
              .column("s", DataTypes.STRING()).column("n", DataTypes.BIGINT())
              .column("d", DataTypes.DECIMAL(18, 2)).column("b", DataTypes.BOOLEAN()).build())
    table = t_env.from_data_stream(ds, schema)
    keyed = keyed_bundles(t_env, table, ts_field=1, out_of_orderness_ms=0, idle_ms=0, max_delay_ms=60_000,
                          max_rows=max_rows, name="test")

    class Unpack(KeyedProcessFunction):
        def process_element(self, value, ctx):
            rows = orjson.loads(value)
            for r in rows:
                ctx.timer_service().register_event_time_timer(r[0])
            yield Row("b", ctx.get_current_key(), value, len(rows))

        def on_timer(self, timestamp, ctx):
            yield Row("t", ctx.get_current_key(), str(timestamp), 0)

    out_type = Types.ROW([Types.STRING(), Types.STRING(), Types.STRING(), Types.INT()])
    with keyed.process(Unpack(), output_type=out_type).execute_and_collect(n.job) as it:
        out = [tuple(r) for r in it]
    got: dict[str, list[list]] = {}
    for kind, key, value, _ in out:
        if kind == "b":
            got.setdefault(key, []).extend(orjson.loads(value))
    timers = [(key, int(value)) for kind, key, value, _ in out if kind == "t"]
    return got, sum(1 for r in out if r[0] == "b"), timers


@pytest.mark.flink
def test_bundles_carry_every_row_in_order_and_cross_fewer_times() -> None:
    want = bundle_rows(ROWS)
    got, bundles, timers = _run(max_rows=10_000)
    assert got == want
    assert bundles < len(ROWS) // 3
    # every row's timer fired (the final watermark), after the row that registered it
    assert sorted(timers) == sorted({(k, r[0]) for k, rows in want.items() for r in rows})
    got1, bundles1, _ = _run(max_rows=1)  # negative control: a flush per row
    assert got1 == want and bundles1 == len(ROWS)
