"""The store applier: writes the job's committed store log to Redis and HBase (``job.store_mode: log``).

Why a log (docs/semantics.md, "Failures and restore"): a job that writes Redis itself writes rows
after its last checkpoint too; when it then fails, the restored run replays from that checkpoint and
may take another path (the identity graph sees the replayed combinations in another order and passes
through other transient persons), so rows of the first path stay behind. Through the transactional
log only rows of completed checkpoints are ever applied, so Redis and HBase hold exactly what the
job's state says, through any number of failures. The price is one checkpoint interval of latency.

Applying is idempotent: rows carry absolute values (and profile buckets go through the Lua script
that applies a bucket against the value stored before), in the job's order per key. The applier
commits its Kafka offsets after each written batch; a crashed applier re-applies from the last
commit and ends in the same state.

``zhongtai run`` starts one in its own process (a thread) and drains it when a bounded run ends.
Next to a job on a Flink cluster, run ``zhongtai apply`` (same ``--group`` and prefixes as the job).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from connectors.store_log import StoreLogReader, store_log_topic, wait_for_topic

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import Settings

logger = logging.getLogger(__name__)


#: How long a batch is retried on lost Redis / HBase connections before the applier gives up.
RETRY_FOR_S = 300.0


def _transient(e: BaseException) -> bool:
    """A lost or refused connection (worth a retry on a fresh client), not a bad row or a bug."""
    import redis

    if isinstance(e, (redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError, BrokenPipeError)):
        return True
    name = type(e).__name__
    return (name in ("TTransportException", "TException", "ClusterDownError", "MaxConnectionsError", "TryAgainError")
            or (isinstance(e, OSError) and e.errno is not None))


class ApplierError(RuntimeError):
    pass


class ApplierMetrics:
    """``zhongtai_applier_rows_total``, ``zhongtai_applier_batches_total``, ``zhongtai_applier_write_seconds``
    (one batch to Redis + HBase), ``zhongtai_applier_lag_records`` (committed rows not yet applied, refreshed
    every ``LAG_EVERY_S``), ``zhongtai_applier_last_batch_timestamp_seconds`` and
    ``zhongtai_applier_retries_total`` (a batch write retried after a lost connection; label ``store``:
    redis | hbase); label ``topic``."""

    def __init__(self, topic: str, registry: Any = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry or CollectorRegistry()
        r, labels = self.registry, ("topic",)
        self._rows = Counter("zhongtai_applier_rows", "Store-log rows written to Redis/HBase", labels,
                             registry=r).labels(topic)
        self._batches = Counter("zhongtai_applier_batches", "Batches written", labels, registry=r).labels(topic)
        self._seconds = Histogram("zhongtai_applier_write_seconds", "Writing one batch to Redis + HBase", labels,
                                  buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
                                  registry=r).labels(topic)
        self._lag = Gauge("zhongtai_applier_lag_records", "Committed store-log rows not applied yet", labels,
                          registry=r).labels(topic)
        self._retries = Counter("zhongtai_applier_retries", "Batch writes retried after a lost Redis/HBase "
                                "connection", ("topic", "store"), registry=r)
        self._topic = topic
        self._last = Gauge("zhongtai_applier_last_batch_timestamp_seconds", "When the last batch was written",
                           labels, registry=r).labels(topic)

    def batch(self, rows: int, seconds: float) -> None:
        self._rows.inc(rows)
        self._batches.inc()
        self._seconds.observe(seconds)
        self._last.set(time.time())

    def retry(self, store: str) -> None:
        self._retries.labels(self._topic, store).inc()

    def lag(self, records: int) -> None:
        self._lag.set(records)

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` on ``port`` (0: any free port) in a daemon thread; returns the port."""
        from prometheus_client import start_http_server

        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return int(server.server_port)


#: How often ``run`` refreshes the lag gauge (a broker round trip per partition).
LAG_EVERY_S = 5.0


@dataclass
class ApplierStats:
    rows: int = 0
    batches: int = 0
    retries: int = 0
    seconds_writing: float = 0.0
    last_batch_at: float | None = None


