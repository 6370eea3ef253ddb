"""Computed traits' SQL (operators/traits.py) against their Python meaning, in Flink: every filter of
:data:`FILTERS` over every props document of :data:`PROPS` (missing props, JSON null, numbers sent as text,
decimals the float reading would get wrong, integers sent as decimals), and each aggregate's per-event value
(``value_sql``: the DECIMAL(38, 6) rounding of sum / min / max, the text of first / last / distinct_count).

The Python side is :meth:`Trait.matches` over :func:`exact_props` (the expression language, what the oracle
uses) and :meth:`Trait.prop_value`. The lists have teeth: each filter is true for some documents and false
for others (asserted)."""

from __future__ import annotations

from config.schema import parse_schema
from operators.traits import compile_traits, exact_props

SCHEMA = """
common_props:
  category: {type: string}
  tier: {type: integer}
  discount: {type: decimal}
traits:
"""

FILTERS = [
    "props.category == 'shoes'",
    "props.category != 'shoes'",
    "not (props.category == 'shoes')",
    "props.category in ['shoes', 'bags']",
    "props.category not in ['shoes', 'bags']",
    "props.category is null",
    "props.tier >= 3",
    "not (props.tier >= 3)",
    "props.tier < 3 or props.category == 'bags'",
    "props.discount >= 0.1",
    "props.discount == 0.1",
    "props.discount > -0.5 and props.discount <= 12.25",
    "props.tier in [1, 2, 3]",
    "props.discount is not null and not (props.tier != 2)",
]

PROPS = [
    '{}',
    '{"category":"shoes"}',
    '{"category":"bags","tier":3}',
    '{"category":null,"tier":2}',
    '{"category":"Shoes","tier":"4"}',
    '{"tier":2,"discount":0.1}',
    '{"tier":1,"discount":"0.1"}',
    '{"discount":0.0999999999999999999}',
    '{"discount":12.25,"tier":3.0}',
    '{"discount":-0.5,"category":"shoes","tier":2}',
    '{"discount":-0.49,"category":"bags"}',
    '{"discount":1234.5678915}',
    '{"category":"鞋 shoes","tier":-1,"discount":0}',
]

VALUES = """
  s: {aggregate: sum, prop: discount}
  t: {aggregate: max, prop: tier}
  c: {aggregate: last, prop: category}
  d: {aggregate: distinct_count, prop: tier}
"""


def _sql(t_env, selects: list[str]) -> list[tuple]:
    rows = ", ".join(f"({i}, '{p.replace(chr(39), chr(39) * 2)}')" for i, p in enumerate(PROPS))
    t_env.execute_sql(f"CREATE TEMPORARY VIEW docs AS SELECT * FROM (VALUES {rows}) AS t(i, props)")
    with t_env.execute_sql(f"SELECT i, {', '.join(selects)} FROM docs").collect() as res:
        out = {r[0]: tuple(r)[1:] for r in res}
    t_env.drop_temporary_view("docs")
    return [out[i] for i in range(len(PROPS))]


def test_filters_mean_in_sql_what_they_mean_in_python() -> None:
    from tests.decode_helpers import jvm_table_env

    traits = compile_traits(parse_schema(SCHEMA + "".join(
        f'  f{i}: {{aggregate: count, where: "{w}"}}\n' for i, w in enumerate(FILTERS)), "s.yaml"))
    got = _sql(jvm_table_env(), [f"CAST({t.where_sql} AS BOOLEAN)" for t in traits])
    want = [tuple(t.matches("e", exact_props(p)) for t in traits) for p in PROPS]
    diffs = [(PROPS[i], FILTERS[j], g, w) for i, (gr, wr) in enumerate(zip(got, want))
             for j, (g, w) in enumerate(zip(gr, wr)) if g != w]
    assert diffs == [], "\n".join(map(repr, diffs))
    for j, f in enumerate(FILTERS):  # every filter splits the documents
        assert {r[j] for r in want} == {True, False}, f


def test_values_read_in_sql_are_the_python_values() -> None:
    from decimal import Decimal

    from tests.decode_helpers import jvm_table_env

    traits = compile_traits(parse_schema(SCHEMA + VALUES, "s.yaml"))
    got = _sql(jvm_table_env(), [f"CAST({t.value_sql} AS STRING)" for t in traits])
    want = [tuple(t.prop_value(exact_props(p), {}) for t in traits) for p in PROPS]
    norm = [tuple(None if v is None else Decimal(v) if j < 2 else v for j, v in enumerate(r)) for r in got]
    assert norm == want
    assert Decimal("1234.567892") in [r[0] for r in want]  # rounded half up to 6 places on both sides
