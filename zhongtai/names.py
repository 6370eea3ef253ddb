"""Every name by which runs of zhongtai meet on a shared Kafka, Redis, HBase and Flink: what a namespace
must change (config/namespace.py) and what ``zhongtai names`` prints.

:func:`shared_names` derives each one with the function the product itself uses (the job's
``consumer_groups`` and ``transactional_ids``, the store log's topic, the applier's group, the workers'
topics and transactional ids, the HBase tables), for the job run as ``zhongtai run`` runs it (default
``RunOptions``). Flags that name one run's things (``--group``, ``--job-name``, ``--redis-prefix``, ...)
replace them as given.
"""

from __future__ import annotations

from config.namespace import zhongtai_command
from config.settings import Settings

__all__ = ["EVENTS_TOPIC_PREFIX", "produced_topics", "shared_names", "zhongtai_command"]

#: Where ``zhongtai produce`` writes (``<prefix><source>``) unless told otherwise, in the settings' namespace:
#: the topics ``kafka.topics.events`` matches.
EVENTS_TOPIC_PREFIX = "zt.events."


def produced_topics(settings: Settings) -> list[str]:
    """The topics ``zhongtai produce`` writes by default."""
    from zhongtai.devtools.generator.model import GeneratorConfig

    return GeneratorConfig(topic_prefix=settings.in_namespace(EVENTS_TOPIC_PREFIX)).topics()


def shared_names(settings: Settings) -> dict[str, str]:
    """``role -> name`` of every topic (``topic.*``; ``pattern.events`` is the events regular expression),
    consumer group (``group.*``), Kafka transactional id or id prefix (``txn.*``), Redis key prefix, HBase
    table, Flink job name and checkpoint/savepoint folder that runs with ``settings`` use."""
    from connectors.channels.base import CHANNELS
    from connectors.hbase_store import AUDIT_TABLES, TABLES
    from connectors.store_log import store_log_topic
    from zhongtai.jobs.runner import RunOptions, consumer_groups, savepoint_dir, transactional_ids
    from zhongtai.services.applier import StoreApplier
    from zhongtai.services.workers.worker import WorkerTopics, worker_transactional_id

    t, opts = settings.kafka.topics, RunOptions()
    job_name = opts.job_name_for(settings)
    names = {"pattern.events": t.events}
    names |= {f"topic.produce.{topic.rsplit('.', 1)[-1]}": topic for topic in produced_topics(settings)}
    names |= {"topic.dlq": t.dlq, "topic.identity_changes": t.identity_changes, "topic.tag_changes": t.tag_changes,
              "topic.control": t.control, "topic.control_results": t.control_results, "topic.delivery": t.delivery,
              "topic.store_log": store_log_topic(settings), "topic.collector": settings.collector.topic,
              "topic.audit": t.audit}
    for channel in CHANNELS:
        topics = WorkerTopics.of(settings.kafka, channel)
        names |= {f"topic.actions.{channel}": topics.actions, f"topic.actions_dlq.{channel}": topics.dlq,
                  f"txn.worker.{channel}": worker_transactional_id(settings, channel)}
    names |= {f"group.{source}": group for source, group in consumer_groups(settings, opts).items()}
    names |= {"group.applier": StoreApplier(settings).consumer_group, "group.workers": settings.worker.group}
    names |= {f"txn.{sink}": prefix for sink, prefix in transactional_ids(settings, opts).items()}
    names |= {"redis.prefix": settings.redis.prefix}
    names |= {f"hbase.{table}": f"{settings.hbase.namespace}_{table}" for table in (*TABLES, *AUDIT_TABLES)}
    names |= {"flink.job_name": job_name,
              "flink.checkpoints": settings.checkpoint_url().rstrip("/") + "/" + job_name,
              "flink.savepoints": savepoint_dir(settings)}
    return names