@dataclass
class StoreApplier:
    """Reads ``<store_log_prefix><group>`` committed records and writes them with ``RedisStore``/``HBaseStore``.

    ``redis_prefix``/``hbase_prefix``/``hbase`` must be the job's (``RunOptions``). Its own offsets are
    kept under consumer group ``<group>-store``.
    """

    settings: Settings
    group: str | None = None
    redis_prefix: str | None = None
    hbase_prefix: str | None = None
    hbase: bool = True
    #: apply the whole retained log again instead of resuming from the group's committed offsets
    from_start: bool = False
    metrics: ApplierMetrics | None = None
    stats: ApplierStats = field(default_factory=ApplierStats)
    _reader: StoreLogReader | None = field(default=None, repr=False)
    _redis: Any = field(default=None, repr=False)
    _hbase: Any = field(default=None, repr=False)

    @property
    def topic(self) -> str:
        return store_log_topic(self.settings, self.group)

    @property
    def consumer_group(self) -> str:
        return f"{self.group or self.settings.kafka.consumer_group}-store"

    def open(self, wait_s: float = 120.0) -> None:
        from connectors.redis_store import RedisStore

        if self._reader is not None:
            return
        if not wait_for_topic(self.settings, self.topic, wait_s):
            raise ApplierError(f"store log {self.topic} does not exist after {wait_s:g} s: is the job running with "
                               f"the same --group ({self.group or self.settings.kafka.consumer_group})?")
        self._reader = StoreLogReader(self.settings, self.topic, self.consumer_group, from_start=self.from_start)
        self._redis = RedisStore(self.settings.redis, prefix=self.redis_prefix)
        if self.hbase:
            from connectors.hbase_store import HBaseStore

            self._hbase = HBaseStore(self.settings.hbase, prefix=self.hbase_prefix)
            self._hbase.ensure_tables()

    @property
    def reader(self) -> StoreLogReader:
        self.open()
        assert self._reader is not None
        return self._reader

    def step(self, timeout_s: float = 0.2) -> int:
        """Read one batch of committed rows, write it to Redis (+ HBase), commit the offsets; rows written."""
        rows = self.reader.read(self.settings.job.applier_batch, timeout_s)
        if rows:
            t0 = time.perf_counter()
            self._write(rows)
            took = time.perf_counter() - t0
            if self.metrics is not None:
                self.metrics.batch(len(rows), took)
            self.stats.seconds_writing += took
            self.stats.rows += len(rows)
            self.stats.batches += 1
            self.stats.last_batch_at = time.time()
        self.reader.commit()
        return len(rows)

    def _write(self, rows: list[Any]) -> None:
        """Write one batch to Redis (+ HBase). A lost connection (a restarted Redis or Thrift server, a broken
        pipe under load) is retried with backoff (0.5 s doubling to 10 s) on a fresh client, the same rows
        again: the writes are idempotent and the batch's offsets are committed only after it is written. A
        store still down when the fresh client connects is one more failed attempt, not the end. Gives up
        after ``RETRY_FOR_S`` with an :class:`ApplierError` that names the store."""
        delay, deadline = 0.5, time.monotonic() + RETRY_FOR_S
        for store in ("redis", "hbase"):
            if (self._redis if store == "redis" else self._hbase) is None:
                continue
            reconnect = False
            while True:
                try:
                    if reconnect:
                        self._reconnect(store)
                    (self._redis if store == "redis" else self._hbase).write(rows)
                    break
                except Exception as e:  # noqa: BLE001 - only connection failures are retried, see _transient
                    if not _transient(e) or time.monotonic() > deadline:
                        where = (f"Redis {self.settings.redis.host}:{self.settings.redis.port}" if store == "redis"
                                 else f"HBase Thrift {self.settings.hbase.host}:{self.settings.hbase.port}")
                        raise ApplierError(f"store applier: writing a batch of {len(rows)} rows to {where} failed "
                                           f"({e!r}); the rows stay in the store log (not committed): fix the "
                                           "store and run `zhongtai apply` again") from e
                    logger.warning("store applier: %s write failed (%r); reconnecting, retry in %.1f s", store, e, delay)
                    self.stats.retries += 1
                    if self.metrics is not None:
                        self.metrics.retry(store)
                    time.sleep(delay)
                    delay = min(delay * 2, 10.0)
                    reconnect = True

    def _reconnect(self, store: str) -> None:
        from connectors.redis_store import RedisStore

        try:
            (self._redis if store == "redis" else self._hbase).close()
        except Exception:  # noqa: BLE001 - the old client is broken anyway
            pass
        if store == "redis":
            self._redis = RedisStore(self.settings.redis, prefix=self.redis_prefix)
        else:
            from connectors.hbase_store import HBaseStore

            self._hbase = HBaseStore(self.settings.hbase, prefix=self.hbase_prefix)

    def drain(self, timeout_s: float = 300.0) -> int:
        """Apply everything committed to the log as of now; rows written. Raises :class:`ApplierError` if the
        end is not reached within ``timeout_s`` (a transaction left open: the job still running, or a job
        that died with one open, which the broker aborts after ``kafka.transaction_timeout_ms``)."""
        self.open()
        deadline = time.monotonic() + timeout_s
        ends = self.reader.end_offsets(timeout_s)
        n = 0
        while True:
            n += self.step(0.1)
            behind = self.reader.behind(ends)
            if not behind:
                return n
            if time.monotonic() > deadline:
                raise ApplierError(f"store log {self.topic}: still {sum(behind.values())} records behind after "
                                   f"{timeout_s:g} s (partitions {sorted(behind)})")

    def run(self, stop: threading.Event, job_done: Callable[[], bool] | None = None) -> None:
        """Apply until ``stop`` is set, or until ``job_done()`` says the job has ended (then drain first)."""
        self.open()
        last_check = last_lag = 0.0
        while not stop.is_set():
            self.step(0.2)
            if self.metrics is not None and time.monotonic() - last_lag > LAG_EVERY_S:
                last_lag = time.monotonic()
                try:
                    self.metrics.lag(sum(self.reader.behind(self.reader.end_offsets(1.0)).values()))
                except Exception as e:  # noqa: BLE001 - a broker away: the gauge keeps its last value
                    logger.warning("store applier: lag not refreshed (%r)", e)
            if job_done is not None and time.monotonic() - last_check > 1.0:
                last_check = time.monotonic()
                if job_done():
                    self.drain()
                    return

    def close(self) -> None:
        for c in (self._reader, self._redis, self._hbase):
            if c is not None:
                c.close()
        self._reader = self._redis = self._hbase = None


