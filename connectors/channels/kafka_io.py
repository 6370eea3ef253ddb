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
read_committed readers), so the worker neither stops nor writes a receipt twice. Meanwhile the consumer's
errors are logged through a :class:`connectors.log_throttle.LogThrottle`: the first of each kind at once, then
one line per ``CONSUMER_ERROR_LOG_EVERY_S`` with how many more came.

A librdkafka call that blocks past its own timeout (confluentinc/librdkafka#5456: ``send_offsets_to_transaction``
when the group coordinator went away) cannot be interrupted: each commit attempt tells a :class:`CommitWatch`
what it is doing, and the worker's watchdog (``zhongtai.services.workers.watchdog``) ends the process when an
attempt takes too long.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from connectors.kafka_security import client_config
from connectors.log_throttle import LogLine, LogThrottle

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import KafkaSettings

logger = logging.getLogger(__name__)

TP = tuple[str, int]

#: How long a commit keeps retrying while the broker is away before the worker stops (its restart re-reads
#: from the committed offsets). Below ``max.poll.interval.ms`` (300 s): the consumer stays in its group.
COMMIT_FOR_S = 120.0
#: While the consumer keeps reporting one kind of error (a broker away), one log line per this many seconds.
CONSUMER_ERROR_LOG_EVERY_S = 60.0


class CommitWatch(Protocol):
    """Told what each commit attempt is doing (``zhongtai.services.workers.watchdog.CommitWatchdog``)."""

    def attempt(self, what: str, step: str = ...) -> None: ...

    def step(self, step: str) -> None: ...

    def settled(self) -> None: ...


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


def commit_label(outputs: Sequence[OutRecord], offsets: dict[TP, int]) -> str:
    """What a commit carries, for a log line: "20 receipts/dead letters and the offsets of 1 partition"."""
    return (f"{len(outputs)} receipts/dead letters and the offsets of {len(offsets)} "
            f"partition{'' if len(offsets) == 1 else 's'}")


class _StepFailed(Exception):
    def __init__(self, stage: str, err: KafkaError) -> None:
        super().__init__(stage, err)
        self.stage, self.err = stage, err


class KafkaWorkerIO:
    """Consume one topic; commit outputs + offsets in one transaction.

    ``on_revoke(tps)`` is called (from inside ``poll``) before partitions are taken away, so the
    worker can commit what it finished and forget the rest; ``on_lost(tps)`` when they are already gone.
    """

    def __init__(self, kafka: KafkaSettings, topic: str, group: str, instance: str, transactional_id: str,
                 transaction_timeout_ms: int, on_revoke: Callable[[list[TP]], None] | None = None,
                 on_lost: Callable[[list[TP]], None] | None = None, watch: CommitWatch | None = None) -> None:
        self.topic = topic
        self.on_revoke = on_revoke
        self.on_lost = on_lost
        self.watch = watch
        self.errors = LogThrottle(CONSUMER_ERROR_LOG_EVERY_S)
        self.consumer = Consumer({
            **client_config(kafka),
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
            **client_config(kafka),
            "transactional.id": transactional_id,
            "transaction.timeout.ms": transaction_timeout_ms,
            "enable.idempotence": True,
            "linger.ms": 5,
        })
        try:
            self.producer.init_transactions(30)
        except KafkaException as e:
            raise RuntimeError(
                f"worker: initialising Kafka transactions ({transactional_id}) at {kafka.bootstrap} failed: {e}; "
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
                self._log_lines(self.errors.note(err.name(), str(err), time.monotonic()))
                continue
            topic, part, off = m.topic(), m.partition(), m.offset()
            assert topic is not None and part is not None and off is not None  # set on every record
            if (topic, part) not in self.assigned:  # fetched before a revoke in this very call
                continue
            out.append(InMessage(topic, part, off, cast(bytes | None, m.key()), cast(bytes | None, m.value())))
        self._log_lines(self.errors.due(time.monotonic()))
        return out

    def _log_lines(self, lines: Sequence[LogLine]) -> None:
        for ln in lines:
            if ln.suppressed:
                logger.warning("worker: %d more consumer errors %s on %s in the last %.0f s (the last: %s); the "
                               "consumer reconnects by itself", ln.suppressed, ln.kind, self.topic, ln.over_s, ln.text)
            else:
                logger.warning("worker: consumer error on %s: %s (the consumer reconnects by itself; more of this "
                               "kind are counted and logged once per %.0f s)", self.topic, ln.text,
                               CONSUMER_ERROR_LOG_EVERY_S)

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
        that is away (see the module's doc) for up to ``COMMIT_FOR_S``, then raises RuntimeError. Each
        attempt is reported to ``watch`` (the pause before a retry is not: a sleep cannot hang)."""
        if not outputs and not offsets:
            return
        what = commit_label(outputs, offsets)
        deadline, delay, stage = time.monotonic() + COMMIT_FOR_S, 0.5, "begin"
        try:
            while True:
                if self.watch is not None:
                    self.watch.attempt(what, stage)
                try:
                    self._attempt(outputs, offsets, stage)
                    return
                except _StepFailed as f:
                    stage, err = f.stage, f.err
                    if err.txn_requires_abort():
                        stage = "abort"
                    if err.fatal() or not (err.retriable() or err.txn_requires_abort()) or time.monotonic() > deadline:
                        if stage == "abort":
                            try:
                                self._step("abort_transaction")
                                self.producer.abort_transaction(30)
                            except KafkaException:
                                logger.warning("worker: aborting the failed transaction failed too", exc_info=True)
                        raise RuntimeError(
                            f"worker: committing {len(outputs)} outputs and offsets {offsets} failed: {err}; the "
                            "worker stops, and a restart re-reads from the last committed offsets (nothing is lost)"
                        ) from f.__cause__
                    logger.warning("worker: committing %d outputs and offsets failed at %s (%s); retrying in %.1f s",
                                   len(outputs), stage, err, delay)
                if self.watch is not None:
                    self.watch.settled()
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        finally:
            if self.watch is not None:
                self.watch.settled()

    def _attempt(self, outputs: Sequence[OutRecord], offsets: dict[TP, int], stage: str) -> None:
        """One try from ``stage`` (abort → begin → offsets → commit) to the commit; ``_StepFailed`` names the
        stage that failed."""
        try:
            if stage == "abort":
                self._step("abort_transaction")
                self.producer.abort_transaction(30)
                stage = "begin"
            if stage == "begin":
                self._step("begin_transaction")
                self.producer.begin_transaction()
                self._step("produce")
                for r in outputs:
                    self.producer.produce(r.topic, value=r.value, key=r.key, headers=r.headers or None)
                stage = "offsets"
            if stage == "offsets":
                if offsets:
                    self._step("send_offsets_to_transaction")
                    self.producer.send_offsets_to_transaction(
                        [TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                        self.consumer.consumer_group_metadata(), 30,
                    )
                stage = "commit"
            self._step("commit_transaction")
            self.producer.commit_transaction(30)
        except KafkaException as e:
            raise _StepFailed(stage, e.args[0]) from e

    def _step(self, step: str) -> None:
        if self.watch is not None:
            self.watch.step(step)

    def close(self) -> None:
        try:
            self.consumer.close()
        finally:
            self.producer.flush(10)
