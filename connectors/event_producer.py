"""The collector's Kafka producer: idempotent, keyed, and every send answered by its delivery report.

:class:`EventProducer` wraps one confluent-kafka ``Producer`` with ``enable.idempotence`` (``acks=all``, no
duplicates or reordering from the producer's own retries) and a thread that serves its delivery reports.
:meth:`EventProducer.send` queues records and returns one ``concurrent.futures.Future`` per record that ends
with ``(partition, offset)`` or a :class:`ProducerUnavailable`; a caller answers its own client only once all
of them have ended, so an accepted event is one Kafka has acknowledged.

Back-pressure: :meth:`send` raises :class:`ProducerUnavailable` at once when the producer's queue is full
(``collector.queue_max_events``) or when every broker has been down since the last acknowledgement (then
the thread probes the cluster once a second and clears the state when it answers); a record Kafka does not
acknowledge within ``collector.delivery_timeout_ms`` fails its future. None is dropped without its future
saying so.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from connectors.kafka_security import client_config

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import Settings

logger = logging.getLogger(__name__)

__all__ = ["EventProducer", "ProducerUnavailable", "producer_config"]


class ProducerUnavailable(RuntimeError):
    """Kafka cannot take the events now: ``cause`` is ``queue_full``, ``kafka_down`` or ``delivery_failed``."""

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause


def producer_config(settings: Settings) -> dict[str, Any]:
    """The librdkafka configuration of the collector's producer."""
    c = settings.collector
    return {
        **client_config(settings.kafka),
        "enable.idempotence": True,
        "acks": "all",
        "max.in.flight.requests.per.connection": 5,
        "message.timeout.ms": c.delivery_timeout_ms,
        "queue.buffering.max.messages": c.queue_max_events,
        "linger.ms": c.linger_ms,
        "compression.type": "lz4",
        # the Java client's partitioner: a key lands on the partition a Java producer would choose
        "partitioner": "murmur2_random",
        "client.id": "zhongtai-collector",
    }


class EventProducer:
    """One idempotent producer for ``topic`` and the thread that polls it; :meth:`close` flushes and stops."""

    def __init__(self, settings: Settings, topic: str | None = None) -> None:
        from confluent_kafka import Producer

        self.topic = topic or settings.collector.topic
        self.bootstrap = settings.kafka.bootstrap
        self.config = producer_config(settings)
        self._down_since: float | None = None
        self._last_error = ""
        self._producer = Producer({**self.config, "error_cb": self._on_error})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="collector-producer", daemon=True)
        self._thread.start()

    # ---- sending ---------------------------------------------------------------------------------

    def send(self, records: Sequence[tuple[bytes, bytes]], timestamp_ms: int) -> Future[int]:
        """Queue ``(key, value)`` records with the record timestamp ``timestamp_ms``; the future ends with
        the number of records once Kafka has acknowledged every one, or with the first
        :class:`ProducerUnavailable` once every one has its delivery report.

        Raises :class:`ProducerUnavailable` when Kafka is known to be down (nothing queued) or the queue fills
        part-way: the records queued before that are still delivered, which is harmless, since the caller
        answers 503 and its client retries them with the same ``messageId`` (the job deduplicates).
        """
        if self._down_since is not None:
            raise ProducerUnavailable("kafka_down", f"Kafka at {self.bootstrap} is unreachable ({self._last_error})")
        from confluent_kafka import KafkaException

        batch = _Batch(len(records))
        for key, value in records:
            try:
                self._producer.produce(self.topic, value=value, key=key, timestamp=timestamp_ms,
                                       on_delivery=batch.report)
            except BufferError:
                raise ProducerUnavailable("queue_full", f"the producer's queue is full "
                                          f"({self.config['queue.buffering.max.messages']} events)") from None
            except KafkaException as e:
                raise ProducerUnavailable("delivery_failed", f"Kafka refused the event: {e}") from None
        return batch.future

    # ---- the poll thread -------------------------------------------------------------------------

    def _on_error(self, err: Any) -> None:
        from confluent_kafka import KafkaError

        self._last_error = err.str()
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            if self._down_since is None:
                logger.warning("collector: every Kafka broker at %s is down (%s); answering 503 until one is back",
                               self.bootstrap, err.str())
                self._down_since = time.monotonic()

    def _poll(self) -> None:
        last_probe = 0.0
        while not self._stop.is_set():
            self._producer.poll(0.05)
            if self._down_since is not None and time.monotonic() - last_probe > 1.0:
                last_probe = time.monotonic()
                if self._reachable():
                    logger.warning("collector: Kafka at %s answers again", self.bootstrap)
                    self._down_since = None

    def _reachable(self) -> bool:
        from confluent_kafka import KafkaException

        try:
            self._producer.list_topics(self.topic, timeout=1.0)
        except KafkaException:
            return False
        return True

    @property
    def kafka_down(self) -> bool:
        return self._down_since is not None

    def queued(self) -> int:
        """What the producer still holds: events queued or in flight, and protocol requests (``len(Producer)``)."""
        return len(self._producer)

    def close(self, timeout_s: float = 10.0) -> int:
        """Deliver what is queued (at most ``timeout_s``), stop the thread; returns the events left undelivered."""
        self._stop.set()
        self._thread.join()
        left = self._producer.flush(timeout_s)
        if left:
            logger.error("collector: %d event(s) were not acknowledged by Kafka at close; their requests got 503",
                         left)
        return int(left)


class _Batch:
    """Counts the delivery reports of one :meth:`EventProducer.send` down to zero (the poll thread calls
    :meth:`report`; one thread, so no lock), then ends :attr:`future`."""

    __slots__ = ("error", "future", "left", "total")

    def __init__(self, total: int) -> None:
        self.total = self.left = total
        self.error: str | None = None
        self.future: Future[int] = Future()
        if total == 0:
            self.future.set_result(0)

    def report(self, err: Any, msg: Any) -> None:
        if err is not None and self.error is None:
            self.error = err.str()
        self.left -= 1
        if self.left == 0:
            if self.error is None:
                self.future.set_result(self.total)
            else:
                self.future.set_exception(ProducerUnavailable(
                    "delivery_failed", f"Kafka did not acknowledge every event: {self.error}"))
