"""In-memory stand-ins for the channel worker's Kafka, adapter and directory (no tests here: shared by
the test_workers_* modules).

``FakeKafka`` keeps per-partition logs, the committed offsets and the committed outputs the way a
read_committed reader would see them: ``commit`` is atomic, and a crash (any exception) before it
leaves nothing behind. ``Chaos`` raises ``Crash`` at the n-th numbered point of a run.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import orjson

from connectors.channels.base import Contact, DeliveryResult
from connectors.channels.kafka_io import InMessage, OutRecord
from operators.delivery.ledger import MemoryLedger
from operators.delivery.ratelimit import Unlimited
from operators.messages import Action
from zhongtai.services.workers.metrics import WorkerMetrics
from zhongtai.services.workers.worker import ChannelWorker, WorkerTopics

TOPICS = WorkerTopics(actions="a.webhook", dlq="a.webhook.dlq", delivery="delivery")


class Crash(Exception):
    """A simulated kill -9."""


@dataclass
class Chaos:
    """Raise ``Crash`` when the ``at``-th point is passed (None: never); counts points passed."""

    at: int | None = None
    passed: int = 0

    def point(self, _name: str) -> None:
        self.passed += 1
        if self.at is not None and self.passed == self.at:
            raise Crash(_name)


class FakeClock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s


def action(i: int, person: str | None = None, channel: str = "webhook", **params: object) -> Action:
    return Action(action_id=f"{i:032x}", rule_id="r1", rule_version=1, person_id=person or f"p{i}",
                  channel=channel, template="welcome", params=params, campaign="c1")


def encode(a: Action) -> bytes:
    return orjson.dumps(a.to_json())


class FakeKafka:
    def __init__(self, partitions: int = 2) -> None:
        self.logs: dict[tuple[str, int], list[InMessage]] = {(TOPICS.actions, p): [] for p in range(partitions)}
        self.committed: dict[tuple[str, int], int] = {tp: 0 for tp in self.logs}
        self.outputs: list[OutRecord] = []
        self.chaos = Chaos()

    def append(self, value: bytes, partition: int = 0, key: bytes | None = None) -> None:
        tp = (TOPICS.actions, partition)
        log = self.logs[tp]
        log.append(InMessage(tp[0], tp[1], len(log), key, value))

    def io(self, clock: FakeClock | None = None) -> FakeIO:
        return FakeIO(self, clock)

    def topic(self, name: str) -> list[OutRecord]:
        return [r for r in self.outputs if r.topic == name]

    def receipts(self) -> list[dict]:
        return [orjson.loads(r.value) for r in self.topic(TOPICS.delivery)]


class FakeIO:
    def __init__(self, kafka: FakeKafka, clock: FakeClock | None) -> None:
        self.k, self.clock = kafka, clock
        self.position = dict(kafka.committed)
        self.paused = False

    def poll(self, max_messages: int, timeout_s: float) -> list[InMessage]:
        out: list[InMessage] = []
        if not self.paused:
            for tp, log in self.k.logs.items():
                while len(out) < max_messages and self.position[tp] < len(log):
                    out.append(log[self.position[tp]])
                    self.position[tp] += 1
        if not out and self.clock is not None:
            self.clock.sleep(timeout_s)
        return out

    def pause_all(self) -> None:
        self.paused = True

    def resume_all(self) -> None:
        self.paused = False

    def commit(self, outputs: list[OutRecord], offsets: dict[tuple[str, int], int]) -> None:
        self.k.chaos.point("commit.before")
        self.k.outputs.extend(outputs)
        self.k.committed.update(offsets)
        self.k.chaos.point("commit.after")

    def close(self) -> None:
        pass


class ScriptedAdapter:
    """Webhook-like adapter: ``script[action_id]`` is a list of results served in turn (then delivered).

    ``received`` lists every action id that reached the "provider" (a delivery that succeeded on
    the wire), with the time it arrived.
    """

    channel = "webhook"

    def __init__(self, chaos: Chaos | None = None, clock: FakeClock | None = None,
                 script: dict[str, list[DeliveryResult]] | None = None) -> None:
        self.chaos, self.clock = chaos or Chaos(), clock
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.received: list[tuple[str, float]] = []
        self.calls: list[tuple[str, float]] = []

    def destination(self, action: Action, contact: Contact) -> str:
        return contact.webhook_url or ""

    def deliver(self, action: Action, contact: Contact) -> DeliveryResult:
        now = self.clock() if self.clock else 0.0
        self.calls.append((action.action_id, now))
        self.chaos.point("deliver.before")
        todo = self.script.get(action.action_id)
        result = todo.pop(0) if todo else DeliveryResult.delivered(f"prov-{action.action_id}")
        if result.status == "delivered":
            self.received.append((action.action_id, now))
        self.chaos.point("deliver.after")
        return result

    def counts(self) -> Counter[str]:
        return Counter(a for a, _ in self.received)

    def close(self) -> None:
        pass


class ChaoticLedger(MemoryLedger):
    """A ledger whose writes pass chaos points before and after (the record survives a Crash)."""

    def __init__(self, chaos: Chaos) -> None:
        super().__init__()
        self.chaos = chaos

    def claim(self, *a, **kw):  # type: ignore[no-untyped-def]
        self.chaos.point("claim.before")
        out = super().claim(*a, **kw)
        self.chaos.point("claim.after")
        return out

    def finish(self, *a, **kw):  # type: ignore[no-untyped-def]
        self.chaos.point("finish.before")
        out = super().finish(*a, **kw)
        self.chaos.point("finish.after")
        return out


@dataclass
class DictDirectory:
    contacts: dict[str, Contact] = field(default_factory=dict)

    def lookup(self, person_id: str) -> Contact | None:
        return self.contacts.get(person_id)

    def close(self) -> None:
        pass


def make_worker(cfg, kafka: FakeKafka, adapter: ScriptedAdapter, directory: DictDirectory, clock: FakeClock,
                ledger=None, limiter=None, owner: str | None = None, seed: int = 1) -> ChannelWorker:  # type: ignore[no-untyped-def]
    import random

    return ChannelWorker("webhook", cfg, TOPICS, io=kafka.io(clock), ledger=ledger or MemoryLedger(),
                         limiter=limiter or Unlimited(), adapter=adapter, directory=directory,
                         metrics=WorkerMetrics("webhook"), owner=owner, clock=clock, sleep=clock.sleep,
                         rng=random.Random(seed))
