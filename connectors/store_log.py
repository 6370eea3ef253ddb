"""The store log: the job's Redis/HBase rows as a transactional Kafka topic (``job.store_mode: log``).

The job appends every store row (``pipelines.events.STORE_COLUMNS``) to ``<store_log_prefix><group>``
through Flink's exactly-once Kafka sink (``connectors.kafka_tables.store_log_sink_ddl``): a row is
committed with the checkpoint that covers it, and a run that fails before that checkpoint leaves its
rows in an aborted transaction. :class:`StoreLogReader` reads the log ``read_committed`` — rows of
completed checkpoints only, in the order the job wrote them per key (key = the row's key, one
partition per key) — and resumes from the offsets committed under its consumer group.
``zhongtai.services.applier`` writes what it reads to Redis and HBase.

A broker that goes away (restarted, a leader moving) is waited for: the consumer reconnects by itself, its
"transport failure" / "all brokers down" errors are logged (once per kind and minute) rather than raised, a
commit that fails on them stays pending for the next one (the rows are idempotent; at worst a restart
re-applies them), and the end offsets are asked again until the caller's deadline.
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson

from connectors.kafka_security import client_config
from connectors.redis_store import StoreRow

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import Settings


logger = logging.getLogger(__name__)


class StoreLogError(RuntimeError):
    pass


def _transient(err: Any) -> bool:
    """A ``KafkaError`` that a broker coming back cures (librdkafka reconnects and retries by itself)."""
    from confluent_kafka import KafkaError

    if err.fatal():
        return False
    return bool(err.retriable()) or err.code() in {
        KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT, KafkaError._RESOLVE,
        KafkaError._WAIT_COORD, KafkaError._NO_OFFSET, KafkaError._UNKNOWN_PARTITION,
        KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.LEADER_NOT_AVAILABLE, KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
    }


def store_log_topic(settings: Settings, group: str | None = None) -> str:
    """The store log of the job that reads with consumer group ``group`` (default ``kafka.consumer_group``)."""
    return f"{settings.kafka.topics.store_log_prefix}{group or settings.kafka.consumer_group}"


def decode_row(value: bytes) -> StoreRow:
    """One log record (JSON, null fields left out) → :class:`StoreRow`."""
    d = orjson.loads(value)
    amount = d.get("amount")
    return StoreRow(
        d["kind"], d["k"], d.get("bucket", 0), d.get("n1", 0), d.get("n2", 0), d.get("n3", 0), d.get("n4", 0),
        d.get("n5", 0), Decimal(amount) if amount is not None else Decimal(0), d.get("t1", 0), d.get("t2", 0),
        d.get("t3", 0), d.get("s1"),
    )


def encode_row(row: StoreRow) -> bytes:
    """The inverse of :func:`decode_row` (what the job's JSON format writes; used by tests and tools)."""
    d: dict[str, Any] = {"k": row.key, "kind": row.kind, "bucket": row.bucket, "n1": row.n1, "n2": row.n2,
                         "n3": row.n3, "n4": row.n4, "n5": row.n5, "amount": str(row.amount), "t1": row.t1,
                         "t2": row.t2, "t3": row.t3}
    if row.s1 is not None:
        d["s1"] = row.s1
    return orjson.dumps(d)


class StoreLogReader:
    """Reads one store log, committed records only, from its group's committed offsets (else the start).

    ``from_start``: read the whole log again (rebuild Redis/HBase from what the log still retains).
    Every partition of the topic is assigned to this reader (one applier per job; it holds no state
    of its own, so it can be restarted anywhere). Offsets are committed with :meth:`commit` after the
    rows read so far have been written.
    """

    def __init__(self, settings: Settings, topic: str, group: str, *, from_start: bool = False,
                 timeout_s: float = 30.0) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.topic = topic
        self._consumer = Consumer({
            **client_config(settings.kafka),
            "group.id": group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100,
        })
        meta = self._consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            self._consumer.close()
            raise StoreLogError(f"store log {topic}: topic not found ({meta.error if meta else 'no metadata'}); "
                                "the job creates it when it starts with job.store_mode=log")
        self.partitions = sorted(meta.partitions)
        tps = [TopicPartition(topic, p) for p in self.partitions]
        self._warned: dict[tuple[str, int], float] = {}
        committed = tps if from_start else self._committed(tps, timeout_s)
        self._consumer.assign([TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
                               for tp in committed])
        self._pending = False

    def _committed(self, tps: list[Any], timeout_s: float) -> list[Any]:
        """The group's committed offsets of ``tps``; asked again while the group coordinator is away or still
        loading (a broker that just started or restarted answers NOT_COORDINATOR for a moment)."""
        from confluent_kafka import KafkaException

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return list(self._consumer.committed(tps, timeout=timeout_s))
            except KafkaException as e:
                if not _transient(e.args[0]) or time.monotonic() > deadline:
                    raise
                self._warn("committed offsets", e.args[0])
                time.sleep(0.5)

    def read(self, max_rows: int, timeout_s: float) -> list[StoreRow]:
        """Up to ``max_rows`` committed rows, waiting at most ``timeout_s`` for the first."""
        from confluent_kafka import KafkaError

        rows: list[StoreRow] = []
        for m in self._consumer.consume(max_rows, timeout=timeout_s):
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if not _transient(err):
                    raise StoreLogError(f"store log {self.topic}: {err}")
                self._warn("read", err)
                continue
            value = m.value()
            if value is None:  # the job never writes a tombstone to its log
                raise StoreLogError(f"store log {self.topic}: a record without a value at offset {m.offset()}")
            rows.append(decode_row(value))
        self._pending = self._pending or bool(rows)
        return rows

    def commit(self) -> None:
        """Commit the positions after the rows returned so far (call once they are written)."""
        from confluent_kafka import KafkaException

        if self._pending:
            try:
                self._consumer.commit(asynchronous=False)
            except KafkaException as e:
                if not _transient(e.args[0]):
                    raise
                self._warn("commit", e.args[0])  # still pending: the next commit carries these positions
                return
            self._pending = False

    def _warn(self, what: str, err: Any) -> None:
        """Log a transient error once per kind and minute (a broker away for a while repeats it every poll)."""
        now, k = time.monotonic(), (what, err.code())
        if now - self._warned.get(k, -60.0) >= 60.0:
            self._warned[k] = now
            logger.warning("store log %s: %s failed (%s); the consumer reconnects by itself, waiting", self.topic,
                           what, err)

    def end_offsets(self, timeout_s: float = 10.0) -> dict[int, int]:
        """partition → last stable offset (what a read_committed reader can reach now); asked again while the
        broker is away, for up to ``timeout_s``."""
        from confluent_kafka import KafkaException, TopicPartition

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return {p: self._consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=min(
                    timeout_s, 10.0), cached=False)[1] for p in self.partitions}
            except KafkaException as e:
                if not _transient(e.args[0]) or time.monotonic() > deadline:
                    raise
                self._warn("end offsets", e.args[0])
                time.sleep(0.5)

    def behind(self, ends: dict[int, int]) -> dict[int, int]:
        """partition → records still to read before reaching ``ends`` (only partitions behind)."""
        from confluent_kafka import TopicPartition

        pos = self._consumer.position([TopicPartition(self.topic, p) for p in self.partitions])
        out: dict[int, int] = {}
        for tp in pos:
            end = ends.get(tp.partition, 0)
            at = tp.offset
            if at < 0:  # nothing fetched yet: behind unless the partition is empty
                committed = self._committed([tp], 10.0)[0].offset
                at = max(committed, 0)
            if at < end:
                out[tp.partition] = end - at
        return out

    def close(self) -> None:
        self._consumer.close()


def wait_for_topic(settings: Settings, topic: str, timeout_s: float) -> bool:
    """True once ``topic`` exists (the job creates it at start), False after ``timeout_s``."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(client_config(settings.kafka))
    deadline = time.monotonic() + timeout_s
    while True:
        if topic in admin.list_topics(timeout=10).topics:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
