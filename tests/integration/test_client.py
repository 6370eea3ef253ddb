"""``zhongtai.client`` against a real ``zhongtai collect`` and Kafka."""

from __future__ import annotations

import json

import pytest

from config import load_settings
from tests.collector_env import CRM_KEY, KEYS, collector_topic, running_collector
from tests.helpers import free_port, read_topics
from zhongtai.client import Client, Refused, Rejected, Unavailable

pytestmark = pytest.mark.stack


def test_track_and_identify_reach_kafka_and_a_rejected_event_raises_with_its_reason() -> None:
    topic = collector_topic()
    with running_collector({"collector": {"topic": topic, "write_keys": KEYS}}) as base:
        with Client(base, CRM_KEY, flush_at=3) as zt:
            zt.identify("crm-1", {"tier": "gold"}, ids={"phone": "13800138000"}, message_id="c1")
            zt.track("Order Completed", {"order_id": "o-9", "price": "129.00", "qty": 1}, user_id="crm-1",
                     message_id="c2")
            with pytest.raises(Rejected, match=r"rejected 1 event\(s\) \(wrong_type:props.price\); 2 accepted"):
                zt.track("purchase", {"price": "a lot"}, user_id="crm-2", message_id="c3")  # a full batch: flushed
            assert zt.queue == [] and zt.accepted == 2
    records = read_topics(load_settings(), [topic], idle_polls=2)
    envs = {json.loads(m.value())["event_id"]: (m.key(), json.loads(m.value())) for m in records}
    assert sorted(envs) == ["c1", "c2"]
    key, ident = envs["c1"]
    # the phone is in ids as sent (the job hashes it); the key is the decoded anchor, never a raw phone
    assert key == b"user_id:crm-1" and ident["ids"] == {"user_id": "crm-1", "phone": "13800138000"}
    assert (ident["event_type"], ident["props"], ident["source"]) == ("identify", {"traits": {"tier": "gold"}}, "crm")
    assert envs["c2"][1]["event_type"] == "order_completed"


def test_rejected_refused_and_unavailable_raise_clear_errors() -> None:
    topic = collector_topic()
    with running_collector({"collector": {"topic": topic, "write_keys": KEYS}}) as base:
        zt = Client(base, CRM_KEY)
        zt.track("purchase", {"price": "a lot"}, user_id="crm-2", message_id="bad-1")
        zt.track("purchase", {"price": "1.00"}, user_id="crm-2", message_id="good-1")
        with pytest.raises(Rejected) as e:
            zt.flush()
        assert [(r["messageId"], r["reason"]) for r in e.value.rejected] == [("bad-1", "wrong_type:props.price")]
        assert (e.value.accepted, zt.queue) == (1, [])

        wrong = Client(base, "not-a-key-at-all")
        wrong.track("x", user_id="u1")
        with pytest.raises(Refused, match="401: missing or unknown write key"):
            wrong.flush()
        assert len(wrong.queue) == 1
    assert [json.loads(m.value())["event_id"] for m in read_topics(load_settings(), [topic], idle_polls=2)] == ["good-1"]

    down = {"kafka": {"bootstrap": f"127.0.0.1:{free_port()}"},
            "collector": {"topic": collector_topic(), "write_keys": KEYS, "delivery_timeout_ms": 1000,
                          "retry_after_s": 1}}
    with running_collector(down) as base:
        sleeps: list[float] = []
        zt = Client(base, CRM_KEY, max_retries=2, sleep=sleeps.append)
        zt.track("x", user_id="u1")
        with pytest.raises(Unavailable, match=r"in 3 attempts \(HTTP 503: .*still queued \(1\)"):
            zt.flush()
        assert len(zt.queue) == 1 and sleeps and min(sleeps) >= 1.0  # Retry-After: 1 honoured
