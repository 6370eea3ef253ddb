"""The hand-written contenders: raw consume (the ceiling), a naive and a tuned counter consumer.

All three read the bench topics from the beginning to the end offsets they find at start (assigned
partitions, no group coordination, no commits) and return the number of records read. The counter
consumers write the live minute counters of docs/semantics.md to Redis under ``prefix``:

* naive — one Redis round trip per update: ``SADD`` of the event_id to a dedup set, then per scope
  (``campaign|channel`` and ``all``) ``HINCRBY`` of ``events`` and the type counter, ``HINCRBY`` of
  ``revenue_cents`` for purchases, ``SADD`` of the person to a set per key and, when new, ``HSET
  persons`` to its ``SCARD``. Revenue is kept in integer cents because ``HINCRBYFLOAT`` would not be
  exact; :mod:`bench.check` reads ``revenue_cents`` as cents.
* tuned — ``consume(num_messages=10000)``, orjson fast decode, a dedup set and the counters in
  Python dicts, one pipelined ``HSET`` of the absolute values of every key touched, per batch.
  No fault tolerance: a crash loses the in-memory state.

Kafka and Redis clients are imported here (not through ``connectors/``): this is the comparison
code a team would write by hand.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import redis
from confluent_kafka import Consumer, KafkaError, TopicPartition

from config.settings import Settings
from connectors.redis_store import minute_label
from zhongtai.devtools.generator.oracle import MINUTE, ZERO, _Pseudonyms, decode

from .fastdecode import fast_decode

BATCH = 10_000


def _redis(settings: Settings) -> redis.Redis:
    r = settings.redis
    return redis.Redis(host=r.host, port=r.port, db=r.db,
                       password=r.password.get_secret_value() if r.password else None)


class _Reader:
    """Assigned-partition reader from offset 0 to the end offsets seen at start."""

    def __init__(self, settings: Settings, topics: list[str], group: str) -> None:
        self.c = Consumer({
            "bootstrap.servers": settings.kafka.bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 16 * 1024 * 1024,
            "queued.max.messages.kbytes": 256 * 1024,
        })
        meta = self.c.list_topics(timeout=30)
        self.ends: dict[tuple[str, int], int] = {}
        tps = []
        for t in topics:
            for p in meta.topics[t].partitions:
                lo, hi = self.c.get_watermark_offsets(TopicPartition(t, p), timeout=30)
                if hi > lo:
                    self.ends[(t, p)] = hi
                    tps.append(TopicPartition(t, p, lo))
        self.total = sum(self.ends.values())
        self.c.assign(tps)

    def batches(self) -> Any:
        """Yield lists of messages until every partition reached its end offset."""
        left = dict(self.ends)
        while left:
            msgs = self.c.consume(BATCH, timeout=1.0)
            good = []
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise RuntimeError(f"bench consumer: Kafka error {err}")
                key = (m.topic(), m.partition())
                end = left.get(key)
                if end is None:
                    continue
                if m.offset() >= end - 1:
                    del left[key]
                if m.offset() < end:
                    good.append(m)
            if good:
                yield good

    def close(self) -> None:
        self.c.close()


def run_raw(settings: Settings, topics: list[str], group: str, **_: Any) -> dict[str, Any]:
    rd = _Reader(settings, topics, group)
    n = nbytes = 0
    for msgs in rd.batches():
        n += len(msgs)
        for m in msgs:
            nbytes += len(m.value() or b"")
    rd.close()
    return {"records": n, "bytes": nbytes}


def run_naive(settings: Settings, topics: list[str], group: str, prefix: str,
              budget_s: float | None = None, **_: Any) -> dict[str, Any]:
    """The first thing many teams write. Stops early (``complete: false``) after ``budget_s``."""
    job, pseudo = settings.job, _Pseudonyms(settings.pii)
    r = _redis(settings)
    seen_key = f"{prefix}:seen"
    ttl = settings.redis.minute_counter_ttl_s
    rd = _Reader(settings, topics, group)
    n = 0
    t0 = time.monotonic()
    complete = True
    for msgs in rd.batches():
        for m in msgs:
            n += 1
            e = decode(m.value() or b"", m.timestamp()[1], job, pseudo)
            if isinstance(e, str):
                continue
            if not r.sadd(seen_key, e.event_id):
                continue
            label = minute_label(e.ts // MINUTE)
            for scope in (f"{e.campaign}|{e.channel}", "all"):
                key = f"{prefix}:m:{scope}:{label}"
                r.hincrby(key, "events", 1)
                if e.event_type == "page_view":
                    r.hincrby(key, "views", 1)
                elif e.event_type == "add_to_cart":
                    r.hincrby(key, "carts", 1)
                elif e.event_type == "purchase":
                    r.hincrby(key, "purchases", 1)
                    r.hincrby(key, "revenue_cents", int(e.amount * 100))
                pkey = f"{prefix}:ps:{scope}:{label}"
                if r.sadd(pkey, e.person):
                    r.hset(key, "persons", r.scard(pkey))
                    r.expire(key, ttl)
        if budget_s is not None and time.monotonic() - t0 > budget_s:
            complete = False
            break
    rd.close()
    return {"records": n, "complete": complete}


class MinuteCounters:
    """The live minute counters of docs/semantics.md in dicts: (scope, minute) → views, carts, purchases,
    events, revenue and the set of persons; :meth:`write` puts the absolute values of the keys touched
    since the last write into a Redis pipeline (``HSET`` + ``EXPIRE``)."""

    def __init__(self, prefix: str, ttl_s: int) -> None:
        self.prefix, self.ttl = prefix, ttl_s
        # (scope, minute) -> [views, carts, purchases, events, revenue, persons set]
        self.counters: dict[tuple[str, int], list[Any]] = {}
        self.dirty: set[tuple[str, int]] = set()
        self._labels: dict[int, str] = {}

    def add(self, e: Any) -> None:
        """Count one unique valid event."""
        minute = e.ts // MINUTE
        et = e.event_type
        counters, dirty = self.counters, self.dirty
        for k in ((f"{e.campaign}|{e.channel}", minute), ("all", minute)):
            c = counters.get(k)
            if c is None:
                c = counters[k] = [0, 0, 0, 0, ZERO, set()]
            c[3] += 1
            if et == "page_view":
                c[0] += 1
            elif et == "add_to_cart":
                c[1] += 1
            elif et == "purchase":
                c[2] += 1
                c[4] += e.amount
            c[5].add(e.person)
            dirty.add(k)

    def write(self, pipe: Any) -> None:
        labels = self._labels
        for scope, minute in self.dirty:
            c = self.counters[(scope, minute)]
            label = labels.get(minute) or labels.setdefault(minute, minute_label(minute))
            key = f"{self.prefix}:m:{scope}:{label}"
            pipe.hset(key, mapping={
                "views": c[0], "carts": c[1], "purchases": c[2], "events": c[3],
                "revenue": str(c[4].quantize(Decimal("0.01"))), "persons": len(c[5]),
            })
            pipe.expire(key, self.ttl)
        self.dirty.clear()


def run_tuned(settings: Settings, topics: list[str], group: str, prefix: str, **_: Any) -> dict[str, Any]:
    """A competent team's consumer without fault tolerance."""
    job, pseudo = settings.job, _Pseudonyms(settings.pii)
    r = _redis(settings)
    seen: set[str] = set()
    counters = MinuteCounters(prefix, settings.redis.minute_counter_ttl_s)
    rd = _Reader(settings, topics, group)
    n = 0
    for msgs in rd.batches():
        for m in msgs:
            e = fast_decode(m.value() or b"", m.timestamp()[1], job, pseudo)
            if type(e) is str:
                continue
            if e.event_id in seen:
                continue
            seen.add(e.event_id)
            counters.add(e)
        n += len(msgs)
        if counters.dirty:
            pipe = r.pipeline(transaction=False)
            counters.write(pipe)
            pipe.execute()
    rd.close()
    return {"records": n, "complete": True}
