"""Kafka administration the job and the services need: create topics, list the topics a pattern matches.

The one place (with the connectors of the job's tables) where the job, the API and the workers talk to
the Kafka admin API; the local stack uses the same functions (zhongtai/devtools/stack).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from connectors.kafka_security import client_config

if TYPE_CHECKING:  # pragma: no cover
    from config import Settings


class KafkaAdminError(RuntimeError):
    """A topic could not be created or listed; the message names the topic and the broker."""


def list_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """The topics on ``settings.kafka.bootstrap`` (internal ``__*`` topics left out), sorted."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(client_config(settings.kafka))
    try:
        names = admin.list_topics(timeout=timeout_s).topics
    except KafkaException as e:
        raise KafkaAdminError(f"listing the topics of {settings.kafka.bootstrap} failed: {e}; is Kafka running "
                              "(zhongtai stack status) and kafka.bootstrap right?") from e
    return sorted(t for t in names if not t.startswith("__"))


def matching_topics(settings: Settings, pattern: str) -> list[str]:
    """The topics whose whole name matches the regular expression ``pattern`` (as Kafka's pattern
    subscription and Flink's ``topic-pattern`` match them)."""
    rx = re.compile(pattern)
    return [t for t in list_topics(settings) if rx.fullmatch(t)]


def create_topics(
    settings: Settings, names: Iterable[str], partitions: int | None = None, timeout_s: float = 30.0
) -> list[str]:
    """Create the topics in ``names`` that do not exist yet (replication 1).

    ``partitions`` defaults to ``settings.kafka.partitions``. Returns the names actually created;
    existing topics are left as they are (their partition count is not changed).
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    wanted = list(dict.fromkeys(names))
    if not wanted:
        return []
    admin = AdminClient(client_config(settings.kafka))
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [n for n in wanted if n not in existing]
    if not missing:
        return []
    n = partitions or settings.kafka.partitions
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=n, replication_factor=1) for t in missing],
        operation_timeout=timeout_s,
        request_timeout=timeout_s,
    )
    created = []
    for topic, fut in futures.items():
        try:
            fut.result()
            created.append(topic)
        except KafkaException as e:
            err = e.args[0]
            if err.name() == "TOPIC_ALREADY_EXISTS":
                continue
            raise KafkaAdminError(
                f"creating topic {topic!r} on {settings.kafka.bootstrap} failed: {err.str()}"
            ) from e
    return created


def records_in(settings: Settings, topics: list[str], timeout_s: float = 10.0) -> int:
    """The records the topics hold now (sum over their partitions of high − low watermark)."""
    from confluent_kafka import Consumer

    c = Consumer({**client_config(settings.kafka), "group.id": "zt-admin-watermarks",
                  "enable.auto.commit": False})
    try:
        meta = c.list_topics(timeout=timeout_s)
        total = 0
        from confluent_kafka import TopicPartition

        for t in topics:
            for p in meta.topics[t].partitions:
                lo, hi = c.get_watermark_offsets(TopicPartition(t, p), timeout=timeout_s)
                total += max(hi - lo, 0)
        return total
    finally:
        c.close()
