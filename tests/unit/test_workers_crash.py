"""The crash-safety argument of docs/workers.md, checked exhaustively over in-memory Kafka.

A worker is "killed" (``Crash``) at every numbered point of a run in turn: before/after each
ledger claim and finish, before/after each provider call, before/after each Kafka transaction.
A second worker (another owner, the same durable ledger) then runs to the end after the first
one's lease has expired. For every crash point:

* every action reaches the provider; an action reaches it twice only when the first worker died
  between the provider accepting it and the outcome being recorded, and then the ledger has it
  flagged ``in_doubt`` (re-sent with the same idempotency key: the provider-side dedup case);
* every action has exactly one receipt, and the committed offsets reach the end of the log.

Negative control: the same crashes with a ledger that does not survive the restart (what
``worker.idempotency: false`` means) deliver actions twice that are not in doubt.
"""

from __future__ import annotations

from collections import Counter

import pytest

from connectors.channels.base import Contact, DeliveryResult
from tests.helpers import make_settings
from tests.workers_fakes import (
    TOPICS,
    ChaoticLedger,
    Crash,
    DictDirectory,
    FakeClock,
    FakeKafka,
    ScriptedAdapter,
    action,
    encode,
    make_worker,
)

LEASE_MS = 20_000
IDS = [f"{i:032x}" for i in range(7)]


def _cfg():
    return make_settings(worker={"backoff_base_ms": 100, "backoff_max_ms": 400, "backoff_jitter": 0.0,
                                 "max_attempts": 4, "lease_ms": LEASE_MS, "batch_size": 3,
                                 "poll_timeout_ms": 50}).worker


def _scenario(crash_at: int | None, durable: bool):
    k = FakeKafka(partitions=2)
    for i in range(7):
        k.append(encode(action(i)), partition=i % 2)
    k.append(encode(action(2)), partition=0)  # a duplicate message of action 2
    clock = FakeClock()
    chaos = k.chaos
    directory = DictDirectory({f"p{i}": Contact(f"p{i}", webhook_url=f"http://h{i % 3}") for i in range(7)})
    adapter = ScriptedAdapter(chaos, clock, script={IDS[3]: [DeliveryResult.transient("HTTP 503")]})
    led = ChaoticLedger(chaos)
    cfg = _cfg()
    chaos.at = crash_at
    crashed = False
    try:
        make_worker(cfg, k, adapter, directory, clock, ledger=led, owner="w1").run(idle_exit_s=1.0)
    except Crash:
        crashed = True
    chaos.at = None
    clock.sleep(LEASE_MS / 1000 + 1)  # the dead holder's lease runs out
    led2 = led if durable else ChaoticLedger(chaos)
    make_worker(cfg, k, adapter, directory, clock, ledger=led2, owner="w2").run(idle_exit_s=1.0)
    return k, adapter, led2, crashed, chaos.passed


def _points() -> int:
    _, _, _, crashed, passed = _scenario(None, durable=True)
    assert not crashed
    return passed


POINTS = _points()


def test_enough_crash_points():
    # 7 actions + 1 duplicate + 1 retry: claims, finishes, provider calls, transactions
    assert POINTS >= 50


@pytest.mark.parametrize("at", range(1, POINTS + 1))
def test_kill_at_any_point_neither_loses_nor_duplicates(at):
    k, adapter, led, crashed, _ = _scenario(at, durable=True)
    assert crashed
    counts = adapter.counts()
    assert set(counts) == set(IDS)
    twice = {a for a, n in counts.items() if n > 1}
    assert all(counts[a] == 2 and led.get(a).in_doubt for a in twice), (twice, counts)
    assert len(twice) <= 1  # one delivery in flight at a time: at most one in doubt per crash
    receipts = Counter(r["action_id"] for r in k.receipts())
    assert receipts == Counter({a: 1 for a in IDS})
    assert all(r["status"] == "delivered" for r in k.receipts())
    assert k.committed == {(TOPICS.actions, 0): 5, (TOPICS.actions, 1): 3}


def test_negative_control_without_a_durable_record_duplicates():
    unexplained = 0
    for at in range(1, POINTS + 1):
        _, adapter, led, _, _ = _scenario(at, durable=False)
        unexplained += sum(1 for a, n in adapter.counts().items() if n > 1 and not led.get(a).in_doubt)
    assert unexplained >= 10
