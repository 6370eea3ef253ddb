"""The JVM enrichment (``io.zhongtai.flink.enrich.EnrichOnce``, behind ``zt_person_events``) against its Python
reference (``pipelines.events.enrich_once``).

A seeded stream of value rows (set, change, clear) and data rows over a dozen keys (a null key too) goes
through the Java function on the embedded mini-cluster, the way ``attach_person_events`` applies it (a
table converted to a DataStream, keyed on the JVM); its output equals the reference's, row for row and in
order per key. Negative controls: an enrichment that drops the rows arriving before their key's value, and
one that emits every row again on each value change, both differ from the reference on this stream.
"""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from pipelines.events import enrich_once
from tests.helpers import fresh_names, make_settings


def _stream(n: int = 3_000, seed: int = 7) -> list[tuple]:
    rnd = random.Random(seed)
    keys = [None, *(f"a{i}" for i in range(11))]
    rows: list[tuple] = []
    for i in range(n):
        k = rnd.choice(keys)
        if rnd.random() < 0.08:
            rows.append((k, True, None if rnd.random() < 0.15 else f"p{rnd.randrange(30)}", None, None, None))
        else:
            rows.append((k, False, None, f"e{i}", i, (Decimal(rnd.randrange(-10_000, 10_000)) / 100)))
    return rows


def test_reference_emits_each_data_row_once() -> None:
    rows = [("a", False, None, "e1"), ("a", True, "p1", None), ("a", False, None, "e2"), ("a", True, "p2", None),
            ("a", False, None, "e3"), ("b", False, None, "e4"), ("a", True, None, None), ("a", False, None, "e5"),
            (None, True, "p9", None), (None, False, None, "e6"), ("a", True, "p3", None)]
    assert enrich_once(rows) == [("p1", "e1"), ("p1", "e2"), ("p2", "e3"), ("p9", "e6"), ("p3", "e5")]


def _drop_waiting(rows: list[tuple]) -> list[tuple]:
    value: dict = {}
    out = []
    for r in rows:
        k = r[0] or ""
        if r[1]:
            value[k] = r[2]
        elif value.get(k) is not None:
            out.append((value[k], *r[3:]))
    return out


def _reemit_on_change(rows: list[tuple]) -> list[tuple]:
    seen: dict = {}
    out = []
    for r in rows:
        k = r[0] or ""
        if r[1] and r[2] is not None:
            out += [(r[2], *d[3:]) for d in seen.get(k, ())]
        elif not r[1]:
            seen.setdefault(k, []).append(r)
    return out


@pytest.mark.flink
def test_jvm_enrichment_equals_the_reference() -> None:
    from pyflink.common import Row, Types
    from pyflink.datastream import DataStream
    from pyflink.java_gateway import get_gateway
    from pyflink.table import DataTypes, Schema

    from connectors.jvm import zhongtai_jar
    from zhongtai.jobs.runner import RunOptions, make_envs

    rows = _stream()
    settings = make_settings(flink={"parallelism": 1, "options": {"restart-strategy.type": "none"}})
    n = fresh_names()
    env, t_env = make_envs(settings, RunOptions(resume=False, job_name=n.job), [zhongtai_jar(settings)])
    s = Types.STRING()
    in_type = Types.ROW_NAMED(["k", "is_value", "v", "event_id", "ts_ms", "amount"],
                              [s, Types.BOOLEAN(), s, s, Types.LONG(), Types.BIG_DEC()])
    ds = env.from_collection([Row(*r) for r in rows], type_info=in_type)
    schema = (Schema.new_builder().column("k", DataTypes.STRING()).column("is_value", DataTypes.BOOLEAN())
              .column("v", DataTypes.STRING()).column("event_id", DataTypes.STRING())
              .column("ts_ms", DataTypes.BIGINT()).column("amount", DataTypes.DECIMAL(18, 2)).build())
    j_in = t_env.to_data_stream(t_env.from_data_stream(ds, schema))._j_data_stream
    out_type = Types.ROW_NAMED(["person", "event_id", "ts_ms", "amount"], [s, s, Types.LONG(), Types.BIG_DEC()])
    enrich = get_gateway().jvm.io.zhongtai.flink.enrich.EnrichOnce
    j_out = enrich.apply(j_in, out_type.get_java_type_info(), 86_400_000, "test-enrich", "zt-test-enrich-v1")
    with DataStream(j_out).execute_and_collect(n.job) as it:
        got = [tuple(r) for r in it]
    want = enrich_once(rows)
    assert len(want) > 2_000
    by_event = {r[3]: (r[0] or "") for r in rows if not r[1]}

    def per_key(out: list[tuple]) -> dict[str, list[tuple]]:
        d: dict[str, list[tuple]] = {}
        for o in out:
            d.setdefault(by_event[o[1]], []).append((o[0], o[1], o[2], Decimal(o[3]).quantize(Decimal("0.01"))))
        return d

    assert per_key(got) == per_key(want)
    # negative controls: the two wrong enrichments really differ on this stream
    assert per_key(_drop_waiting(rows)) != per_key(want)
    assert per_key(_reemit_on_change(rows)) != per_key(want)
