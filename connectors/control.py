"""The control topic (``kafka.topics.control``): publishing versioned control messages.

Every part of the job that changes at run time (identity commands, tags, rules, experiments) reads
the same topic and picks the messages of its ``kind``; each message is idempotent and versioned, so
a job replaying the topic from its start ends in the same state.

Publishing: :func:`publish` / :func:`publish_at`. Reading (the CLI and the API read the control topic
and ``kafka.topics.control_results`` as the job does: committed records only): :func:`read_topic`
from the start (or given offsets) to the end as of the call, :func:`follow` to wait for a record,
:func:`end_offsets`, :func:`kafka_error` (reachability).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from connectors.kafka_security import client_config

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import Settings


T = TypeVar("T")


class PublishError(RuntimeError):
    pass


def publish(settings: Settings, messages: Iterable[Mapping[str, Any]], *, topic: str | None = None,
            key_of: Any = None) -> int:
    """Send ``messages`` (JSON) to the control topic and wait for every acknowledgement.

    Returns the number sent; raises :class:`PublishError` naming the undelivered ones (is Kafka up?
    ``zhongtai stack status``).
    """
    return len(publish_at(settings, messages, topic=topic, key_of=key_of))


def publish_at(settings: Settings, messages: Iterable[Mapping[str, Any]], *, topic: str | None = None,
               key_of: Any = None) -> list[tuple[int, int]]:
    """:func:`publish`, returning where each message landed: ``(partition, offset)`` in message order
    (the id of a control message: topic, partition and offset)."""
    from confluent_kafka import Producer

    topic = topic or settings.kafka.topics.control
    failures: list[str] = []
    landed: dict[int, tuple[int, int]] = {}

    def delivered(i: int) -> Any:
        def report(err: Any, msg: Any) -> None:
            if err is not None:
                failures.append(f"{(msg.key() or b'').decode()}: {err}")
            else:
                landed[i] = (msg.partition(), msg.offset())
        return report

    producer = Producer({**client_config(settings.kafka), "enable.idempotence": True})
    n = 0
    for m in messages:
        key = key_of(m) if key_of else f"{m.get('kind')}:{m.get('identifier') or m.get('name') or m.get('key')}"
        producer.produce(topic, key=str(key).encode(), on_delivery=delivered(n),
                         value=json.dumps(m, ensure_ascii=False, sort_keys=True).encode())
        n += 1
    left = producer.flush(30)
    if left or failures:
        raise PublishError(f"control topic {topic}: {left} message(s) undelivered; {'; '.join(failures)}")
    return [landed[i] for i in range(n)]


# ---- reading ------------------------------------------------------------------------------------


class ReadError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class TopicRecord:
    """One committed record of a topic (``headers``: name → bytes, the last value of a repeated name)."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Mapping[str, bytes]
    timestamp_ms: int | None

    def json(self) -> Any:
        """The value as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.value or b"")
        except ValueError:
            return None


def _record(m: Any) -> TopicRecord:
    ts_type, ts = m.timestamp()
    return TopicRecord(m.partition(), m.offset(), m.key(), m.value(), dict(m.headers() or []),
                       ts if ts_type else None)


def _consumer(settings: Settings) -> Any:
    from confluent_kafka import Consumer

    return Consumer({**client_config(settings.kafka), "group.id": f"zt-read-{uuid.uuid4().hex[:12]}",
                     "isolation.level": "read_committed", "enable.auto.commit": False,
                     "enable.partition.eof": True, "auto.offset.reset": "earliest", "fetch.wait.max.ms": 50})


def _partitions(consumer: Any, topic: str, timeout_s: float) -> list[int] | None:
    """The topic's partitions; None when the topic does not exist."""
    from confluent_kafka import KafkaException

    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    except KafkaException as e:
        raise ReadError(f"topic {topic}: cannot read metadata ({e}); is Kafka up? `zhongtai stack status`") from None
    if meta is None or meta.error is not None:
        return None
    return sorted(meta.partitions)


