"""The strategy engine inside the real event job (opt-in ``RunOptions(rules=True)``).

Generated events → identity → person events → rules (config/rules.yaml) → ``<prefix><channel>`` topics
through one transactional sink. Checked exactly against each other: the actions a read_committed
consumer sees (each action_id once), the HBase audit rows, and the Redis counters per rule × channel.
The engine's semantics (patterns, caps, budgets, hot reload) are tested in tests/pipeline/test_rules_job.py.
"""

from __future__ import annotations

from collections import Counter

import orjson
import pytest

from connectors.hbase_store import HBaseStore
from connectors.redis_store import RedisStore
from tests.helpers import fresh_names, make_settings, read_topics
from zhongtai.devtools.generator import GeneratorConfig
from zhongtai.devtools.generator.produce import produce
from zhongtai.jobs.runner import RunOptions, run_events_job

pytestmark = [pytest.mark.stack, pytest.mark.flink]

CHANNELS = ("email", "sms", "push", "webhook", "coupon")


def test_actions_once_each_and_counted_everywhere() -> None:
    settings = make_settings(flink={"parallelism": 1})
    n = fresh_names()
    prefix = f"zt.t{n.tag}.actions."
    produce(settings, GeneratorConfig(seed=3, persons=60, events=2000, topic_prefix=n.topic_prefix, partitions=2),
            name=n.tag, progress=False, expected="none")
    run_events_job(settings, RunOptions(bounded=True, group=n.group, topic_pattern=n.topic_pattern, dlq_topic=n.dlq,
                                        redis_prefix=n.prefix, hbase_prefix=n.prefix, resume=False, job_name=n.job,
                                        rules=True, actions_prefix=prefix, experiments=False))
    actions = [orjson.loads(m.value()) for m in read_topics(settings, [prefix + c for c in CHANNELS])]
    assert len(actions) > 10
    ids = [a["action_id"] for a in actions]
    assert len(ids) == len(set(ids))  # exactly once per action id for a read_committed consumer
    per_rule = Counter(f"{a['rule_id']}|{a['channel']}" for a in actions)
    store = RedisStore(settings.redis, prefix=n.prefix)
    hb = HBaseStore(settings.hbase, prefix=n.prefix)
    try:
        counters = store.action_counters()
        assert {k: v for k, v in counters.items() if not k.startswith("suppressed:")} == dict(per_rule)
        for a in actions[:50]:
            row = hb.action(a["action_id"])
            assert row["status"] == "emitted" and orjson.loads(row["record"])["action_id"] == a["action_id"]
        assert {a["channel"] for a in actions} <= set(CHANNELS)
    finally:
        store.delete_prefix()
        store.close()
        hb.close()
