"""The store log and its applier (``job.store_mode: log``) against the real Kafka, Redis and HBase.

The property that makes the job exact through failures: rows in an aborted transaction (a run that
failed before its checkpoint completed) never reach Redis or HBase, committed rows reach them in the
job's order per key, and applying again from any committed offset ends in the same state.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest

from connectors.hbase_store import HBaseStore
from connectors.kafka_admin import create_topics
from connectors.redis_store import RedisStore, StoreRow
from connectors.store_log import decode_row, encode_row, store_log_topic
from tests.helpers import make_settings
from zhongtai.services.applier import ApplierError, StoreApplier


def _row(kind: str, key: str, bucket: int = 0, n1: int = 0, n2: int = 0, n3: int = 0, n4: int = 0,
         amount: str = "0", t1: int = 0, t2: int = 0, t3: int = 0, s1: str | None = None) -> StoreRow:
    return StoreRow(kind, key, bucket, n1, n2, n3, n4, 0, Decimal(amount), t1, t2, t3, s1)


def test_codec_round_trip_keeps_every_field() -> None:
    rows = [
        _row("p", "P1", 29_000_000, 3, 1, 1, 5, "12.50", 1_740_000_000_000, 1_740_000_030_000, 1_740_000_010_000),
        _row("i", "user_id:u1", s1="P1"),
        _row("ax", "a|1", n1=1, s1='{"x": "é|,\\"q\\""}'),
        _row("s", "valid", n1=42),
    ]
    assert [decode_row(encode_row(r)) for r in rows] == rows
    # what Flink's JSON format writes: null fields left out, money as a decimal string
    assert decode_row(b'{"k":"c1","kind":"c","bucket":7,"n1":1,"n2":0,"n3":0,"n4":1,"n5":1,"amount":"9.90",'
                      b'"t1":0,"t2":0,"t3":0}') == StoreRow("c", "c1", 7, 1, 0, 0, 1, 1, Decimal("9.90"), 0, 0, 0, None)


def _send(producer, topic: str, rows: list[StoreRow]) -> None:
    for r in rows:
        producer.produce(topic, key=r.key.encode(), value=encode_row(r))
    producer.flush(30)


def _fresh_log(name: str, settings: Any = None) -> tuple[Any, str, str, str, str, Any]:
    """Settings (``make_settings()`` unless given), tag, consumer group, Redis prefix, store-log topic and a
    transactional producer on it."""
    from confluent_kafka import Producer

    settings = settings or make_settings()
    tag = uuid.uuid4().hex[:8]
    group, prefix = f"zt-test-{name}-{tag}", f"zt:test:{name}:{tag}"
    topic = store_log_topic(settings, group)
    create_topics(settings, [topic])
    p = Producer({"bootstrap.servers": settings.kafka.bootstrap, "transactional.id": f"zt-test-{name}-{tag}"})
    p.init_transactions(30)
    return settings, tag, group, prefix, topic, p


@pytest.mark.stack
def test_applier_writes_committed_rows_only_in_order_and_idempotently() -> None:
    settings, tag, group, prefix, topic, p = _fresh_log("log")
    minute = 29_000_000
    # checkpoint 1 committed: a person bucket, an identifier, a counter, a total
    p.begin_transaction()
    _send(p, topic, [
        _row("p", "P1", minute, 1, 0, 0, 1, "0", 60 * minute * 1000, 60 * minute * 1000),
        _row("i", "device_id:d1", s1="P1"),
        _row("s", "valid", n1=1),
    ])
    p.commit_transaction(30)
    # a run that failed before its checkpoint: a transient person and a newer (wrong) value
    p.begin_transaction()
    _send(p, topic, [
        _row("p", "GHOST", minute, 9, 9, 9, 9, "99.00", 60 * minute * 1000, 60 * minute * 1000),
        _row("i", "device_id:d1", s1="GHOST"),
        _row("s", "valid", n1=999),
    ])
    p.abort_transaction(30)
    # the restored run's checkpoint 2: the same key updated twice, in order
    p.begin_transaction()
    _send(p, topic, [
        _row("p", "P1", minute, 2, 1, 0, 3, "0", 60 * minute * 1000, 60 * minute * 1000 + 5),
        _row("s", "valid", n1=2),
        _row("s", "valid", n1=3),
    ])
    p.commit_transaction(30)
    # a transaction left open (a job still running): drain stops at the last stable offset before it
    p.begin_transaction()
    _send(p, topic, [_row("s", "valid", n1=777)])

    store = RedisStore(settings.redis, prefix=prefix)
    try:
        applier = StoreApplier(settings, group=group, redis_prefix=prefix, hbase_prefix=f"zt_test_log_{tag}")
        try:
            assert applier.drain(timeout_s=60) == 6
        finally:
            applier.close()
        state = (store.persons(), store.person_of("device_id:d1"), store.stats(), store.profile("P1"))
        assert state[:3] == (["P1"], "P1", {"valid": 3, "dlq": 0, "received": 3, "duplicates": 3})
        assert (state[3]["views_1h"], state[3]["carts_7d"]) == (2, 1)
        hb = HBaseStore(settings.hbase, prefix=f"zt_test_log_{tag}")
        try:
            assert (hb.profile_buckets("P1"), hb.profile_buckets("GHOST")) == (
                {f"m:{minute}": f"2,1,0,3,0,{60 * minute * 1000},{60 * minute * 1000 + 5},0"}, {})
        finally:
            hb.close()

        # nothing new committed: a second drain of the same group applies nothing
        again = StoreApplier(settings, group=group, redis_prefix=prefix, hbase=False)
        try:
            assert again.drain(timeout_s=30) == 0
        finally:
            again.close()

        # replaying the whole log (the applier's offsets lost) ends in the same state
        store.client.hset(store.stats_key, "valid", 0)
        fresh = StoreApplier(settings, group=group, redis_prefix=prefix, hbase=False, from_start=True)
        try:
            assert fresh.drain(timeout_s=60) == 6
        finally:
            fresh.close()
        assert (store.persons(), store.person_of("device_id:d1"), store.stats(), store.profile("P1")) == state

        # the open transaction commits: the next drain takes it
        p.commit_transaction(30)
        last = StoreApplier(settings, group=group, redis_prefix=prefix, hbase=False)
        try:
            assert last.drain(timeout_s=60) == 1
        finally:
            last.close()
        assert store.stats()["valid"] == 777
    finally:
        store.delete_prefix()
        store.close()


@pytest.mark.stack
def test_applier_names_the_missing_log() -> None:
    settings = make_settings()
    applier = StoreApplier(settings, group=f"zt-test-nolog-{uuid.uuid4().hex[:8]}")
    with pytest.raises(ApplierError, match=r"store log zt\.store\.zt-test-nolog-\w+ does not exist after 1 s: "
                                           r"is the job running with the same --group"):
        applier.open(wait_s=1)


@pytest.mark.stack
def test_zhongtai_apply_drain_and_metrics(capsys: pytest.CaptureFixture[str]) -> None:
    """``zhongtai apply --drain`` writes what is committed; the metrics count exactly those rows."""
    from prometheus_client import generate_latest

    from zhongtai.cli import main
    from zhongtai.services.applier import ApplierMetrics

    settings, _tag, group, prefix, topic, p = _fresh_log("apply")
    p.begin_transaction()
    _send(p, topic, [_row("s", "valid", n1=5), _row("s", "unique", n1=4), _row("ac", "r1|sms", n1=2)])
    p.commit_transaction(30)
    store = RedisStore(settings.redis, prefix=prefix)
    try:
        metrics = ApplierMetrics(topic)
        applier = StoreApplier(settings, group=group, redis_prefix=prefix, hbase=False, metrics=metrics)
        try:
            assert applier.drain(timeout_s=60) == 3
        finally:
            applier.close()
        text = generate_latest(metrics.registry).decode()
        assert f'zhongtai_applier_rows_total{{topic="{topic}"}} 3.0' in text
        assert f'zhongtai_applier_batches_total{{topic="{topic}"}} 1.0' in text
        assert (store.stats(), store.action_counters()) == (
            {"valid": 5, "unique": 4, "dlq": 0, "received": 5, "duplicates": 1}, {"r1|sms": 2})

        # the CLI resumes from the group's offsets: nothing new; --from-start applies all three again
        store.delete_prefix()
        argv = ["apply", "--group", group, "--redis-prefix", prefix, "--no-hbase", "--drain"]
        assert main(argv) == 0
        assert main([*argv, "--from-start"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out == [f"applied 0 rows from {topic}", f"applied 3 rows from {topic}"]
        assert store.action_counters() == {"r1|sms": 2}
    finally:
        store.delete_prefix()
        store.close()


@pytest.mark.stack
def test_zhongtai_apply_without_a_log_says_what_to_do(capsys: pytest.CaptureFixture[str]) -> None:
    from zhongtai.cli import main

    group = f"zt-test-nolog-{uuid.uuid4().hex[:8]}"
    assert main(["apply", "--group", group, "--drain", "--wait-topic", "0"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"zhongtai apply: store log zt.store.{group} does not exist after 0 s: is the job "
                           f"running with the same --group ({group})?")


@pytest.mark.stack
def test_applier_thread_stop_returns_while_the_loop_waits_for_rows() -> None:
    """A failed or cancelled run stops the applier thread: the loop ends, then the clients close.

    Closing the Kafka consumer from another thread while the loop is inside ``consume`` blocked for ever
    (a test teardown hung that way); ``stop`` joins the thread first."""
    import time

    from zhongtai.services.applier import ApplierThread

    settings, _tag, group, prefix, _topic, p = _fresh_log("stop")
    thread = ApplierThread(StoreApplier(settings, group=group, redis_prefix=prefix, hbase=False))
    time.sleep(2.0)  # the loop is now waiting for rows on the empty log
    assert thread.alive
    t0 = time.monotonic()
    thread.stop(timeout_s=30)
    assert not thread.alive
    assert time.monotonic() - t0 < 10
    assert thread.applier._reader is None  # closed after the join
