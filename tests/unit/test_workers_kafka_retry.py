"""A worker's commit waits for a broker that is away (a unit test with a fake transactional producer; the real
broker restart is tests/integration/test_service_faults.py).

Before, the first failure of ``send_offsets_to_transaction`` / ``commit_transaction`` stopped the worker. Now a
retriable failure repeats the step that failed and an abortable one aborts and sends the whole transaction
again: read_committed readers see the receipts and the offsets once, in one committed transaction.
"""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from connectors.channels import kafka_io
from connectors.channels.kafka_io import KafkaWorkerIO, OutRecord


def _retriable(what: str) -> KafkaException:
    return KafkaException(KafkaError(KafkaError._TIMED_OUT, f"{what}: Broker: 1/1 brokers are down", retriable=True))


def _abortable(what: str) -> KafkaException:
    return KafkaException(KafkaError(KafkaError._STATE, f"{what}: Failed to add partitions to transaction",
                                     txn_requires_abort=True))


class FakeProducer:
    """Records the transactions a read_committed reader would see; ``faults[step]`` lists errors to raise first."""

    def __init__(self, faults: dict[str, list[KafkaException]]) -> None:
        self.faults, self.open, self.committed, self.aborted, self.calls = faults, None, [], 0, []

    def _step(self, name: str) -> None:
        self.calls.append(name)
        if self.faults.get(name):
            raise self.faults[name].pop(0)

    def begin_transaction(self) -> None:
        self._step("begin")
        assert self.open is None, "a transaction is already open"
        self.open = {"outputs": [], "offsets": None}

    def produce(self, topic, value, key, headers) -> None:
        self.open["outputs"].append(value)

    def send_offsets_to_transaction(self, offsets, metadata, timeout) -> None:
        self._step("offsets")
        self.open["offsets"] = [(tp.topic, tp.partition, tp.offset) for tp in offsets]

    def commit_transaction(self, timeout) -> None:
        self._step("commit")
        self.committed.append(self.open)
        self.open = None

    def abort_transaction(self, timeout) -> None:
        self._step("abort")
        self.aborted += 1
        self.open = None


class FakeConsumer:
    def consumer_group_metadata(self) -> str:
        return "group-metadata"


def _io(producer: FakeProducer) -> KafkaWorkerIO:
    io = object.__new__(KafkaWorkerIO)
    io.producer, io.consumer, io.watch = producer, FakeConsumer(), None
    return io


@pytest.fixture(autouse=True)
def _no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka_io.time, "sleep", lambda s: None)


OUT = [OutRecord("zt.delivery", b"p1", b"receipt-1"), OutRecord("zt.delivery", b"p2", b"receipt-2")]
OFFSETS = {("zt.actions.sms", 0): 8}
ONCE = [{"outputs": [b"receipt-1", b"receipt-2"], "offsets": [("zt.actions.sms", 0, 8)]}]


def test_retriable_failures_repeat_the_step_that_failed() -> None:
    p = FakeProducer({"offsets": [_retriable("offsets")] * 2, "commit": [_retriable("commit")]})
    _io(p).commit(OUT, OFFSETS)
    assert p.committed == ONCE and p.aborted == 0
    assert p.calls == ["begin", "offsets", "offsets", "offsets", "commit", "commit"]


def test_an_abortable_failure_sends_the_whole_transaction_again() -> None:
    p = FakeProducer({"commit": [_abortable("commit")], "abort": [_retriable("abort")]})
    _io(p).commit(OUT, OFFSETS)
    assert p.committed == ONCE and p.aborted == 1  # the aborted one is invisible: the receipts appear once
    assert p.calls == ["begin", "offsets", "commit", "abort", "abort", "begin", "offsets", "commit"]


def test_a_broker_away_for_good_stops_the_worker_with_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka_io, "COMMIT_FOR_S", -1.0)
    p = FakeProducer({"offsets": [_abortable("offsets")]})
    with pytest.raises(RuntimeError, match="the worker stops, and a restart re-reads from the last committed"):
        _io(p).commit(OUT, OFFSETS)
    assert p.committed == [] and p.aborted == 1  # nothing half-done left open


def test_a_fatal_error_is_not_retried() -> None:
    fenced = KafkaException(KafkaError(KafkaError._FENCED, "producer fenced", fatal=True))
    p = FakeProducer({"commit": [fenced]})
    with pytest.raises(RuntimeError, match="producer fenced"):
        _io(p).commit(OUT, OFFSETS)
    assert p.calls == ["begin", "offsets", "commit"]
