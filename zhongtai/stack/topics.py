"""Idempotent topic creation on the configured Kafka (``settings.kafka.bootstrap``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ._proc import StackError

if TYPE_CHECKING:
    from config import Settings


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
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
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
            raise StackError(
                f"creating topic {topic!r} on {settings.kafka.bootstrap} failed: {err.str()}"
            ) from e
    return created
