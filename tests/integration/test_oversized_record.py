"""An 8 MiB record among valid events: it lands in the DLQ as ``oversized`` (value cut to
``job.dlq_max_value_bytes`` and marked, headers naming where the whole record is) and the job goes on
(issue 12: a broker that accepted the record made the DLQ write fail with RecordTooLargeException; the job
restarted 20 times and died, and nothing reached Redis).

Negative control: the whole record is too large for a producer with the default limits, which is what
the DLQ's producer has.
"""

from __future__ import annotations

import time

import orjson
import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from connectors.redis_store import RedisStore
from tests.helpers import fresh_names, make_settings, read_topics
from zhongtai.jobs.runner import RunOptions, run_events_job

pytestmark = [pytest.mark.stack, pytest.mark.flink]

BIG = 8 * 1024 * 1024
VALID = 300


def test_an_8_mib_record_goes_to_the_dlq_cut_and_marked_and_the_job_goes_on() -> None:
    settings = make_settings()
    n = fresh_names()
    topic = n.topic_prefix + "web"
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    for f in admin.create_topics([NewTopic(topic, 1, 1, config={"max.message.bytes": str(16 * 1024 * 1024)}),
                                  NewTopic(n.dlq, 1, 1)]).values():
        f.result()
    p = Producer({"bootstrap.servers": settings.kafka.bootstrap, "message.max.bytes": 16 * 1024 * 1024 + 1024})
    t0 = int(time.time() * 1000) - 60_000
    big = b'{"event_id": "big", "pad": "' + b"x" * BIG + b'"}'
    for i in range(VALID):
        if i == VALID // 2:
            p.produce(topic, big, key=b"big", timestamp=t0 + i)
        value = orjson.dumps({"event_id": f"e{i}", "event_type": "page_view", "ts": t0 + i,
                              "ids": {"user_id": f"u{i % 7}"}, "props": {"campaign_id": "c", "channel": "web"}})
        p.produce(topic, value, key=str(i).encode(), timestamp=t0 + i)
    assert p.flush(30) == 0
    run_events_job(settings, RunOptions(bounded=True, group=n.group, topic_pattern=n.topic_pattern, dlq_topic=n.dlq,
                                        redis_prefix=n.prefix, hbase=False, resume=False, job_name=n.job,
                                        experiments=False))
    [dead] = read_topics(settings, [n.dlq])
    headers = {k: v.decode() for k, v in dead.headers()}
    cut = settings.job.dlq_max_value_bytes
    assert (headers["zt.reason"], headers["zt.truncated"], headers["zt.value.bytes"]) == (
        "oversized", "true", str(len(big)))
    assert headers["zt.source.topic"] == topic and dead.value() == big[:cut] and dead.key() == b"big"
    store = RedisStore(settings.redis, prefix=n.prefix)
    try:
        st = store.stats()
        assert (st["valid"], st["unique"], st["dlq:oversized"], st["received"]) == (VALID, VALID, 1, VALID + 1)
    finally:
        store.delete_prefix()
        store.close()
    # negative control: the record as it is cannot go through a producer with the default request limit
    plain = Producer({"bootstrap.servers": settings.kafka.bootstrap})
    with pytest.raises(KafkaException, match="MSG_SIZE_TOO_LARGE|too large"):
        plain.produce(n.dlq, big)
