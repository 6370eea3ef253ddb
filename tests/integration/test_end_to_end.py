"""The whole loop on the real stack: event → rule → action → channel worker → delivery receipt → attribution.

One unbounded run of the event job (rules on, a one-rule file: register → webhook action) on the embedded
mini-cluster, a real webhook worker (``zhongtai.services.workers``) against two real local HTTP servers, and the job's
attribution reading the worker's receipts back:

* users A, B and C register; the job emits one webhook action each (read_committed, ids = the pure engine's);
* B also buys at once, before the worker has delivered anything (negative control: purchase BEFORE delivery);
* the worker delivers A's and B's actions (HTTP 200, signed, once each) and fails C's (HTTP 400: permanent,
  receipt ``failed``; negative control: a failed delivery);
* then A and C buy; once the job has committed the offsets of every event and every receipt, it is stopped
  with a savepoint and ``drain`` (the end of event time: every pending attribution decision is taken).

Asserted exactly: the conversions equal the pure ``attribution_step`` over the receipts read back and the
purchases, which attribute A's purchase and nothing else; the Redis counter ``{rule}|webhook`` is (1, A's
amount); the HBase row of A's action holds exactly that conversion; B's and C's action rows hold none.

Why one unbounded run stopped with drain, not two bounded runs: the purchases must follow the deliveries in
event time (receipts carry the worker's wall clock), so the job has to run while the worker delivers. A
bounded run restored from the first one's state would keep the first run's stopping offsets, and a second
run from scratch would emit every action again. The stop waits for the job's committed source offsets to
pass the last event and the last receipt, so the job has read everything before its event time ends:
deterministic, whatever order the two topics were read in (the attribution's watermark trails the newest
input by ``allowed_lateness_ms``, 1 h, so no decision is taken before the drain).
"""

from __future__ import annotations

import textwrap
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from config.settings import Settings
from connectors.channels.http import verify_signature
from connectors.hbase_store import HBaseStore
from connectors.kafka_admin import create_topics
from connectors.redis_store import RedisStore
from operators.identity.model import person_id
from tests.helpers import fresh_names, read_topics
from tests.integration.test_job_attribution import oracle
from tests.integration.test_rules_kill import expected_action_ids
from tests.workers_env import RecordingHttpServer, cleanup, topics_of, worker_settings, write_contacts
from zhongtai.jobs.runner import RunOptions, start_events_job
from zhongtai.services.workers.worker import build_worker

pytestmark = [pytest.mark.stack, pytest.mark.flink]

RULES = textwrap.dedent("""\
    rules:
      - id: e2e_welcome
        version: 1
        campaign: e2e
        trigger: {event: [register]}
        actions:
          - {channel: webhook, template: welcome_hook}
    """)


