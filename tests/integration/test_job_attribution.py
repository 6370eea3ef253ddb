"""Attribution inside the real event job (rules on): delivery receipts + purchases → Redis + HBase.

Hand-made events (purchases among other events) go to the event topics and hand-made receipts to a fresh
delivery topic (as the channel workers write them, plus a failed, a suppressed, a duplicate and two broken
ones); the job runs bounded. The Redis counters per rule × channel (conversions, revenue) and the HBase
``a:c:<purchase>`` cells of every action equal what the pure ``attribution_step`` computes over the same
receipts and purchases, exactly. The stream spans less than ``allowed_lateness_ms``, so every decision is
taken at the end of the input, whatever order the two topics were read in.
"""

from __future__ import annotations

import time
from collections import defaultdict
from decimal import Decimal

import orjson
import pytest

from config.settings import Settings
from connectors.hbase_store import HBaseStore
from connectors.kafka_admin import create_topics
from connectors.redis_store import RedisStore
from operators.identity import person_id
from operators.rules.attribution import Conversion, attribution_step, delivery_from
from operators.rules.model import Event
from pipelines.attribution import attribution_config
from tests.helpers import fresh_names, make_settings
from zhongtai.jobs.runner import RunOptions, run_events_job

pytestmark = [pytest.mark.stack, pytest.mark.flink]

MIN = 60_000


def pid(user: str) -> str:
    return person_id(f"user_id:{user}")


def oracle(receipts: list[bytes], events: list[dict], settings: Settings) -> list[Conversion]:
    """``attribution_step`` per person over the same inputs: receipts, purchases, then every timer in order."""
    cfg = attribution_config(settings)
    states: dict[str, object] = {}
    timers: dict[str, set[int]] = defaultdict(set)
    out: list[Conversion] = []
    items: list[tuple[str, object]] = []
    for raw in receipts:
        try:
            r = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        d = delivery_from(r) if isinstance(r, dict) else None
        if d is not None:
            items.append((r["person_id"], d))
    for e in events:
        p = pid(e["ids"]["user_id"])
        items.append((p, Event(e["event_id"], e["event_type"], e["ts"], p, e["props"])))
    for person, item in items:
        st, conv, new = attribution_step(states.get(person), item, 0, cfg, person_id=person)
        states[person] = st
        out += conv
        timers[person] |= set(new)
    for person, at in sorted(((p, t) for p, ts in timers.items() for t in ts), key=lambda x: x[1]):
        st, conv, _ = attribution_step(states.get(person), None, at, cfg)
        states[person] = st
        out += conv
    return out


