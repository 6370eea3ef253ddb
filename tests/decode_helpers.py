"""Run the job's decode (pipelines/decode.py + zhongtai's JVM functions) on records, and the oracle's.

``sql_decode`` runs the real ``decode_statements`` on the embedded mini-cluster over a collection of
``(value, key, record timestamp ms)`` and returns one comparable tuple per record; ``oracle_decode`` gives
the tuple the Python reference (``zhongtai.devtools.generator.oracle.decode_full``) computes. Valid records compare
every column of ``zt_decoded``; rejected ones their reason.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from config.settings import Settings
from pipelines.decode import ID_TYPES

#: zt_decoded columns compared for a valid record, in this order (the built-in identifier types).
COLUMNS = ("reason", "event_id", "event_type", "ts_ms", "person", *(f"id_{t}" for t in ID_TYPES), "campaign",
           "channel", "amount", "item_id", "exp_key", "variation", "props", "rkey")


def columns(settings: Settings) -> tuple[str, ...]:
    """:data:`COLUMNS` with an ``id_<type>`` column for each of the schema's identifier types."""
    ids = tuple(f"id_{t}" for t in settings.event_schema.id_types())
    return (*COLUMNS[:5], *ids, *COLUMNS[5 + len(ID_TYPES):])


def jvm_table_env(settings: Settings | None = None, *, parallelism: int = 1) -> Any:
    """A streaming TableEnvironment with zhongtai's JVM module on its class path (as the job ships it)."""
    from pyflink.table import EnvironmentSettings, TableEnvironment

    from connectors.jvm import zhongtai_jar
    from pipelines.events import register_functions

    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    conf = t_env.get_config()
    conf.set("pipeline.jars", zhongtai_jar(settings).as_uri())
    conf.set("table.local-time-zone", "UTC")
    conf.set("parallelism.default", str(parallelism))
    register_functions(t_env)  # the job's generic JVM functions (ZT_TRUNCATE_BYTES, ...), as build_job does
    return t_env


def register_records(t_env: Any, name: str, records: list[tuple[bytes | None, bytes | None, int]]) -> None:
    """A view ``name`` with the raw-source columns over ``records`` (``off`` = the position in the list)."""
    from pyflink.table import DataTypes

    schema = DataTypes.ROW([
        DataTypes.FIELD("payload", DataTypes.BYTES()),
        DataTypes.FIELD("rkey", DataTypes.BYTES()),
        DataTypes.FIELD("off", DataTypes.BIGINT()),
        DataTypes.FIELD("kts_ms", DataTypes.BIGINT()),
    ])
    def ba(b: bytes | None) -> bytearray | None:  # PyFlink's BYTES takes bytearray
        return None if b is None else bytearray(b)

    rows = [(ba(v), ba(k), i, ts) for i, (v, k, ts) in enumerate(records)]
    t_env.create_temporary_view(f"{name}_rows", t_env.from_elements(rows, schema))
    t_env.execute_sql(f"""
CREATE TEMPORARY VIEW {name} AS
SELECT payload, rkey, 't' AS topic, 0 AS part, off, TO_TIMESTAMP_LTZ(kts_ms, 3) AS kts FROM {name}_rows""")


def sql_decode(records: list[tuple[bytes | None, bytes | None, int]], settings: Settings,
               t_env: Any = None) -> list[tuple]:
    """``zt_decoded`` of each record, as :func:`oracle_decode` shapes it, in input order."""
    from pipelines.decode import decode_statements

    t_env = t_env or jvm_table_env(settings)
    register_records(t_env, "src", records)
    for stmt in decode_statements("src", settings.job, settings.pii, settings.identity, settings.event_schema):
        t_env.execute_sql(stmt)
    out: dict[int, tuple] = {}
    cols = columns(settings)
    with t_env.execute_sql(f"SELECT off, {', '.join(cols)} FROM zt_decoded").collect() as rows:
        for r in rows:
            vals = tuple(r)[1:]
            out[r[0]] = _shape(vals, cols)
    assert sorted(out) == list(range(len(records))), "the decode lost or duplicated records"
    return [out[i] for i in range(len(records))]


def _shape(vals: tuple, cols: tuple[str, ...]) -> tuple:
    d = dict(zip(cols, vals, strict=True))
    if d["reason"] is not None:
        return (d["reason"], _bytes(d["rkey"]))
    if d["amount"] is not None:
        d["amount"] = Decimal(d["amount"])
    d["rkey"] = _bytes(d["rkey"])
    return tuple(d[c] for c in cols)


def _bytes(v: Any) -> bytes | None:
    return None if v is None else bytes(v)


def oracle_decode(value: bytes | None, key: bytes | None, record_ts: int, settings: Settings, pseudo: Any) -> tuple:
    """The oracle's answer for one record, in :func:`sql_decode`'s shape."""
    from zhongtai.devtools.generator.oracle import decode_full

    d = decode_full(value, record_ts, settings.job, pseudo)
    if isinstance(d, str):
        return (d, key)
    e = d.event
    clean = dict(i.split(":", 1) for i in pseudo.rules.clean_ids(e.ids))
    row = {
        "reason": None, "event_id": e.event_id, "event_type": e.event_type, "ts_ms": e.ts, "person": e.person,
        **{f"id_{t}": clean.get(t) for t in settings.event_schema.id_types()},
        "campaign": e.campaign, "channel": e.channel,
        "amount": e.amount if e.event_type == "purchase" else None,
        "item_id": d.item_id, "exp_key": d.exp_key, "variation": d.variation, "props": d.props, "rkey": key,
    }
    return tuple(row[c] for c in columns(settings))


def mismatches(records: list[tuple[bytes | None, bytes | None, int]], got: list[tuple], want: list[tuple],
               limit: int = 10) -> list[str]:
    """Human-readable differences (record, SQL, oracle), at most ``limit``."""
    out = []
    for (v, _, _), g, w in zip(records, got, want, strict=True):
        if g != w:
            shown = v if v is None or len(v) <= 300 else v[:300] + b"...(%d bytes)" % len(v)
            out.append(f"record {shown!r}:\n  sql    {g!r}\n  oracle {w!r}")
            if len(out) >= limit:
                break
    return out
