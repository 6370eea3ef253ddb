"""Kafka side of a channel worker (``confluent-kafka``): a read_committed consumer with manual
offsets, and a transactional producer that writes receipts and dead letters together with the
consumer offsets (``send_offsets_to_transaction``), so they become visible exactly when the offsets
are committed.

The transactional id is stable per ``(group, channel, instance)``: a restarted worker fences its
dead predecessor and aborts the transaction that one left open, instead of waiting for it to time
out (which would hold back every read_committed reader of ``zt.delivery``). The group metadata sent
with the offsets fences a zombie that lost its partitions (KIP-447).

A broker that goes away (a restart, a leader moving) is waited for: the consumer reconnects by itself, and a
commit retries for up to ``COMMIT_FOR_S`` (a retriable failure repeats the step that failed, as librdkafka
allows; an abortable one aborts and sends the whole transaction again: the aborted one is invisible to
read_committed readers), so the worker neither stops nor writes a receipt twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

logger = logging.getLogger(__name__)

TP = tuple[str, int]

#: How long a commit keeps retrying while the broker is away before the worker stops (its restart re-reads
#: from the committed offsets). Below ``max.poll.interval.ms`` (300 s): the consumer stays in its group.
COMMIT_FOR_S = 120.0


@dataclass(frozen=True, slots=True)
class InMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    @property
    def tp(self) -> TP:
        return (self.topic, self.partition)

    @property
    def src(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass(frozen=True, slots=True)
class OutRecord:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, str | bytes | None]] = field(default_factory=list)


class KafkaWorkerIO:
    """Consume one topic; commit outputs + offsets in one transaction.

    ``on_revoke(tps)`` is called (from inside ``poll``) before partitions are taken away, so the
    worker can commit what it finished and forget the rest; ``on_lost(tps)`` when they are already gone.
    """

    def __init__(self, bootstrap: str, topic: str, group: str, instance: str, transactional_id: str,
                 transaction_timeout_ms: int, on_revoke: Callable[[list[TP]], None] | None = None,
                 on_lost: Callable[[list[TP]], None] | None = None) -> None:
        self.topic = topic
        self.on_revoke = on_revoke
        self.on_lost = on_lost
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": group,
            # static membership: a restarted worker gets its partitions back at once instead of
            # waiting a session timeout for the dead member to be evicted
            "group.instance.id": instance,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            # longer than a broker restart: a static member whose session expires while the broker is away is
            # fenced when it rejoins, and librdkafka makes that fatal (the worker would have to be restarted);
            # a restarted worker still gets its partitions back at once (static membership)
            "session.timeout.ms": 45_000,
            "max.poll.interval.ms": 300_000,
        })
        self.producer = Producer({
            "bootstrap.servers": bootstrap,
            "transactional.id": transactional_id,
            "transaction.timeout.ms": transaction_timeout_ms,
            "enable.idempotence": True,
            "linger.ms": 5,
        })
        try:
            self.producer.init_transactions(30)
        except KafkaException as e:
            raise RuntimeError(
                f"worker: initialising Kafka transactions ({transactional_id}) at {bootstrap} failed: {e}; "
                "is Kafka up (`zhongtai stack up`)?"
            ) from e
        self.assigned: set[TP] = set()
        self.paused: set[TP] = set()
        self.consumer.subscribe([topic], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost)

    def _assigned(self, _consumer: Consumer, parts: list[TopicPartition]) -> None:
        self.assigned |= {(p.topic, p.partition) for p in parts}

    def _revoked(self, _consumer: Consumer, parts: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in parts]
        self.paused -= set(tps)
        self.assigned -= set(tps)
        if self.on_revoke and tps:
            self.on_revoke(tps)

    def _lost(self, _consumer: Consumer, parts: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in parts]
        self.paused -= set(tps)
        self.assigned -= set(tps)
        if self.on_lost and tps:
            self.on_lost(tps)

    def poll(self, max_messages: int, timeout_s: float) -> list[InMessage]:
        out = []
        for m in self.consumer.consume(num_messages=max_messages, timeout=max(0.0, timeout_s)):
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.fatal():
                    raise KafkaException(err)
                logger.warning("worker: consumer error on %s: %s", self.topic, err)
                continue
            topic, part, off = m.topic(), m.partition(), m.offset()
            assert topic is not None and part is not None and off is not None  # set on every record
            if (topic, part) not in self.assigned:  # fetched before a revoke in this very call
                continue
            out.append(InMessage(topic, part, off, cast(bytes | None, m.key()), cast(bytes | None, m.value())))
        return out

    def pause_all(self) -> None:
        parts = [tp for tp in self.consumer.assignment() if (tp.topic, tp.partition) not in self.paused]
        if parts:
            self.consumer.pause(parts)
            self.paused |= {(p.topic, p.partition) for p in parts}

    def resume_all(self) -> None:
        if self.paused:
            self.consumer.resume([TopicPartition(t, p) for t, p in self.paused])
            self.paused.clear()

    def commit(self, outputs: Sequence[OutRecord], offsets: dict[TP, int]) -> None:
        """Produce ``outputs`` and commit ``offsets`` (next offset to read) atomically; waits for a broker
        that is away (see the module's doc) for up to ``COMMIT_FOR_S``, then raises RuntimeError."""
        if not outputs and not offsets:
            return
        deadline, delay, stage = time.monotonic() + COMMIT_FOR_S, 0.5, "begin"
        while True:
            try:
                if stage == "abort":
                    self.producer.abort_transaction(30)
                    stage = "begin"
                if stage == "begin":
                    self.producer.begin_transaction()
                    for r in outputs:
                        self.producer.produce(r.topic, value=r.value, key=r.key, headers=r.headers or None)
                    stage = "offsets"
                if stage == "offsets":
                    if offsets:
                        self.producer.send_offsets_to_transaction(
                            [TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                            self.consumer.consumer_group_metadata(), 30,
                        )
                    stage = "commit"
                self.producer.commit_transaction(30)
                return
            except KafkaException as e:
                err = e.args[0]
                if err.txn_requires_abort():
                    stage = "abort"
                if err.fatal() or not (err.retriable() or err.txn_requires_abort()) or time.monotonic() > deadline:
                    if stage == "abort":
                        try:
                            self.producer.abort_transaction(30)
                        except KafkaException:
                            logger.warning("worker: aborting the failed transaction failed too", exc_info=True)
                    raise RuntimeError(
                        f"worker: committing {len(outputs)} outputs and offsets {offsets} failed: {err}; the worker "
                        "stops, and a restart re-reads from the last committed offsets (nothing is lost)"
                    ) from e
                logger.warning("worker: committing %d outputs and offsets failed at %s (%s); retrying in %.1f s",
                               len(outputs), stage, err, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def close(self) -> None:
        try:
            self.consumer.close()
        finally:
            self.producer.flush(10)