def test_conversions_in_redis_and_hbase_equal_the_pure_attribution() -> None:
    settings = make_settings(flink={"parallelism": 1},
                             job={"attribution_window_ms": 10 * MIN, "attribution_receipt_delay_ms": MIN})
    n = fresh_names()
    delivery_topic = f"zt.t{n.tag}.delivery"
    t0 = (int(time.time() * 1000) // MIN - 45) * MIN  # the stream spans 40 minutes up to ~5 minutes ago

    def ev(eid: str, user: str, minute: float, etype: str = "purchase", **props: object) -> dict:
        return {"event_id": eid, "event_type": etype, "ts": t0 + int(minute * MIN), "ids": {"user_id": user},
                "props": props, "source": "web"}

    def rc(aid: str, user: str, minute: float, channel: str, status: str = "delivered", rule: str = "winback") -> dict:
        return {"action_id": aid, "person_id": pid(user), "channel": channel, "status": status, "attempts": 1,
                "provider_id": f"prov-{aid}", "ts_ms": t0 + int(minute * MIN), "reason": None, "rule_id": rule,
                "campaign": f"camp-{rule}"}

    events = [
        ev("b01", "ua0", 5, price="19.99", qty=2), ev("b02", "ua0", 8, price=50), ev("b03", "ua0", 20, price=7),
        ev("v01", "ua0", 7, "page_view", item_id="i1"),
        ev("b11", "ua1", 3, price="100.005"),  # rounded half-up to cents: 100.01
        ev("b21", "ua2", 4, price=12),
        ev("b31", "ua3", 1, price=3), ev("b32", "ua3", 12, price="4.50", qty=3),
        ev("b41", "ua4", 4, price=1), ev("b42", "ua4", 9, price=2),
        ev("b61", "ua6", 2, price=9),
        ev("c71", "ua7", 2, "add_to_cart", item_id="i2"), ev("v71", "ua7", 3, "page_view", item_id="i2"),
        ev("b81", "ua8", 35, price="250.00"),
    ]
    receipts = [
        rc("a01", "ua0", 0, "coupon"), rc("a02", "ua0", 6, "push", rule="welcome"),
        rc("a11", "ua1", 2, "email"), rc("a12", "ua1", 2, "sms"),  # same time: the larger action id wins
        rc("a21", "ua2", 1, "sms", status="failed"), rc("a22", "ua2", 1, "push", status="suppressed"),
        rc("a31", "ua3", 2, "coupon"),  # after b31; b32 is exactly 10 minutes after it (inclusive)
        rc("a41", "ua4", 3, "email"), rc("a41", "ua4", 3, "email"),  # duplicate receipt
        rc("a51", "ua5", 4, "coupon"),  # no purchase
        rc("a71", "ua7", 1, "push"),  # only other events
        rc("a81", "ua8", 30, "webhook", rule="welcome"),
    ]
    receipts.sort(key=lambda r: r["ts_ms"])
    raw_receipts = [orjson.dumps(r) for r in receipts]
    raw_receipts.insert(3, b"{not json")
    raw_receipts.insert(5, orjson.dumps({**receipts[0], "action_id": "a99", "ts_ms": "soon"}))

    from confluent_kafka import Producer

    create_topics(settings, [n.topic_prefix + "a"], partitions=2)
    create_topics(settings, [delivery_topic], partitions=1)
    p = Producer({"bootstrap.servers": settings.kafka.bootstrap})
    for e in sorted(events, key=lambda e: e["ts"]):
        p.produce(n.topic_prefix + "a", orjson.dumps(e), key=e["ids"]["user_id"].encode())
    for raw in raw_receipts:
        p.produce(delivery_topic, raw)
    assert p.flush(30) == 0

    want = oracle(raw_receipts, events, settings)
    # the cases above, as designed (so that the comparison below cannot pass vacuously)
    assert {c.purchase_event_id: c.action_id for c in want} == {
        "b01": "a01", "b02": "a02", "b11": "a12", "b32": "a31", "b41": "a41", "b42": "a41", "b81": "a81"}
    run_events_job(settings, RunOptions(bounded=True, group=n.group, topic_pattern=n.topic_pattern, dlq_topic=n.dlq,
                                        redis_prefix=n.prefix, hbase_prefix=n.prefix, resume=False, job_name=n.job,
                                        rules=True, actions_prefix=f"zt.t{n.tag}.actions.", experiments=False,
                                        delivery_topic=delivery_topic))
    counters: dict[str, list] = defaultdict(lambda: [0, Decimal("0.00")])
    for c in want:
        k = counters[f"{c.rule_id}|{c.channel}"]
        k[0] += 1
        k[1] += Decimal(c.amount or "0")
    store = RedisStore(settings.redis, prefix=n.prefix)
    hb = HBaseStore(settings.hbase, prefix=n.prefix)
    try:
        assert store.conversion_counters() == {k: (v[0], str(v[1])) for k, v in counters.items()}
        assert store.conversion_counters()["winback|coupon"] == (2, "53.48")  # b01 19.99 × 2 + b32 4.50 × 3
        for aid in sorted({r["action_id"] for r in receipts}):
            got = {eid: orjson.loads(v) for eid, v in hb.conversions(aid).items()}
            assert got == {c.purchase_event_id: c.to_json() for c in want if c.action_id == aid}, aid
    finally:
        store.delete_prefix()
        store.close()
        hb.close()