def committed_through(settings: Settings, group: str, topics: list[str]) -> bool:
    """True once ``group`` has committed, on every partition of ``topics``, an offset past the partition's
    last committed record (the job's Kafka sources commit with each completed checkpoint). Offsets are
    compared with the records, not the log end: a transactional topic ends with a commit marker that a
    source's position need not pass."""
    from confluent_kafka import Consumer, TopicPartition

    need: dict[tuple[str, int], int] = {}
    for m in read_topics(settings, topics, idle_polls=1):
        need[(m.topic(), m.partition())] = max(need.get((m.topic(), m.partition()), 0), m.offset() + 1)
    c = Consumer({"bootstrap.servers": settings.kafka.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        got = c.committed([TopicPartition(t, p) for t, p in need], timeout=10)
    finally:
        c.close()
    return all(tp.offset >= need[(tp.topic, tp.partition)] for tp in got)


def wait_for(what: str, check: Any, timeout_s: float, job: Any) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert not job.ended(), f"the job ended while waiting for {what}"
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(1.0)


def test_event_rule_action_worker_receipt_attribution(tmp_path: Path) -> None:
    n = fresh_names()
    base = worker_settings(n, tmp_path / "contacts.yaml", group=f"w{n.tag}")  # not the job's group
    settings = base.model_copy(update={"flink": base.flink.model_copy(update={"parallelism": 1,
                                                                              "checkpoint_interval_ms": 1000})})
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES, encoding="utf-8")
    actions_topic, dlq_topic, delivery_topic = topics_of(settings, "webhook")
    events_topic = n.topic_prefix + "app"
    create_topics(settings, [events_topic], partitions=2)
    users = {u: person_id(f"user_id:e2e-{u}") for u in "abc"}

    def event(eid: str, user: str, etype: str, ts: int, **props: Any) -> dict[str, Any]:
        return {"event_id": f"{eid}-{n.tag}", "event_type": etype, "ts": ts, "ids": {"user_id": f"e2e-{user}"},
                "props": props, "source": "app"}

    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap, "enable.idempotence": True})
    events: list[dict[str, Any]] = []

    def send(*evs: dict[str, Any]) -> None:
        for e in evs:
            producer.produce(events_topic, orjson.dumps(e), key=e["ids"]["user_id"].encode())
            events.append(e)
        assert producer.flush(30) == 0

    t0 = int(time.time() * 1000)
    # B buys at once: before any delivery (the worker runs only once the actions are committed)
    send(*(event(f"r{u}", u, "register", t0) for u in "abc"), event("pb", "b", "purchase", t0 + 1, price="30.00"))
    opts = RunOptions(group=n.group, topic_pattern=n.topic_pattern, dlq_topic=n.dlq, redis_prefix=n.prefix,
                      hbase_prefix=n.prefix, resume=False, job_name=n.job, rules=True, rules_file=str(rules_file),
                      experiments=False)
    with RecordingHttpServer() as good, RecordingHttpServer(status=400) as bad:
        write_contacts(Path(settings.worker.contacts.path),
                       {users["a"]: {"webhook_url": f"{good.url}/hook"}, users["b"]: {"webhook_url": f"{good.url}/hook"},
                        users["c"]: {"webhook_url": f"{bad.url}/hook"}})
        job = start_events_job(settings, opts)
        try:
            want_actions = expected_action_ids(rules_file, events)
            assert len(want_actions) == 3
            wait_for("the three actions committed", lambda: len(read_topics(settings, [actions_topic], 1)) >= 3,
                     300, job)
            actions = {orjson.loads(m.value())["person_id"]: orjson.loads(m.value())
                       for m in read_topics(settings, [actions_topic])}
            assert {a["action_id"] for a in actions.values()} == want_actions and set(actions) == set(users.values())
            worker = build_worker(settings, "webhook")
            stop = threading.Event()
            guard = threading.Timer(120, stop.set)
            guard.start()
            try:
                stats = worker.run(max_messages=3, stop=stop)
            finally:
                guard.cancel()
                worker.close()
            assert not stop.is_set(), "the worker did not settle the three actions within 120 s"
            assert (stats.delivered, stats.failed) == (2, 1)
            delivered_at = int(time.time() * 1000)
            # A and C buy after the deliveries (A: 2 × 42.50)
            send(event("pa", "a", "purchase", delivered_at + 1, price="42.50", qty=2),
                 event("pc", "c", "purchase", delivered_at + 1, price="17.00"))
            wait_for("the job's sources past every event and receipt",
                     lambda: committed_through(settings, n.group, [events_topic])
                     and committed_through(settings, f"{n.group}-delivery", [delivery_topic]), 300, job)
            path = job.stop(str(tmp_path / "savepoints"), drain=True)
            assert path and Path(path.removeprefix("file:")).exists()
        finally:
            if not job.ended():
                job.stop(None)

        # the worker: A and B once each through the good endpoint, signed; C refused once (permanent)
        aid = {u: actions[p]["action_id"] for u, p in users.items()}
        assert good.accepted_keys() == Counter({aid["a"]: 1, aid["b"]: 1})
        assert [r.headers["Idempotency-Key"] for r in bad.requests] == [aid["c"]]
        for r in good.requests:
            assert verify_signature(b"whsec", r.headers["X-Zhongtai-Timestamp"], r.body,
                                    r.headers["X-Zhongtai-Signature"], now_s=time.time())
    raw_receipts = [m.value() for m in read_topics(settings, [delivery_topic])]
    receipts = {orjson.loads(v)["action_id"]: orjson.loads(v) for v in raw_receipts}
    assert {a: r["status"] for a, r in receipts.items()} == {aid["a"]: "delivered", aid["b"]: "delivered",
                                                            aid["c"]: "failed"}
    assert receipts[aid["b"]]["ts_ms"] > t0 + 1  # B's purchase really precedes B's delivery

    want = oracle(raw_receipts, events, settings)
    assert {c.purchase_event_id: c.action_id for c in want} == {f"pa-{n.tag}": aid["a"]}  # B and C: not attributed
    store = RedisStore(settings.redis, prefix=n.prefix)
    hb = HBaseStore(settings.hbase, prefix=n.prefix)
    try:
        assert store.conversion_counters() == {"e2e_welcome|webhook": (1, "85.00")}
        assert store.action_counters() == {"e2e_welcome|webhook": 3}
        rows = {u: {eid: orjson.loads(v) for eid, v in hb.conversions(aid[u]).items()} for u in "abc"}
        assert rows == {"a": {f"pa-{n.tag}": want[0].to_json()}, "b": {}, "c": {}}
        assert rows["a"][f"pa-{n.tag}"]["amount"] == "85.00"
    finally:
        store.delete_prefix()
        store.close()
        hb.close()
        cleanup(settings, [events_topic, actions_topic, dlq_topic, delivery_topic, n.dlq])
