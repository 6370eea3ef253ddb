"""Flink SQL DDL for the Kafka tables of the event job (the connector jar comes from Maven Central).

Every table carries ``kafka.security`` (``connectors.kafka_security.table_properties``): with SASL its DDL
holds the job's JAAS line, password included; print a DDL only through ``kafka_security.redact``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.kafka_security import table_properties

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import KafkaSettings


def _q(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _raw_formats(key_column: bool) -> dict[str, str]:
    """Raw value bytes; with ``key_column`` also the raw key bytes as the column ``rkey``."""
    if not key_column:
        return {"format": "raw"}
    return {"key.format": "raw", "key.fields": "rkey", "value.format": "raw", "value.fields-include": "EXCEPT_KEY"}


def source_ddl(name: str, kafka: KafkaSettings, *, topic_pattern: str | None = None,
               group: str | None = None, bounded: bool = False, watermark_delay_ms: int | None = None,
               idle_timeout_ms: int = 10_000, key_column: bool = False) -> str:
    """Raw events: the original bytes plus topic/partition/offset/record timestamp.

    ``key_column``: also the record key, as ``rkey BYTES`` (NULL for a record without one); the event
    job's source has it so that a dead letter keeps its key (docs/semantics.md). A tombstone (no value)
    arrives with ``payload`` NULL.

    ``bounded`` stops at the offsets that were latest when the job started (drain mode, used by
    the demo, the bench and tests). ``watermark_delay_ms`` set: a watermark follows the record
    timestamp (arrival time), for pipelines with event-time timers. The event job declares none:
    with a rowtime attribute the planner switches mini-batches to watermark-driven batches, and on
    a backlog (event time racing ahead) those are tiny, so the aggregates pre-aggregate nothing.
    Lateness is decided per record anyway (docs/semantics.md).
    """
    opts = {
        "connector": "kafka",
        "topic-pattern": topic_pattern or kafka.topics.events,
        **table_properties(kafka),
        "properties.group.id": group or kafka.consumer_group,
        "properties.isolation.level": "read_committed",
        "properties.partition.discovery.interval.ms": "10000",
        "scan.startup.mode": "group-offsets",
        "properties.auto.offset.reset": "earliest" if kafka.start_from == "earliest" else "latest",
        "scan.watermark.idle-timeout": f"{idle_timeout_ms} ms",
    }
    opts.update(_raw_formats(key_column))
    if bounded:
        opts["scan.bounded.mode"] = "latest-offset"
    with_ = ",\n  ".join(f"{_q(k)} = {_q(v)}" for k, v in opts.items())
    watermark = (
        f",\n  WATERMARK FOR kts AS kts - INTERVAL '{watermark_delay_ms / 1000:.3f}' SECOND"
        if watermark_delay_ms is not None else ""
    )
    key = "\n  rkey BYTES," if key_column else ""
    return f"""
CREATE TEMPORARY TABLE {name} (
  payload BYTES,{key}
  topic STRING METADATA FROM 'topic' VIRTUAL,
  part INT METADATA FROM 'partition' VIRTUAL,
  off BIGINT METADATA FROM 'offset' VIRTUAL,
  kts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL{watermark}
) WITH (
  {with_}
)"""


def dlq_sink_ddl(name: str, kafka: KafkaSettings, *, topic: str | None = None, exactly_once: bool = True,
                 transactional_id_prefix: str = "zt-dlq", key_column: bool = False) -> str:
    """Dead letters: value = the original bytes, headers = reason and source coordinates.

    ``key_column``: the table has ``rkey BYTES`` (second column), written as the record key (the event
    job's DLQ: the original record's key, NULL for none)."""
    opts = {
        "connector": "kafka",
        "topic": topic or kafka.topics.dlq,
        **table_properties(kafka),
        "sink.delivery-guarantee": "exactly-once" if exactly_once else "at-least-once",
        "properties.transaction.timeout.ms": str(kafka.transaction_timeout_ms),
    }
    opts.update(_raw_formats(key_column))
    if exactly_once:
        opts["sink.transactional-id-prefix"] = transactional_id_prefix
    with_ = ",\n  ".join(f"{_q(k)} = {_q(v)}" for k, v in opts.items())
    key = "\n  rkey BYTES," if key_column else ""
    return f"""
CREATE TEMPORARY TABLE {name} (
  payload BYTES,{key}
  headers MAP<STRING, BYTES> METADATA,
  ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp'
) WITH (
  {with_}
)"""


#: Columns of the store log (``pipelines.events.STORE_COLUMNS``; money as a decimal string).
STORE_LOG_COLUMNS = (
    ("k", "STRING"), ("kind", "STRING"), ("bucket", "BIGINT"), ("n1", "BIGINT"), ("n2", "BIGINT"),
    ("n3", "BIGINT"), ("n4", "BIGINT"), ("n5", "BIGINT"), ("amount", "STRING"), ("t1", "BIGINT"),
    ("t2", "BIGINT"), ("t3", "BIGINT"), ("s1", "STRING"),
)


def store_log_sink_ddl(name: str, kafka: KafkaSettings, *, topic: str, transactional_id_prefix: str) -> str:
    """The job's store rows as a transactional Kafka log (``zhongtai.services.applier`` writes them to Redis/HBase).

    Key = the row's key ``k``, so every row of one key lands in one partition, in the order the job
    produced it; value = JSON without null fields. Exactly-once: a row becomes visible to the
    read_committed applier only when the checkpoint that covers it completes.
    """
    opts = {
        "connector": "kafka",
        "topic": topic,
        **table_properties(kafka),
        "key.format": "raw",
        "key.fields": "k",
        "value.format": "json",
        "value.fields-include": "ALL",
        "value.json.encode.ignore-null-fields": "true",
        "sink.partitioner": "default",
        "sink.delivery-guarantee": "exactly-once",
        "sink.transactional-id-prefix": transactional_id_prefix,
        "properties.transaction.timeout.ms": str(kafka.transaction_timeout_ms),
        "properties.linger.ms": "20",
        "properties.compression.type": "lz4",
    }
    with_ = ",\n  ".join(f"{_q(k)} = {_q(v)}" for k, v in opts.items())
    cols = ",\n  ".join(f"{c} {t}" for c, t in STORE_LOG_COLUMNS)
    return f"""
CREATE TEMPORARY TABLE {name} (
  {cols}
) WITH (
  {with_}
)"""
