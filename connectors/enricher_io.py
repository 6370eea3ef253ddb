"""Kafka for an enricher (zhongtai/services/enrichers.py): a consumer group on the event topics, a producer of
the events it feeds back and of its dead letters, and offset commits after the producer's acknowledgement.

At least once, on purpose: :meth:`EnricherIO.commit` is called only after :meth:`flush` acknowledged every
record produced for the events polled so far, so a crash in between re-reads those events; the records it then
produces again carry the same event ids, which the job's dedup (``event_id``) keeps once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import Settings


class EnricherKafkaError(RuntimeError):
    """Kafka did not acknowledge what the enricher produced; nothing was committed (the events are read again)."""


@dataclass(frozen=True, slots=True)
class InEvent:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class EnricherIO:
    """Reads every topic matching ``pattern`` (a regular expression over whole names) but ``skip`` in group
    ``group``; produces idempotently."""

    def __init__(self, settings: Settings, pattern: str, group: str, skip: frozenset[str]) -> None:
        from confluent_kafka import Consumer, Producer

        from connectors.kafka_security import client_config

        self.skip = skip
        self.consumer = Consumer({**client_config(settings.kafka), "group.id": group,
                                  "isolation.level": "read_committed", "enable.auto.commit": False,
                                  "auto.offset.reset": "earliest", "topic.metadata.refresh.interval.ms": 5000})
        self.consumer.subscribe([f"^{pattern}"])
        self.producer = Producer({**client_config(settings.kafka), "enable.idempotence": True,
                                  "acks": "all", "linger.ms": 5, "client.id": f"zhongtai-{group}"})
        self.failures: list[str] = []

    def poll(self, n: int, timeout_s: float) -> list[InEvent]:
        out = []
        for m in self.consumer.consume(n, timeout=timeout_s):
            if m.error() is None and m.topic() not in self.skip:
                out.append(InEvent(cast(str, m.topic()), cast(int, m.partition()), cast(int, m.offset()), m.key(),
                                   m.value()))
        return out

    def produce(self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str] | None = None) -> None:
        def report(err: Any, msg: Any) -> None:
            if err is not None:
                self.failures.append(f"{topic}: {err}")

        self.producer.produce(topic, key=key, value=value, headers=list((headers or {}).items()), on_delivery=report)
        self.producer.poll(0)

    def flush(self, timeout_s: float = 30.0) -> None:
        left = self.producer.flush(timeout_s)
        if left or self.failures:
            failures, self.failures = self.failures, []
            raise EnricherKafkaError(f"{left} record(s) unacknowledged after {timeout_s:.0f} s; {'; '.join(failures)}"
                                     "; is Kafka up? The events will be read again")

    def commit(self) -> None:
        self.consumer.commit(asynchronous=False)

    def close(self) -> None:
        self.producer.flush(10)
        self.consumer.close()
