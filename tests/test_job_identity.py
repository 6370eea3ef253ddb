"""The event job with the identity graph, on the embedded mini-cluster against the real stack.

A generated stream with identity noise (shared household devices, store kiosks, junk identifier values,
late arrivals) goes through the real job. Then, exactly:

* every identifier → person mapping in Redis (``zt:id:*``) and HBase (``identity`` table) equals the
  guard-railed batch resolution (``operators.identity.resolve_batch``) of the same events;
* every person's profile (Redis hash and HBase buckets) equals the oracle's profile of all the events
  whose anchor that resolution gives to the person: merges moved whole buckets;
* the pipeline totals and live counters equal the oracle's (junk-only events are ``no_identifier``);
* the identity changes topic holds the merges, readable with read_committed.
"""

from __future__ import annotations

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from connectors.hbase_store import HBaseStore, derive_profile_hash
from connectors.redis_store import RedisStore
from operators.identity import IdentityRules
from operators.profile_windows import evaluate
from tests.helpers import counter_mismatches, fresh_names, make_settings, profile_mismatches
from zhongtai.generator import GeneratorConfig, expected, generate
from zhongtai.generator.model import IDENTITY_NOISE
from zhongtai.generator.oracle import expected_identity
from zhongtai.generator.produce import produce
from zhongtai.runner import RunOptions, run_events_job

pytestmark = [pytest.mark.stack, pytest.mark.flink]


def _read_all(settings, topic: str) -> list[bytes]:
    c = Consumer({"bootstrap.servers": settings.kafka.bootstrap, "group.id": f"chk-{topic}",
                  "isolation.level": "read_committed", "auto.offset.reset": "earliest", "enable.auto.commit": False})
    meta = c.list_topics(topic, timeout=10).topics[topic]
    c.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
    out: list[bytes] = []
    idle = 0
    while idle < 3:
        msgs = c.consume(1000, timeout=1.0)
        if not msgs:
            idle += 1
            continue
        out.extend(m.value() for m in msgs if not m.error())
    c.close()
    return out


@pytest.mark.parametrize("parallelism", [1, 2])
def test_identity_graph_and_person_profiles_are_exact(parallelism: int) -> None:
    settings = make_settings(flink={"parallelism": parallelism})
    n = fresh_names()
    cfg = GeneratorConfig(seed=31 + parallelism, persons=150, events=4000, topic_prefix=n.topic_prefix,
                          partitions=2, **{**IDENTITY_NOISE, "junk_id_share": 0.05})
    produce(settings, cfg, name=n.tag, progress=False, expected="none")
    records = list(generate(cfg, settings.job))
    ident = expected_identity(records, cfg, job=settings.job, pii=settings.pii)
    rules = IdentityRules.from_settings(settings.identity, settings.pii)
    resolved = ident.resolved
    want = expected(records, settings.job, settings.pii, person_of=lambda e: resolved[rules.clean_ids(e.ids)[0]])
    # The stream really exercises the graph: merges happen, guard rails reject links.
    assert len(set(resolved.values())) < len(resolved)
    changes_topic = n.dlq + ".identity"
    run_events_job(settings, RunOptions(bounded=True, group=n.group, topic_pattern=n.topic_pattern, dlq_topic=n.dlq,
                                        identity_topic=changes_topic, redis_prefix=n.prefix, hbase_prefix=n.prefix,
                                        resume=False, job_name=n.job))
    store = RedisStore(settings.redis, prefix=n.prefix)
    hb = HBaseStore(settings.hbase, prefix=n.prefix)
    try:
        assert store.stats() == want["stats"]
        assert counter_mismatches(want["counters"], store.all_counters()) == []
        mapping = store.id_mapping()
        assert mapping == resolved
        # A person's identifier set is the inverse of the mapping.
        some = sorted(set(resolved.values()))[:20]
        for pid in some:
            assert store.identifiers(pid) == sorted(i for i, p in resolved.items() if p == pid)
        assert sorted(store.persons()) == sorted(want["profiles"])
        assert profile_mismatches(want["profiles"], store.profile) == []
        assert profile_mismatches(want["profiles"], lambda p: evaluate(derive_profile_hash(hb.profile_buckets(p)))) == []
        assert {i: hb.person_of(i) for i in list(resolved)[:200]} == {i: resolved[i] for i in list(resolved)[:200]}
        # Changes: JSON records, merges among them, each naming persons of the final mapping or merged away.
        changes = [orjson.loads(v) for v in _read_all(settings, changes_topic)]
        kinds = {c["kind"] for c in changes}
        assert "merge" in kinds and "attach" in kinds
        assert all(set(c) == {"kind", "person", "other", "identifiers", "ts_ms", "cause"} for c in changes)
    finally:
        store.delete_prefix()
        store.close()
        hb.close()
