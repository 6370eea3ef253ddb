"""Consumer lag of the job's Kafka group: log end offsets minus committed offsets, per partition.

The Flink Kafka source commits its offsets to the group when a checkpoint completes, so the lag
read here is "records not yet covered by a checkpoint" (at most one checkpoint interval behind
what the job has actually read). Partitions the group has never committed are not listed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int
    end: int

    @property
    def lag(self) -> int:
        return max(0, self.end - self.committed)


@dataclass(frozen=True, slots=True)
class GroupLag:
    """Lag of one group; ``error`` says why it could not be read (then ``partitions`` is empty)."""

    group: str
    partitions: tuple[PartitionLag, ...] = ()
    error: str | None = None

    @property
    def total(self) -> int:
        return sum(p.lag for p in self.partitions)

    def to_json(self) -> dict[str, Any]:
        by_topic: dict[str, int] = {}
        for p in self.partitions:
            by_topic[p.topic] = by_topic.get(p.topic, 0) + p.lag
        return {
            "group": self.group,
            "total": None if self.error else self.total,
            "by_topic": dict(sorted(by_topic.items())),
            "partitions": len(self.partitions),
            "error": self.error,
        }


def consumer_lag(bootstrap: str, group: str, *, timeout_s: float = 5.0,
                 client: Mapping[str, Any] | None = None) -> GroupLag:
    """Read the lag of ``group`` on the cluster at ``bootstrap`` (blocking, at most ~2 x timeout_s);
    ``client``: the whole client configuration instead (``connectors.kafka_security.client_config``).

    Never raises for Kafka errors: an unreachable broker or unknown group gives ``error`` set.
    """
    from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec

    admin = AdminClient({**(client or {"bootstrap.servers": bootstrap}), "socket.timeout.ms": int(timeout_s * 1000)})
    try:
        fut = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=timeout_s)
        committed = [
            tp for tp in fut[group].result(timeout=timeout_s).topic_partitions or [] if tp.offset >= 0 and not tp.error
        ]
        if not committed:
            return GroupLag(group)
        ends = admin.list_offsets(
            {TopicPartition(tp.topic, tp.partition): OffsetSpec.latest() for tp in committed},
            request_timeout=timeout_s,
        )
        end_of = {(tp.topic, tp.partition): f.result(timeout=timeout_s).offset for tp, f in ends.items()}
    except (KafkaException, TimeoutError) as e:
        return GroupLag(group, error=f"cannot read the lag of group {group!r} at {bootstrap}: {e}")
    parts = sorted(
        (PartitionLag(tp.topic, tp.partition, tp.offset, end_of[(tp.topic, tp.partition)]) for tp in committed),
        key=lambda p: (p.topic, p.partition),
    )
    return GroupLag(group, tuple(parts))
