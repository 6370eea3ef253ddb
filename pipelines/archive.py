"""The ``archive`` stage: every event and decision of the job into the archive's tables (``connectors.archive``).

``attach_archive(t_env, stmt_set, settings, ...)`` adds one INSERT per table of the archive that this job
produces, from the catalog's views (``pipelines.catalog``):

===================  =====================================================  ========================
table                from                                                   day of
===================  =====================================================  ========================
events               ``zt_unique`` (the valid events, first per event_id)   ``ts_ms``
event_persons        ``zt_person_events`` (each unique event's person)      ``ts_ms``
records              ``zt_decoded`` with no reason (bytes + coordinates)    ``ts_ms``
dlq                  ``zt_decoded`` with a reason                           ``kts`` (the Kafka time)
identity_changes     ``zt_identity_changes``                                ``ts_ms``
tag_changes          ``zt_tag_changes``                                     ``ts_ms``
actions              ``zt_actions`` (sent) ∪ ``zt_suppressed`` (rules on)    ``ts_ms``
receipts             the delivery receipts source (attribution on)          ``kts``
conversions          ``zt_conversions`` (attribution on)                    ``purchase_ts``
===================  =====================================================  ========================

It registers no view: each INSERT reads the shared views directly, so the planner reuses their operators
(the archive adds sinks, not a second decode or dedup). Each sink's columns are the resolved types of its
SELECT, so the table follows the views it copies. Exactly once: the filesystem sink commits a part file when
the checkpoint covering its rows completes (``connectors.archive``); with no checkpointing (a bounded run)
it commits at the end of the input.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from connectors.archive import PARTITION, day_sql, sink_ddl

if TYPE_CHECKING:  # pragma: no cover
    from pyflink.table import StatementSet, StreamTableEnvironment

    from config.settings import Settings

logger = logging.getLogger(__name__)


def archive_selects(settings: Settings, *, rules: bool, receipts: str | None, conversions: bool) -> dict[str, str]:
    """Table → the SELECT that fills it (its last column ``dt``), for the views a job with these parts has."""
    ids = ", ".join(f"id_{t}" for t in settings.event_schema.id_types())
    max_bytes = settings.job.dlq_max_value_bytes
    ms, ltz = (lambda c: day_sql(c, "ms")), (lambda c: day_sql(c, "ltz"))
    out = {
        "events": f"""
SELECT event_id, event_type, ts_ms, person AS anchor, campaign, channel, amount, item_id, exp_key, variation,
       {ids}, props, {ms("ts_ms")} AS {PARTITION}
FROM zt_unique""",
        "event_persons": f"SELECT event_id, person, ts_ms, {ms('ts_ms')} AS {PARTITION} FROM zt_person_events",
        "records": f"""
SELECT event_id, ts_ms, payload, rkey, topic, part, off, CAST(kts AS TIMESTAMP(3)) AS kts,
       {ms("ts_ms")} AS {PARTITION}
FROM zt_decoded WHERE reason IS NULL""",
        "dlq": f"""
SELECT reason, topic, part, off, CAST(kts AS TIMESTAMP(3)) AS kts, rkey,
       COALESCE(ZT_BYTE_LENGTH(payload), 0) AS value_bytes,
       COALESCE(ZT_BYTE_LENGTH(payload), 0) > {max_bytes} AS truncated,
       ZT_TRUNCATE_BYTES(payload, {max_bytes}) AS payload, {ltz("kts")} AS {PARTITION}
FROM zt_decoded WHERE reason IS NOT NULL""",
        "identity_changes": f"SELECT person, ts_ms, payload, {ms('ts_ms')} AS {PARTITION} FROM zt_identity_changes",
        "tag_changes": f"""
SELECT person, tag, op, ts_ms, cause, tagset_version, payload, {ms("ts_ms")} AS {PARTITION}
FROM zt_tag_changes""",
    }
    if rules:
        out["actions"] = f"""
SELECT CAST('sent' AS STRING) AS status, action_id, channel, person, rule_id, CAST(NULL AS STRING) AS reason, ts_ms, payload,
       {ms("ts_ms")} AS {PARTITION}
FROM zt_actions
UNION ALL
SELECT CAST('suppressed' AS STRING), action_id, channel, person, rule_id, reason, ts_ms, payload, {ms("ts_ms")}
FROM zt_suppressed"""
    if receipts:
        out["receipts"] = f"""
SELECT JSON_VALUE(s, '$.action_id') AS action_id, JSON_VALUE(s, '$.person_id') AS person_id,
       JSON_VALUE(s, '$.channel') AS channel, JSON_VALUE(s, '$.status') AS status,
       JSON_VALUE(s, '$.rule_id') AS rule_id, JSON_VALUE(s, '$.campaign') AS campaign,
       TRY_CAST(JSON_VALUE(s, '$.ts_ms') AS BIGINT) AS ts_ms, s AS payload, CAST(kts AS TIMESTAMP(3)) AS kts,
       {ltz("kts")} AS {PARTITION}
FROM (SELECT CAST(payload AS STRING) AS s, kts FROM {receipts})"""
    if conversions:
        out["conversions"] = f"""
SELECT purchase_event_id, person, action_id, rule_id, campaign, channel, delivered_ts, purchase_ts, amount,
       payload, {ms("purchase_ts")} AS {PARTITION}
FROM zt_conversions"""
    return out


def resolved_columns(t_env: StreamTableEnvironment, select: str) -> list[tuple[str, str]]:
    """(name, Flink SQL type) of each column of ``select``, from the planner's resolved schema."""
    schema = t_env.sql_query(select)._j_table.getResolvedSchema()
    return [(c.getName(), c.getDataType().getLogicalType().asSerializableString()) for c in schema.getColumns()]


def attach_archive(t_env: StreamTableEnvironment, stmt_set: StatementSet, settings: Settings, *, rules: bool,
                   receipts: str | None, conversions: bool, url: str | None = None,
                   tables: tuple[str, ...] | None = None) -> list[str]:
    """Create the archive's sinks (at ``url``, default ``connectors.archive.warehouse_url``) and add one INSERT
    per table to ``stmt_set``; ``tables`` limits which (default: all this job has). Returns the tables."""
    selects = archive_selects(settings, rules=rules, receipts=receipts, conversions=conversions)
    names = [t for t in selects if tables is None or t in tables]
    for table in names:
        sink = f"zt_archive_{table}"
        t_env.execute_sql(sink_ddl(sink, table, resolved_columns(t_env, selects[table]), settings, url))
        stmt_set.add_insert_sql(f"INSERT INTO {sink}\n{selects[table].strip()}")
    logger.info("archive: %s", ", ".join(names))
    return names