class ApplierThread:
    """A :class:`StoreApplier` on a daemon thread of this process (``zhongtai.jobs.runner``, tests).

    ``finish()`` drains what the job committed and stops; an error on the thread is raised there.
    """

    def __init__(self, applier: StoreApplier, job_done: Callable[[], bool] | None = None) -> None:
        self.applier = applier
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, args=(job_done,), name="zt-store-applier", daemon=True)
        self._thread.start()

    def _main(self, job_done: Callable[[], bool] | None) -> None:
        try:
            self.applier.run(self._stop, job_done)
        except BaseException as e:  # handed to finish()
            logger.exception("store applier failed")
            self._error = e

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop the loop without draining and close the clients (a run that failed or was cancelled).

        The thread is joined before its clients close: closing a Kafka consumer while another thread is
        inside its ``consume`` can block for ever."""
        self._stop.set()
        self._thread.join(timeout=timeout_s)
        if self._thread.is_alive():
            logger.warning("store applier did not stop within %.0f s; its clients are left open", timeout_s)
            return
        self.applier.close()

    def finish(self, timeout_s: float = 300.0) -> ApplierStats:
        """Stop the loop, apply what is committed by now, close; return the stats."""
        self._stop.set()
        self._thread.join(timeout=60)
        try:
            if self._error is not None:
                raise ApplierError(f"store applier failed: {self._error!r}") from self._error
            self.applier.drain(timeout_s)
            return self.applier.stats
        finally:
            self.applier.close()
