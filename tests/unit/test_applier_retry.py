"""The store applier retries a batch on a lost Redis / HBase connection (a unit test of the retry logic).

A store that fails with a connection error is reconnected and the SAME rows are written again (the
writes are idempotent; offsets are committed only after the batch is written); a store that fails with
anything else is not retried; a store that stays down ends in an ApplierError that names it.
"""

from __future__ import annotations

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
