"""The store applier retries a batch on a lost Redis / HBase connection (a unit test of the retry logic).

A store that fails with a connection error is reconnected and the SAME rows are written again (the
writes are idempotent; offsets are committed only after the batch is written); a store that fails with
anything else is not retried; a store that stays down ends in an ApplierError that names it.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
import redis

from config import load_settings
from zhongtai.services import applier as ap


class Flaky:
    """A store whose first ``fail`` writes raise ``error``."""

    instances: list = []

    def __init__(self, fail: int, error: BaseException) -> None:
        self.fail, self.error, self.written = fail, error, []
        Flaky.instances.append(self)

    def write(self, rows):
        if self.fail > 0:
            self.fail -= 1
            raise self.error
        self.written.append(list(rows))

    def close(self) -> None:
        pass


def _applier(monkeypatch, first: Flaky) -> ap.StoreApplier:
    a = ap.StoreApplier(load_settings(), hbase=False)
    a._redis = first
    replacement = Flaky(0, RuntimeError("unused"))
    monkeypatch.setattr(ap.StoreApplier, "_reconnect", lambda self, store: setattr(self, "_redis", replacement))
    monkeypatch.setattr(ap.time, "sleep", lambda s: None)
    return a


def test_a_lost_connection_is_retried_with_the_same_rows(monkeypatch) -> None:
    a = _applier(monkeypatch, Flaky(2, redis.ConnectionError("Connection reset by peer")))
    a._write(["r1", "r2"])
    assert a.stats.retries == 1  # the first client failed, the fresh one wrote
    assert Flaky.instances[-1].written == [["r1", "r2"]]


def test_a_broken_pipe_is_retried(monkeypatch) -> None:
    a = _applier(monkeypatch, Flaky(1, BrokenPipeError(32, "Broken pipe")))
    a._write(["r1"])
    assert a.stats.retries == 1 and Flaky.instances[-1].written == [["r1"]]


def test_a_bug_is_not_retried(monkeypatch) -> None:
    # negative control: a bad row is not a connection problem; retrying would loop on it
    a = _applier(monkeypatch, Flaky(1, ValueError("bad row")))
    with pytest.raises(ap.ApplierError, match="writing a batch of 1 rows to Redis 127.0.0.1:6390 failed"):
        a._write(["r1"])
    assert a.stats.retries == 0


def test_a_store_that_stays_down_ends_in_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(ap, "RETRY_FOR_S", -1.0)
    a = _applier(monkeypatch, Flaky(99, redis.ConnectionError("refused")))
    with pytest.raises(ap.ApplierError, match="the rows stay in the store log"):
        a._write(["r1"])


def test_a_store_still_down_when_reconnecting_is_retried(monkeypatch) -> None:
    """A Thrift server is down for a few seconds: making the fresh client (happybase connects at once) fails
    too. Before, that error escaped the retry loop and the applier died on the first reconnect."""
    from thriftpy2.transport import TTransportException

    a = ap.StoreApplier(load_settings(), hbase=False)
    a._redis = Flaky(1, TTransportException(message="Could not connect to ('127.0.0.1', 9090)"))
    fresh = Flaky(0, RuntimeError("unused"))
    refused = [TTransportException(message="Could not connect to ('127.0.0.1', 9090)")] * 2

    def reconnect(self, store):
        if refused:
            raise refused.pop()
        self._redis = fresh

    monkeypatch.setattr(ap.StoreApplier, "_reconnect", reconnect)
    monkeypatch.setattr(ap.time, "sleep", lambda s: None)
    a._write(["r1"])
    assert a.stats.retries == 3 and fresh.written == [["r1"]]


class _Msg:
    def __init__(self, err=None, value=None) -> None:
        self._err, self._value = err, value

    def error(self):
        return self._err

    def value(self):
        return self._value

    def offset(self):
        return 7


class _Consumer:
    """A consumer whose broker is away: its polls answer librdkafka's transport errors, its commit fails."""

    def __init__(self, msgs) -> None:
        self.msgs, self.commits = msgs, 0

    def consume(self, n, timeout):
        out, self.msgs = self.msgs, []
        return out

    def commit(self, asynchronous):
        from confluent_kafka import KafkaError, KafkaException

        self.commits += 1
        raise KafkaException(KafkaError(KafkaError._TRANSPORT, "Broker transport failure"))


def _reader(msgs):
    from connectors.store_log import StoreLogReader

    r = object.__new__(StoreLogReader)
    r.topic, r._consumer, r._pending, r._warned = "zt.store.g", _Consumer(msgs), False, {}
    return r


def test_a_broker_away_is_waited_for_by_the_store_log_reader() -> None:
    """Before, the first "all brokers down" of a restarting broker ended the applier (StoreLogError)."""
    from confluent_kafka import KafkaError

    from connectors.redis_store import StoreRow
    from connectors.store_log import encode_row

    row = StoreRow("s", "valid", 0, 3, 0, 0, 0, 0, Decimal(0), 0, 0, 0)
    r = _reader([_Msg(KafkaError(KafkaError._TRANSPORT, "Connection refused")),
                 _Msg(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down")), _Msg(value=encode_row(row))])
    assert r.read(10, 0.1) == [row]
    r.commit()  # fails on the broker away: stays pending for the next commit
    assert r._pending and r._consumer.commits == 1


def test_a_real_error_of_the_store_log_is_raised() -> None:
    from confluent_kafka import KafkaError

    from connectors.store_log import StoreLogError

    r = _reader([_Msg(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "denied"))])
    with pytest.raises(StoreLogError, match="store log zt.store.g"):
        r.read(10, 0.1)


def test_the_store_log_reader_waits_for_a_group_coordinator_still_loading() -> None:
    """A broker that has just (re)started answers NOT_COORDINATOR while it loads the offsets topic: before, the
    applier that opened its reader at that moment died (the event job on a fresh private broker showed it)."""
    from confluent_kafka import KafkaError, KafkaException, TopicPartition

    class Loading(_Consumer):
        def committed(self, tps, timeout):
            self.commits += 1
            if self.commits < 3:
                raise KafkaException(KafkaError(KafkaError.NOT_COORDINATOR, "Broker: Not coordinator"))
            return [TopicPartition(tp.topic, tp.partition, 42) for tp in tps]

    r = _reader([])
    r._consumer = Loading([])
    assert [tp.offset for tp in r._committed([TopicPartition("zt.store.g", 0)], 5.0)] == [42]
