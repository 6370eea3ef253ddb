"""One wire contract per Kafka message (operators/messages.py): the JSON round-trips, and a channel worker
reads exactly what the strategy engine writes, field by field, down to the receipt attribution reads (pure)."""

from __future__ import annotations

import json
import textwrap
from dataclasses import fields
from typing import Any

import orjson
import pytest

from connectors.channels.base import Contact, DeliveryResult
from operators.messages import Action, ActionDecodeError, DeliveryReceipt, MessageDecodeError, TagChange
from operators.rules.attribution import Delivery, delivery_from
from operators.rules.engine import evaluate
from operators.rules.model import Event
from operators.rules.registry import RuleSet
from operators.rules.schema import load_text
from tests.helpers import make_settings
from tests.workers_fakes import DictDirectory, FakeClock, FakeKafka, ScriptedAdapter, make_worker

T0 = 1_767_261_600_000

#: Two webhook rules on one event: one with a campaign budget (``budget_max``, nested non-ASCII
#: params), one naming no campaign (``campaign`` null): the two fields the old copies disagreed on.
RULES = textwrap.dedent("""\
    rules:
      - id: spring_coupon
        version: 3
        campaign: spring
        priority: 7
        trigger: {event: [register]}
        actions: [{channel: webhook, template: coupon, params: {coupon: "VIP专属8折券", tiers: [1, 2], discount: {pct: 20}}}]
        constraints: {budget: {max: 100}}
      - {id: hello, version: 1, trigger: {event: [register]}, actions: [{channel: webhook, template: hello}]}
    """)


def engine_actions() -> list[Action]:
    rs = RuleSet.from_definitions(load_text(RULES, "messages.yaml"))
    result = evaluate(rs, None, Event("e1", "register", T0, "p1", {"src": "app"}), {}, frozenset(), T0)
    return sorted(result.actions, key=lambda a: a.rule_id)


def by_field(a: Action) -> dict[str, Any]:
    return {f.name: getattr(a, f.name) for f in fields(Action)}


def kafka_value(a: Action) -> bytes:
    """What the job writes to ``zt.actions.<channel>`` (``pipelines.person``: ``orjson.dumps(a.to_json())``)."""
    return orjson.dumps(a.to_json())


def test_engine_actions_cover_both_differences():
    hello, spring = engine_actions()
    assert (hello.campaign, hello.budget_max) == (None, None)
    assert (spring.campaign, spring.budget_max, spring.rule_version, spring.priority) == ("spring", 100, 3, 7)


@pytest.mark.parametrize("campaign", [None, "", "spring"])
@pytest.mark.parametrize("budget_max", [None, 0, 100])
def test_action_json_round_trips(campaign: str | None, budget_max: int | None):
    a = Action("a" * 32, "r", 2, "p1", "coupon", "t", {"x": [1, {"y": "券"}]}, campaign,
               {"type": "event", "event_id": "e1", "ts_ms": T0}, T0, 5, budget_max)
    assert Action.decode(kafka_value(a)) == a
    assert Action.from_json(json.loads(json.dumps(a.to_json()))) == a


def test_worker_reads_exactly_what_the_engine_writes():
    written = engine_actions()

    class Recording(ScriptedAdapter):
        def __init__(self, clock: FakeClock) -> None:
            super().__init__(clock=clock)
            self.actions: list[Action] = []

        def deliver(self, action: Action, contact: Contact) -> DeliveryResult:
            self.actions.append(action)
            return super().deliver(action, contact)

    clock, kafka = FakeClock(), FakeKafka(partitions=1)
    for a in written:
        kafka.append(kafka_value(a), key=a.person_id.encode())
    adapter = Recording(clock)
    worker = make_worker(make_settings().worker, kafka, adapter,
                         DictDirectory({"p1": Contact("p1", webhook_url="http://h/x")}), clock)
    assert worker.run(idle_exit_s=1.0).delivered == 2
    read = sorted(adapter.actions, key=lambda a: a.rule_id)
    assert [by_field(a) for a in read] == [by_field(a) for a in written]

    # the receipt carries the action's fields, and attribution reads the delivery back from it
    receipts = {r["action_id"]: DeliveryReceipt.from_json(r) for r in kafka.receipts()}
    for a in written:
        r = receipts[a.action_id]
        assert (r.person_id, r.channel, r.status, r.rule_id, r.campaign) == (a.person_id, a.channel, "delivered",
                                                                             a.rule_id, a.campaign)
        assert delivery_from(r.to_json()) == Delivery(a.action_id, r.ts_ms, a.channel, a.rule_id, a.campaign or "")


def test_the_old_channel_reading_fails_the_comparison():
    """Negative control: the workers' former copy of ``Action`` (campaign null read as "", no
    ``budget_max``) differs from the engine's action on exactly those fields."""

    def old_reading(raw: bytes) -> dict[str, Any]:
        d = orjson.loads(raw)
        return {**{f.name: d.get(f.name) for f in fields(Action)}, "campaign": str(d.get("campaign") or ""),
                "budget_max": None}

    diffs = {k for a in engine_actions() for k, v in old_reading(kafka_value(a)).items() if by_field(a)[k] != v}
    assert diffs == {"campaign", "budget_max"}


def test_action_decode_rejects_with_the_reason():
    for raw, reason in ((b'{"action_id":"x","person_id":"p","channel":"sms","template":"t","ts_ms":"soon"}', "ts_ms"),
                        (b'{"action_id":"x","person_id":"p","channel":"sms","template":"t","budget_max":"lots"}',
                         "budget_max"),
                        (b'{"action_id":"' + b"x" * 129 + b'"}', "1-128")):
        with pytest.raises(ActionDecodeError, match=reason):
            Action.decode(raw)


def test_receipt_round_trips_and_rejects_what_no_worker_writes():
    failed = DeliveryReceipt("a1", "p1", "coupon", "failed", 3, None, T0, "permanent: HTTP 400", "r1", None)
    assert DeliveryReceipt.from_json(orjson.loads(orjson.dumps(failed.to_json()))) == failed
    assert delivery_from(failed.to_json()) is None  # not delivered
    ok = DeliveryReceipt("a1", "p1", "coupon", "delivered", 1, "m-1", T0, None, "r1", None).to_json()
    assert delivery_from(ok) == Delivery("a1", T0, "coupon", "r1", "")
    for bad in ({**ok, "action_id": None}, {**ok, "ts_ms": True}, {**ok, "status": 1}, {**ok, "attempts": "3"}):
        with pytest.raises(MessageDecodeError):
            DeliveryReceipt.from_json(bad)
        assert delivery_from(bad) is None


def test_tag_change_round_trips():
    c = TagChange("p1", "churn_risk", "add", T0, "timer", 4)
    assert c.as_record() == {"person": "p1", "tag": "churn_risk", "op": "add", "ts": T0, "cause": "timer",
                             "tagset_version": 4}
    assert TagChange.from_record(orjson.loads(orjson.dumps(c.as_record()))) == c
    for bad in ({**c.as_record(), "op": "toggle"}, {**c.as_record(), "ts": "now"},
                {k: v for k, v in c.as_record().items() if k != "cause"}):
        with pytest.raises(MessageDecodeError):
            TagChange.from_record(bad)