def end_offsets(settings: Settings, topic: str, *, timeout_s: float = 10.0) -> dict[int, int]:
    """partition → offset of the next record to be written (``{}`` when the topic does not exist)."""
    from confluent_kafka import TopicPartition

    c = _consumer(settings)
    try:
        parts = _partitions(c, topic, timeout_s) or []
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)[1] for p in parts}
    finally:
        c.close()


def read_topic(settings: Settings, topic: str, *, start: Mapping[int, int] | None = None,
               timeout_s: float = 30.0) -> list[TopicRecord]:
    """Every committed record of ``topic`` from ``start`` (partition → offset; default the beginning)
    up to its end as of the call, in offset order per partition. A missing topic reads as empty.

    Unlike ``tests.helpers.read_topics`` (idle polls) this stops exactly at the end offsets taken
    first, so it is as fast as the data allows. Raises :class:`ReadError` when the end is not reached
    within ``timeout_s`` (a broker down, or a transaction left open on the topic).
    """
    from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

    c = _consumer(settings)
    try:
        parts = _partitions(c, topic, timeout_s)
        if not parts:
            return []
        high = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)[1] for p in parts}
        begin = {p: (start or {}).get(p, OFFSET_BEGINNING) for p in parts}
        todo = {p for p in parts if high[p] > 0 and (begin[p] < 0 or begin[p] < high[p])}
        if not todo:
            return []
        c.assign([TopicPartition(topic, p, begin[p]) for p in sorted(todo)])
        out: list[TopicRecord] = []
        deadline = time.monotonic() + timeout_s
        while todo:
            if time.monotonic() > deadline:
                raise ReadError(f"topic {topic}: partitions {sorted(todo)} not read to their end within {timeout_s:g} s; "
                                "is Kafka up (`zhongtai stack status`)?")
            for m in c.consume(500, timeout=0.05):  # returns at 500 records or the timeout: keep it short
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        todo.discard(m.partition())
                        continue
                    raise ReadError(f"topic {topic}: {m.error()}")
                out.append(_record(m))
                if m.offset() + 1 >= high[m.partition()]:
                    todo.discard(m.partition())
        return [r for r in out if r.offset < high[r.partition]]
    finally:
        c.close()


def follow(settings: Settings, topic: str, start: Mapping[int, int], accept: Callable[[TopicRecord], T | None], *,
           timeout_s: float) -> T | None:
    """Read ``topic`` from ``start`` (partition → offset, e.g. :func:`end_offsets` taken earlier; partitions
    not named start at the beginning) as records arrive, until ``accept(record)`` returns something other
    than None (returned) or ``timeout_s`` passes (None)."""
    from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

    c = _consumer(settings)
    deadline = time.monotonic() + timeout_s
    try:
        parts = None
        while parts is None and time.monotonic() < deadline:
            parts = _partitions(c, topic, min(5.0, timeout_s))
            if parts is None:
                time.sleep(0.5)  # the job creates the results topic when it starts
        if parts is None:
            return None
        c.assign([TopicPartition(topic, p, start.get(p, OFFSET_BEGINNING)) for p in parts])
        while time.monotonic() < deadline:
            for m in c.consume(500, timeout=min(0.1, max(0.01, deadline - time.monotonic()))):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise ReadError(f"topic {topic}: {m.error()}")
                found = accept(_record(m))
                if found is not None:
                    return found
        return None
    finally:
        c.close()


def kafka_error(settings: Settings, *, timeout_s: float = 3.0) -> str | None:
    """None when the brokers answer a metadata request within ``timeout_s``, else what went wrong."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    try:
        AdminClient(client_config(settings.kafka)).list_topics(timeout=timeout_s)
    except KafkaException as e:
        return f"Kafka at {settings.kafka.bootstrap} does not answer ({e.args[0]}); is the stack up (`zhongtai stack status`)?"
    return None
