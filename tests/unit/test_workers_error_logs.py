"""A worker's consumer errors during an outage are logged rate-limited: the first of a kind at once, then one
summary line per interval with the count of those not written (exact counts), through the pure
``LogThrottle`` and through ``KafkaWorkerIO.poll`` with a consumer that reports an error every poll.

Negative control: the same stream of errors without the throttle is one line each.
"""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError

from connectors.channels import kafka_io
from connectors.channels.kafka_io import KafkaWorkerIO
from connectors.log_throttle import LogLine, LogThrottle


def test_first_at_once_then_one_summary_per_interval_with_the_exact_count() -> None:
    t = LogThrottle(60.0)
    out: list[LogLine] = []
    for s in range(0, 150):  # one "all brokers down" per second for 150 s
        out += t.note("_ALL_BROKERS_DOWN", f"down #{s}", float(s))
    out += t.due(150.0)
    assert out == [
        LogLine("_ALL_BROKERS_DOWN", "down #0"),  # t=0, at once
        LogLine("_ALL_BROKERS_DOWN", "down #59", 59, 60.0),  # noted at t=60: 1..59
        LogLine("_ALL_BROKERS_DOWN", "down #119", 60, 60.0),  # t=120: 60..119
    ]
    # 120..149 are still counted in the open interval; its summary is due at 180
    assert t.due(179.9) == []
    assert t.due(180.0) == [LogLine("_ALL_BROKERS_DOWN", "down #149", 30, 60.0)]
    assert t.due(240.0) == []  # a quiet interval: the kind is forgotten ...
    assert t.note("_ALL_BROKERS_DOWN", "again", 300.0) == [LogLine("_ALL_BROKERS_DOWN", "again")]  # ... at once


def test_kinds_are_counted_apart() -> None:
    t = LogThrottle(10.0)
    lines = [*t.note("A", "a0", 0.0), *t.note("B", "b0", 1.0), *t.note("A", "a1", 2.0), *t.note("A", "a2", 3.0)]
    assert lines == [LogLine("A", "a0"), LogLine("B", "b0")]
    assert t.due(10.0) == [LogLine("A", "a2", 2, 10.0)]  # B had nothing more: no line, forgotten
    assert t.due(11.0) == []
    assert t.note("B", "b1", 11.0) == [LogLine("B", "b1")]


def test_a_bad_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="interval_s must be positive"):
        LogThrottle(0)


# ---- through the worker's consumer -----------------------------------------------------------------------
class ErrorMessage:
    def __init__(self, code: int, text: str) -> None:
        self._err = KafkaError(code, text)

    def error(self) -> KafkaError:
        return self._err


class BrokenConsumer:
    """``consume`` returns one transport error and one all-brokers-down error per call."""

    def consume(self, num_messages: int, timeout: float) -> list[ErrorMessage]:
        return [ErrorMessage(KafkaError._TRANSPORT, "Broker transport failure"),
                ErrorMessage(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down")]


class Unthrottled:
    """What the worker did before: every error a line."""

    def note(self, kind: str, text: str, now: float) -> list[LogLine]:
        return [LogLine(kind, text)]

    def due(self, now: float) -> list[LogLine]:
        return []


def _polls(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, seconds: int,
           throttle: bool = True) -> list[str]:
    now = [0.0]
    monkeypatch.setattr(kafka_io.time, "monotonic", lambda: now[0])
    io = object.__new__(KafkaWorkerIO)
    io.topic, io.consumer, io.assigned, io.errors = "zt.actions.sms", BrokenConsumer(), set(), kafka_io.LogThrottle(60.0)
    if not throttle:
        io.errors = Unthrottled()  # type: ignore[assignment]
    with caplog.at_level(logging.WARNING, logger=kafka_io.__name__):
        for s in range(seconds * 5):  # five polls a second
            now[0] = s / 5
            assert io.poll(10, 0.2) == []
    return [r.getMessage() for r in caplog.records if r.name == kafka_io.__name__]


def test_poll_logs_each_kind_once_then_a_summary_a_minute(caplog, monkeypatch) -> None:
    lines = _polls(caplog, monkeypatch, seconds=130)  # 650 polls, 1300 errors
    assert lines == [
        "worker: consumer error on zt.actions.sms: KafkaError{code=_TRANSPORT,val=-195,str=\"Broker transport "
        "failure\"} (the consumer reconnects by itself; more of this kind are counted and logged once per 60 s)",
        "worker: consumer error on zt.actions.sms: KafkaError{code=_ALL_BROKERS_DOWN,val=-187,str=\"1/1 brokers are "
        "down\"} (the consumer reconnects by itself; more of this kind are counted and logged once per 60 s)",
        # polls at 0.2 .. 59.8 s: 299 each; the summaries are written by the first poll at 60 s
        "worker: 299 more consumer errors _TRANSPORT on zt.actions.sms in the last 60 s (the last: "
        "KafkaError{code=_TRANSPORT,val=-195,str=\"Broker transport failure\"}); the consumer reconnects by itself",
        "worker: 299 more consumer errors _ALL_BROKERS_DOWN on zt.actions.sms in the last 60 s (the last: "
        "KafkaError{code=_ALL_BROKERS_DOWN,val=-187,str=\"1/1 brokers are down\"}); the consumer reconnects by "
        "itself",
        # 60.0 .. 119.8 s: 300 each (the poll at 60 s noted its own errors after the summaries)
        "worker: 300 more consumer errors _TRANSPORT on zt.actions.sms in the last 60 s (the last: "
        "KafkaError{code=_TRANSPORT,val=-195,str=\"Broker transport failure\"}); the consumer reconnects by itself",
        "worker: 300 more consumer errors _ALL_BROKERS_DOWN on zt.actions.sms in the last 60 s (the last: "
        "KafkaError{code=_ALL_BROKERS_DOWN,val=-187,str=\"1/1 brokers are down\"}); the consumer reconnects by "
        "itself",
    ]


def test_negative_control_without_the_throttle_every_error_is_a_line(caplog, monkeypatch) -> None:
    assert len(_polls(caplog, monkeypatch, seconds=10, throttle=False)) == 10 * 5 * 2  # 50 polls, 2 errors each
