"""The worker's commit watchdog and its supervisor, without Kafka (the real broker restart that makes librdkafka
hang is tests/integration/test_service_faults.py).

* ``CommitWatchdog.overdue`` on a fake clock: exact boundaries, a relabelled step, a settled attempt.
* A ``ChannelWorker`` whose commit blocks: the watchdog fires once, logs the line, counts it. Negative controls:
  a fast commit never fires it, and with ``commit_watchdog_ms: 0`` the blocked commit is still blocked after a
  bounded wait (the hang the watchdog exists for).
* ``KafkaWorkerIO`` tells the watchdog the call it is in: a producer stuck in ``send_offsets_to_transaction`` is
  reported as such.
* The real exit path in a subprocess: exit code 75 and the log line on stderr.
* ``zhongtai worker --supervise``'s policy (exact delays) and its fork loop (restarts a child that exits 75).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from config.settings import ConfigError, load_settings
from connectors.channels.kafka_io import KafkaWorkerIO, OutRecord
from operators.delivery.ledger import MemoryLedger
from operators.delivery.ratelimit import Unlimited
from tests.helpers import ROOT, make_settings
from tests.workers_fakes import TOPICS, DictDirectory, FakeClock, FakeKafka, ScriptedAdapter, action, encode
from zhongtai.services.workers.metrics import WorkerMetrics
from zhongtai.services.workers.supervise import RestartPolicy, exit_code, supervise
from zhongtai.services.workers.watchdog import EXIT_COMMIT_HUNG, CommitWatchdog, Hang
from zhongtai.services.workers.worker import ChannelWorker


class Ticker:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


# ---- the decision ----------------------------------------------------------------------------------------
def test_overdue_exactly_past_the_limit_and_only_while_an_attempt_runs() -> None:
    clock = Ticker()
    w = CommitWatchdog(10.0, clock)
    assert w.overdue() is None  # nothing in progress
    w.attempt("3 receipts", "begin_transaction")
    clock.t = 110.0
    assert w.overdue() is None  # at the limit: not past it
    w.step("send_offsets_to_transaction")
    clock.t = 110.5
    assert w.overdue() == Hang("3 receipts", "send_offsets_to_transaction", 10.5)
    w.settled()
    assert w.overdue() is None
    w.attempt("1 receipt", "abort_transaction")  # a new attempt (at 110.5): its own clock
    clock.t = 120.0
    assert w.overdue() is None
    clock.t = 120.75
    assert w.overdue() == Hang("1 receipt", "abort_transaction", 10.25)


@pytest.mark.parametrize("limit", [None, 0, 0.0])
def test_no_limit_means_no_watchdog(limit: float | None) -> None:
    clock = Ticker()
    w = CommitWatchdog(limit, clock)
    w.watch(lambda h: None)
    w.attempt("x")
    clock.t += 1e9
    assert w.overdue() is None and w._thread is None  # no thread is even started


def test_the_setting_must_outlast_the_transaction_and_says_what_to_do() -> None:
    assert load_settings(env={}).worker.commit_watchdog_ms == 90_000  # 60 s transaction + 30 s
    assert make_settings(worker={"commit_watchdog_ms": 0}).worker.commit_watchdog_ms == 0  # off
    with pytest.raises(ConfigError) as e:
        make_settings(worker={"transaction_timeout_ms": 60_000, "commit_watchdog_ms": 60_000})
    msg = str(e.value)
    assert "worker.commit_watchdog_ms (60000) must exceed worker.transaction_timeout_ms (60000)" in msg
    assert "or be 0 to switch the watchdog off" in msg and "e.g. to 90000" in msg


# ---- through a worker --------------------------------------------------------------------------------
class BlockingKafka(FakeKafka):
    """A FakeKafka whose commit blocks until ``release`` is set (librdkafka stuck in a transaction call)."""

    def __init__(self, block: bool) -> None:
        super().__init__(partitions=1)
        self.block, self.release, self.entered = block, threading.Event(), threading.Event()

    def io(self, clock: FakeClock | None = None):  # type: ignore[no-untyped-def]
        io = super().io(clock)
        plain = io.commit

        def commit(outputs, offsets):  # type: ignore[no-untyped-def]
            self.entered.set()
            if self.block:
                self.release.wait(30)
            plain(outputs, offsets)

        io.commit = commit  # type: ignore[method-assign]
        return io


def _worker(kafka: BlockingKafka, watchdog_ms: int, hangs: list[Hang]) -> ChannelWorker:
    from connectors.channels.base import Contact

    cfg = make_settings(worker={"transaction_timeout_ms": 1_000, "commit_watchdog_ms": watchdog_ms}).worker
    clock = FakeClock()
    directory = DictDirectory({"p1": Contact("p1", webhook_url="http://a/hook")})
    return ChannelWorker("webhook", cfg, TOPICS, io=kafka.io(clock), ledger=MemoryLedger(), limiter=Unlimited(),
                         adapter=ScriptedAdapter(clock=clock), directory=directory, metrics=WorkerMetrics("webhook"),
                         clock=clock, sleep=clock.sleep, watchdog=CommitWatchdog(watchdog_ms / 1000),
                         on_hang=hangs.append)


def _commit_in_thread(kafka: BlockingKafka, worker: ChannelWorker) -> threading.Thread:
    kafka.append(encode(action(1, person="p1")))
    t = threading.Thread(target=lambda: worker.run(max_messages=1), daemon=True)
    t.start()
    assert kafka.entered.wait(10), "the worker never reached its commit"
    return t


def _hangs_counted(worker: ChannelWorker) -> float:
    return worker.metrics.registry.get_sample_value(
        "zhongtai_worker_commit_hangs_total", {"channel": "webhook", "outcome": "commit"}) or 0.0


def test_a_stuck_commit_fires_the_watchdog_once_with_a_clear_line(caplog: pytest.LogCaptureFixture) -> None:
    kafka, hangs = BlockingKafka(block=True), []
    worker = _worker(kafka, 1_200, hangs)
    t0 = time.monotonic()
    t = _commit_in_thread(kafka, worker)
    try:
        deadline = time.monotonic() + 10
        while not hangs and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(hangs) == 1, hangs
        assert 1.2 < time.monotonic() - t0 < 5.0
        h = hangs[0]
        assert (h.what, h.step) == ("1 receipts/dead letters and the offsets of 1 partition", "commit")
        assert 1.2 < h.elapsed_s < 2.5
        assert _hangs_counted(worker) == 1.0
        line = next(r for r in caplog.records if r.levelname == "CRITICAL").getMessage()
        for part in ("worker webhook: a Kafka commit (1 receipts/dead letters", "has been stuck in commit for 1.",
                     "worker.commit_watchdog_ms (1200", "exits with code 75 so that its supervisor restarts it",
                     "Nothing is lost: the transaction is aborted by the broker"):
            assert part in line, (part, line)
        time.sleep(0.5)
        assert len(hangs) == 1  # once: the thread ended
    finally:
        kafka.release.set()
        t.join(10)
        worker.close()
    assert not t.is_alive() and kafka.committed == {(TOPICS.actions, 0): 1}


def test_negative_control_a_fast_commit_never_fires_it() -> None:
    kafka, hangs = BlockingKafka(block=False), []
    worker = _worker(kafka, 1_200, hangs)
    t = _commit_in_thread(kafka, worker)
    t.join(10)
    time.sleep(1.6)  # past the limit, with the commit settled
    worker.close()
    assert hangs == [] and _hangs_counted(worker) == 0.0 and worker.stats.commits == 1


def test_negative_control_without_the_watchdog_a_stuck_commit_stays_stuck() -> None:
    kafka, hangs = BlockingKafka(block=True), []
    worker = _worker(kafka, 0, hangs)
    t = _commit_in_thread(kafka, worker)
    try:
        t.join(2.5)  # a bounded wait, twice the limit of the test above
        assert t.is_alive() and hangs == [] and worker.watchdog._thread is None  # hung, and nobody notices
    finally:
        kafka.release.set()
        t.join(10)
        worker.close()


# ---- the real IO names the call it is stuck in -----------------------------------------------------------
class StuckProducer:
    def __init__(self) -> None:
        self.release = threading.Event()

    def begin_transaction(self) -> None:
        pass

    def produce(self, topic, value, key, headers) -> None:  # type: ignore[no-untyped-def]
        pass

    def send_offsets_to_transaction(self, offsets, metadata, timeout) -> None:  # type: ignore[no-untyped-def]
        self.release.wait(30)  # past its own timeout: confluentinc/librdkafka#5456

    def commit_transaction(self, timeout) -> None:  # type: ignore[no-untyped-def]
        pass


class GroupMetadata:
    def consumer_group_metadata(self) -> str:
        return "group-metadata"


def test_the_kafka_io_reports_the_librdkafka_call_that_is_stuck() -> None:
    watchdog, hangs = CommitWatchdog(0.3), []
    watchdog.watch(hangs.append, poll_s=0.02)
    io, producer = object.__new__(KafkaWorkerIO), StuckProducer()
    io.producer, io.consumer, io.watch = producer, GroupMetadata(), watchdog  # type: ignore[assignment]
    t = threading.Thread(target=io.commit, args=([OutRecord("d", b"k", b"v")] * 2, {("a", 0): 5, ("a", 1): 7}),
                         daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 5
        while not hangs and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [(h.what, h.step) for h in hangs] == [
            ("2 receipts/dead letters and the offsets of 2 partitions", "send_offsets_to_transaction")]
    finally:
        producer.release.set()
        t.join(5)
        watchdog.stop()
    assert watchdog.overdue() is None  # settled once the call returned


# ---- the real exit ---------------------------------------------------------------------------------------
EXITING_WORKER = """
import logging, threading
from tests.unit.test_workers_watchdog import BlockingKafka, _worker, _commit_in_thread
from zhongtai.services.workers.watchdog import exit_process
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
kafka = BlockingKafka(block=True)
worker = _worker(kafka, 1_100, [])
worker.on_hang = exit_process
_commit_in_thread(kafka, worker).join(60)
print("not reached")
"""


def test_the_worker_process_exits_with_code_75_and_says_why() -> None:
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-c", EXITING_WORKER], cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert p.returncode == EXIT_COMMIT_HUNG == 75, p.stderr[-2000:]
    assert time.monotonic() - t0 < 30
    assert "not reached" not in p.stdout
    assert "CRITICAL zhongtai.services.workers.worker: worker webhook: a Kafka commit" in p.stderr, p.stderr[-2000:]
    assert "exits with code 75 so that its supervisor restarts it" in p.stderr


# ---- the supervisor --------------------------------------------------------------------------------------
def test_restart_policy_exact_delays() -> None:
    p = RestartPolicy(first_delay_s=1.0, max_delay_s=5.0, stable_s=60.0)
    assert [p.next_delay(75, 2.0) for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]  # failing fast: doubles
    assert p.next_delay(1, 61.0) == 1.0  # after a child that ran a while: from the start again
    assert p.next_delay(137, 0.1) == 2.0  # killed by a signal (128 + 9): restarted too
    assert (p.next_delay(0, 1.0), p.next_delay(2, 1.0)) == (None, None)  # done / bad configuration


def test_exit_code_of_a_signal_is_128_plus_it() -> None:
    assert exit_code(75 << 8) == 75 and exit_code(9) == 137


def test_supervise_restarts_a_child_that_exits_75_until_one_exits_0(tmp_path: Path) -> None:
    runs = tmp_path / "runs"

    def child() -> int:
        with runs.open("a") as f:
            f.write("x")
        return 0 if len(runs.read_text()) == 3 else EXIT_COMMIT_HUNG

    code = supervise(child, "test worker", RestartPolicy(first_delay_s=0.01, max_delay_s=0.02))
    assert (code, runs.read_text()) == (0, "xxx")


def test_negative_control_supervise_does_not_restart_a_configuration_error(tmp_path: Path) -> None:
    runs = tmp_path / "runs"

    def child() -> int:
        with runs.open("a") as f:
            f.write("x")
        return 2

    assert supervise(child, "test worker", RestartPolicy(first_delay_s=0.01)) == 2 and runs.read_text() == "x"
