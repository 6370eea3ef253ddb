"""Python operators receive bundles, not rows: the JVM packs each key's rows into one record.

A keyed Python function in thread mode pays a fixed price per record that crosses from the JVM into
Python (argument conversion, the generator, the output collector; docs/performance.md). The bundler
(``io.zhongtai.flink.bundle.KeyBundler``, jvm/) packs the rows of one key that arrive between two
flushes into ONE record ``Row(key, json)``, ``json`` = ``[[f1, f2, ...], ...]`` (the rows' fields after
the key, in arrival order). It flushes before every watermark and watermark status it forwards, before
every checkpoint barrier, at the end of input, after ``max_delay_ms`` of processing time and at
``max_rows`` pending rows. So a keyed function that runs a bundle's rows in order sees exactly the rows,
watermarks and timers it would have seen row by row: bundling changes how many records cross, never
what is computed (:func:`bundle_rows` is the reference; tests/pipeline/test_bundles.py compares it with the JVM).

:func:`keyed_bundles` builds the whole JVM side for a query: event time from one of its BIGINT columns
(Java timestamp assigner: no Python call per row), the bundler chained behind it, and the keyBy on the
bundle's key with PyFlink's own key selector (the Python function receives the JSON string).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from pyflink.datastream import KeyedStream
    from pyflink.table import StreamTableEnvironment, Table


def _plain(v: Any) -> Any:
    """What a field becomes in the bundle's JSON (the Java ``Json.appendValue``): decimals as strings."""
    if isinstance(v, Decimal):
        return format(v, "f")
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):  # noqa: PLR0124 (NaN)
        return None
    return v


def bundle_rows(rows: Iterable[Sequence[Any]]) -> dict[str, list[list[Any]]]:
    """The reference of one flush: key (field 0) → its rows' other fields, in arrival order, keys in
    order of their first row. A null key is the empty string."""
    out: dict[str, list[list[Any]]] = {}
    for r in rows:
        key = "" if r[0] is None else str(r[0])
        out.setdefault(key, []).append([_plain(v) for v in r[1:]])
    return out


def keyed_bundles(t_env: StreamTableEnvironment, table: Table, *, ts_field: int | None, out_of_orderness_ms: int = 0,
                  idle_ms: int = 0, max_delay_ms: int, max_rows: int, name: str) -> KeyedStream:
    """``table``'s rows (field 0 = the key, ``ts_field`` = event time, epoch ms) bundled per key on the JVM
    and keyed by it. The Python function behind it receives the bundle's JSON text as its value.

    Watermarks: bounded out-of-orderness ``out_of_orderness_ms`` over ``ts_field``, idle after ``idle_ms``;
    none when ``ts_field`` is None (a function without timers). Stable uids: ``zt-<name>-event-time-v1``
    and ``zt-<name>-bundles-v1``.
    """
    from pyflink.common import Types
    from pyflink.datastream import DataStream
    from pyflink.datastream.data_stream import KeyedStream
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    bundles = jvm.io.zhongtai.flink.bundle.Bundles
    j_rows = t_env.to_data_stream(table)._j_data_stream
    j_timed = j_rows if ts_field is None else bundles.withFieldTimestamps(
        j_rows, ts_field, out_of_orderness_ms, idle_ms, f"{name}-event-time", f"zt-{name}-event-time-v1")
    j_bundled = bundles.bundleByKey(j_timed, f"{name}-bundles", f"zt-{name}-bundles-v1", max_delay_ms, max_rows)
    # The Python operators' coders need a RowTypeInfo of exactly this shape.
    row_type = Types.ROW_NAMED(["k", "v"], [Types.STRING(), Types.STRING()])
    j_bundled.getTransformation().setOutputType(row_type.get_java_type_info())
    j_keyed = j_bundled.keyBy(jvm.KeyByKeySelector(), Types.ROW([Types.STRING()]).get_java_type_info())
    return KeyedStream(j_keyed, Types.STRING(), DataStream(j_bundled))


def control_stream(t_env: StreamTableEnvironment, payloads: str | None, *, idle_ms: int, name: str) -> Any:
    """The control messages an operator broadcasts beside its keyed input, as a DataStream of
    ``Row(payload, ts)``: ``payloads`` is a query with one STRING column ``payload`` (None: an empty stream).

    Every record carries event time 0, so it never moves the watermark, and the input goes idle after
    ``idle_ms``, so it does not hold the operator's watermark (the minimum of both inputs) either. The
    assigner is named ``<name>-control-time`` with uid ``zt-<name>-control-time-v1``."""
    from pyflink.common import Types
    from pyflink.datastream import DataStream
    from pyflink.java_gateway import get_gateway

    if payloads is not None:
        table = t_env.sql_query(f"SELECT payload, CAST(0 AS BIGINT) AS ts FROM ({payloads})")
    else:
        table = t_env.sql_query(
            "SELECT CAST('' AS STRING) AS payload, CAST(0 AS BIGINT) AS ts FROM (VALUES (1)) AS t(x) WHERE x = 0")
    j_ctl = get_gateway().jvm.io.zhongtai.flink.bundle.Bundles.withFieldTimestamps(
        t_env.to_data_stream(table)._j_data_stream, 1, 0, idle_ms, f"{name}-control-time",
        f"zt-{name}-control-time-v1")
    j_ctl.getTransformation().setOutputType(
        Types.ROW_NAMED(["payload", "ts"], [Types.STRING(), Types.LONG()]).get_java_type_info())
    return DataStream(j_ctl)
