"""Opt-in consent through the real job and a real SMS worker (issue 12: the job handed the engine only
campaign/channel/item_id/amount, so a consent event's ``granted`` never arrived and an opt-in channel was
never delivered).

Policy: SMS is opt-in (as in config/rules.yaml). A rule sends an SMS on every purchase. Person A grants
SMS consent, then buys: the SMS action is emitted, the worker delivers it to the SMS gateway (a real local
HTTP server) and writes a ``delivered`` receipt. Person B buys without consent and person C grants and
then unsubscribes before buying: both are suppressed ``no_consent`` — the negative controls that show
the rule would otherwise fire.
"""

from __future__ import annotations

import threading
import time

import orjson
import pytest
from confluent_kafka import Producer

from connectors.redis_store import RedisStore
from operators.identity.model import person_id
from tests.helpers import event_record, fresh_names
from tests.workers_env import RecordingHttpServer, read_topic, receipts, worker_settings, write_contacts
from zhongtai.jobs.runner import RunOptions, run_events_job
from zhongtai.services.workers.worker import build_worker

pytestmark = [pytest.mark.stack, pytest.mark.flink]

RULES = """
policy:
  default_timezone: UTC
  consent: {email: opt_out, sms: opt_in, push: opt_out, webhook: none, coupon: none}
rules:
  - id: order_sms
    version: 1
    campaign: orders
    trigger: {event: [purchase]}
    actions:
      - {channel: sms, template: order_confirmed}
"""


def test_consent_reaches_the_engine_and_the_sms_is_delivered(tmp_path) -> None:
    n = fresh_names()
    pa, pb, pc = (person_id(f"user_id:{u}") for u in ("ua", "ub", "uc"))
    contacts = write_contacts(tmp_path / "contacts.yaml", {pa: {"phone": "+8613800000001"},
                                                           pb: {"phone": "+8613800000002"},
                                                           pc: {"phone": "+8613800000003"}})
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    with RecordingHttpServer() as gateway:
        settings = worker_settings(n, contacts, sms={"url": gateway.url})
        prefix = settings.kafka.topics.actions_prefix
        t0 = int(time.time() * 1000) - 600_000
        p = Producer({"bootstrap.servers": settings.kafka.bootstrap})
        for value, ts in [
            (event_record("a1", "consent", "ua", t0, channel="sms", granted=True), t0),
            (event_record("a2", "purchase", "ua", t0 + 60_000, price="10.00"), t0 + 60_000),
            (event_record("b1", "purchase", "ub", t0 + 60_000, price="10.00"), t0 + 60_000),
            (event_record("c1", "consent", "uc", t0, channel="sms", status="opt_in"), t0),
            (event_record("c2", "unsubscribe", "uc", t0 + 30_000, channels=["sms"]), t0 + 30_000),
            (event_record("c3", "purchase", "uc", t0 + 60_000, price="10.00"), t0 + 60_000),
        ]:
            p.produce(n.topic_prefix + "web", value, key=b"k", timestamp=ts)
        assert p.flush(30) == 0
        run_events_job(settings, RunOptions(bounded=True, group=n.group, topic_pattern=n.topic_pattern,
                                            dlq_topic=n.dlq, redis_prefix=n.prefix, hbase=False, resume=False,
                                            job_name=n.job, rules=True, rules_file=str(rules), actions_prefix=prefix,
                                            experiments=False, attribution=False))
        sms = [orjson.loads(v) for _, v, _ in read_topic(settings, prefix + "sms")]
        assert [(a["person_id"], a["rule_id"], a["template"]) for a in sms] == [(pa, "order_sms", "order_confirmed")]
        store = RedisStore(settings.redis, prefix=n.prefix)
        try:
            assert store.action_counters() == {"order_sms|sms": 1, "suppressed:no_consent": 2}
        finally:
            store.delete_prefix()
            store.close()
        # the SMS worker delivers it to the gateway, once, and says so in a receipt
        worker = build_worker(settings, "sms")
        stop = threading.Event()
        guard = threading.Timer(60, stop.set)
        guard.start()
        try:
            worker.run(max_messages=1, stop=stop)
        finally:
            guard.cancel()
            worker.close()
        assert not stop.is_set(), "the SMS worker did not settle the action within 60 s"
        [req] = gateway.accepted()
        assert orjson.loads(req.body)["to"] == "+8613800000001"
        assert [(r["action_id"], r["status"]) for r in receipts(settings)] == [(sms[0]["action_id"], "delivered")]
