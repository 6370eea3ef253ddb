"""Contender (c): the same live counters as a JVM-only Flink SQL job (no Python UDF).

Kafka raw source (``connectors.kafka_tables.source_ddl``, bounded) → the job's own decode, dedup and
counter views (``pipelines.events.view_statements`` with ``job_options``) → a Kafka topic (json) holding the
counters' changelog (INSERT / UPDATE_AFTER rows). Everything per event and per update runs on the JVM; the Python process
only submits the job. :func:`read_counters` reads the topic back afterwards (the last row per key is its final value) for
the exactness check; that read is not timed.
"""

from __future__ import annotations

from typing import Any

from config.settings import Settings


def run_sql(settings: Settings, topic_pattern: str, group: str, out_topic: str, job_name: str,
            options: dict[str, str] | None = None, source_options: dict[str, str] | None = None,
            watermark: bool = True, **_: Any) -> dict[str, Any]:
    """Run the SQL-only job to the end of the topics.

    ``options`` (table/execution options) override ``job_options``; ``source_options`` are added to the
    Kafka source's WITH clause (bench/sql_core.py compares variants this way). Returns ``job_seconds``:
    from job submission (planning done) until the bounded job finished.
    """
    import time

    from connectors.kafka_tables import source_ddl
    from pipelines.events import job_options, view_statements
    from zhongtai.jobs.runner import RunOptions, connector_jars, make_table_env

    opts = RunOptions(bounded=True, group=group, topic_pattern=topic_pattern, resume=False, job_name=job_name)
    t_env = make_table_env(settings, opts, connector_jars(settings))
    conf = t_env.get_config()
    for k, v in {**job_options(settings), **(options or {})}.items():
        conf.set(k, v)
    job = settings.job
    ddl = source_ddl(
        "zt_source", settings.kafka, topic_pattern=topic_pattern, group=group, bounded=True,
        watermark_delay_ms=job.watermark_delay_ms if watermark else None, idle_timeout_ms=job.source_idle_timeout_ms,
        key_column=True,
    )
    if source_options:
        extra = "".join(f",\n  '{k}' = '{v}'" for k, v in source_options.items())
        ddl = ddl.rstrip().removesuffix(")").rstrip() + extra + "\n)"
    t_env.execute_sql(ddl)
    for stmt in view_statements("zt_source", settings):
        t_env.execute_sql(stmt)
    t_env.execute_sql(f"""
CREATE TEMPORARY TABLE zt_bench_counters (
  k STRING, bucket BIGINT, n_views BIGINT, n_carts BIGINT, n_purchases BIGINT, n_events BIGINT,
  n_persons BIGINT, n_revenue STRING
) WITH (
  'connector' = 'kafka',
  'topic' = '{out_topic}',
  'properties.bootstrap.servers' = '{settings.kafka.bootstrap}',
  'sink.partitioner' = 'fixed',
  'format' = 'json'
)""")
    # The changelog's INSERT/UPDATE_AFTER rows, appended in order: the last row per (k, bucket) is the
    # final value. Every update of one key comes from one subtask, so ('fixed' partitioner) its rows
    # stay in order in one partition.
    result = t_env.execute_sql("""
INSERT INTO zt_bench_counters
SELECT k, bucket, n_views, n_carts, n_purchases, n_events, n_persons,
       CAST(CAST(COALESCE(n_revenue, 0) AS DECIMAL(38, 2)) AS STRING)
FROM TO_CHANGELOG(input => TABLE zt_counters)
WHERE op IN ('INSERT', 'UPDATE_AFTER')""")
    t0, cpu0 = time.monotonic(), _jvm_cpu_seconds()
    result.wait()
    return {"complete": True, "job_seconds": time.monotonic() - t0, "job_cpu_seconds": _jvm_cpu_seconds() - cpu0}


def _jvm_cpu_seconds() -> float:
    """CPU time (user + system) used so far by this process's JVM (the PyFlink gateway child)."""
    import os
    from pathlib import Path

    tick = os.sysconf("SC_CLK_TCK")
    me, total = os.getpid(), 0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = d.joinpath("stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == me and "(java)" in stat:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def read_counters(settings: Settings, topic: str) -> dict[str, dict[str, Any]]:
    """Final counters from the upsert topic, keyed ``<scope>:<YYYYMMDDHHMM>`` like the Redis keys."""
    import orjson
    from confluent_kafka import Consumer, TopicPartition

    from connectors.redis_store import minute_label

    c = Consumer({"bootstrap.servers": settings.kafka.bootstrap, "group.id": f"{topic}.check",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    meta = c.list_topics(topic, timeout=30)
    ends, tps = {}, []
    for p in meta.topics[topic].partitions:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
        if hi > lo:
            ends[p] = hi
            tps.append(TopicPartition(topic, p, lo))
    c.assign(tps)
    out: dict[str, dict[str, Any]] = {}
    while ends:
        for m in c.consume(10_000, timeout=1.0):
            if m.error():
                continue
            v = orjson.loads(m.value())
            name = f"{v['k']}:{minute_label(v['bucket'])}"
            out[name] = {f: v[f"n_{f}"] for f in ("views", "carts", "purchases", "events", "persons", "revenue")}
            if m.offset() >= ends.get(m.partition(), 0) - 1:
                ends.pop(m.partition(), None)
    c.close()
    return out
