"""The workers' Redis steps survive a lost connection (unit tests with a fake redis-py client; the real
restart is tests/integration/test_service_faults.py).

redis-py reports a connection that dies while a key is WATCHed as a ``WatchError`` (not a ConnectionError),
and one that dies after the server ran ``EXEC`` leaves the caller without the answer of a write that
happened. The ledger's step retries the first with backoff (before: a worker crashed on the first command
after a Redis restart) and recognises the second (before: the retried claim found its own claim and
answered ``busy``; a retried finish found a terminal record and the receipt was lost).
"""

from __future__ import annotations

import pytest
import redis

from connectors.channels import redis_state
from connectors.channels.redis_state import RedisLedger
from operators.delivery import ledger
from operators.delivery.ledger import Outcome


class FakeServer:
    """Hashes, and a script of faults: ``refuse`` (connection refused at WATCH), ``drop`` (dies before EXEC
    runs), ``lost_reply`` (EXEC runs, the reply is lost)."""

    def __init__(self, faults: list[str]) -> None:
        self.data: dict[str, dict[str, str]] = {}
        self.faults = faults
        self.execs = 0


class FakePipeline:
    def __init__(self, server: FakeServer) -> None:
        self.server, self.queued, self.watching = server, [], False

    def __enter__(self) -> FakePipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def _fault(self, *kinds: str) -> str | None:
        if self.server.faults and self.server.faults[0] in kinds:
            return self.server.faults.pop(0)
        return None

    def watch(self, key: str) -> None:
        if self._fault("refuse"):
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")
        self.watching = True

    def hgetall(self, key: str) -> dict[str, str]:
        return dict(self.server.data.get(key, {}))

    def multi(self) -> None:
        pass

    def hset(self, key: str, mapping: dict[str, str]) -> None:
        self.queued.append((key, mapping))

    def expire(self, key: str, ttl: int) -> None:
        pass

    def execute(self) -> None:
        fault = self._fault("drop", "lost_reply")
        if fault == "lost_reply":
            self._apply()
        if fault:
            try:  # what redis-py does: the ConnectionError becomes the context of a WatchError
                raise redis.ConnectionError("Connection closed by server.")
            except redis.ConnectionError:
                raise redis.WatchError("A ConnectionError occurred on while watching one or more keys") from None
        self._apply()

    def _apply(self) -> None:
        self.server.execs += 1
        for key, mapping in self.queued:
            self.server.data.setdefault(key, {}).update(mapping)


class FakeClient:
    def __init__(self, server: FakeServer) -> None:
        self.server = server

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        return FakePipeline(self.server)


@pytest.fixture(autouse=True)
def _no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(redis_state.time, "sleep", slept.append)
    return slept


def _ledger(faults: list[str], retries: list[BaseException] | None = None) -> tuple[RedisLedger, FakeServer]:
    server = FakeServer(faults)
    return RedisLedger(FakeClient(server), "zt", "sms", 60, on_retry=(retries if retries is not None else []).append), server


def test_a_refused_connection_is_retried_with_backoff(_no_sleep: list[float]) -> None:
    retries: list[BaseException] = []
    led, server = _ledger(["refuse"] * 4, retries)
    c = led.claim("a1", "w1", "t/0/5", 1_000, 3_000)
    assert (c.kind, c.record.attempts, server.execs) == ("acquired", 1, 1)
    assert _no_sleep == [0.05, 0.1, 0.2, 0.4] and len(retries) == 4


def test_a_connection_dropped_before_exec_is_retried() -> None:
    led, server = _ledger(["drop"])
    assert led.claim("a1", "w1", "t/0/5", 1_000, 3_000).kind == "acquired"
    assert server.execs == 1


def test_a_claim_whose_reply_was_lost_is_ours() -> None:
    led, server = _ledger(["lost_reply"])
    c = led.claim("a1", "w1", "t/0/5", 1_000, 3_000)
    assert (c.kind, c.record.owner, c.record.in_doubt, server.execs) == ("acquired", "w1", False, 1)
    # negative control: asking again without knowing the write happened finds the claim held (by us) and busy
    assert ledger.claim(c.record, "w1", "t/0/5", 1_001, 3_000)[1].kind == "busy"


def test_a_finish_whose_reply_was_lost_returns_the_record() -> None:
    led, server = _ledger([])
    assert led.claim("a1", "w1", "t/0/5", 1_000, 3_000).kind == "acquired"
    server.faults = ["lost_reply"]
    rec = led.finish("a1", "w1", Outcome("delivered", provider_id="p1"), 1_200)
    assert rec is not None and (rec.state, rec.provider_id) == ("delivered", "p1")
    # negative control: the same finish asked again without that knowledge says the claim is lost (no receipt)
    assert ledger.finish(rec, "w1", Outcome("delivered", provider_id="p1"), 1_200) is None


def test_a_real_conflict_is_not_a_lost_connection() -> None:
    assert not redis_state._connection_lost(redis.WatchError("Watched variable changed."))


def test_redis_down_for_good_ends_in_an_error_that_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_state, "UNAVAILABLE_FOR_S", -1.0)
    led, _ = _ledger(["refuse"] * 2)
    with pytest.raises(redis.ConnectionError, match=r"redis key zt:dlv:sms:a1: no connection for -1 s"):
        led.claim("a1", "w1", "t/0/5", 1_000, 3_000)
