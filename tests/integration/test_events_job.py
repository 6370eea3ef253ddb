"""The event job on the embedded mini-cluster against the real stack: exact against the oracle."""

from __future__ import annotations

import pytest

from connectors.hbase_store import HBaseStore, derive_profile_hash
from connectors.redis_store import RedisStore
from operators.profile_windows import evaluate
from tests.helpers import (
    counter_mismatches,
    fresh_names,
    load_expected,
    make_settings,
    profile_mismatches,
    read_topics,
)
from zhongtai.devtools.generator import GeneratorConfig
from zhongtai.devtools.generator.produce import produce
from zhongtai.jobs.runner import RunOptions, run_events_job

pytestmark = [pytest.mark.stack, pytest.mark.flink]


def _dlq_reasons(settings, topic: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in read_topics(settings, [topic]):
        r = "dlq:" + dict(m.headers() or [])["zt.reason"].decode()
        out[r] = out.get(r, 0) + 1
    return out


@pytest.mark.parametrize("parallelism", [1, 2])
def test_job_matches_ground_truth_exactly(parallelism: int) -> None:
    settings = make_settings(flink={"parallelism": parallelism})
    n = fresh_names()
    report = produce(settings, GeneratorConfig(seed=7 + parallelism, persons=200, events=3000,
                                               topic_prefix=n.topic_prefix, partitions=2), name=n.tag, progress=False)
    expected = load_expected(report.expected_path)
    run_events_job(settings, RunOptions(bounded=True, group=n.group, topic_pattern=n.topic_pattern, dlq_topic=n.dlq,
                                        redis_prefix=n.prefix, hbase_prefix=n.prefix, resume=False, job_name=n.job))
    store = RedisStore(settings.redis, prefix=n.prefix)
    try:
        assert store.stats() == expected["stats"]
        assert counter_mismatches(expected["counters"], store.all_counters()) == []
        assert sorted(store.persons()) == sorted(expected["profiles"])
        assert profile_mismatches(expected["profiles"], store.profile) == []
        # HBase holds the same buckets: the profile derived from HBase equals the oracle too.
        hb = HBaseStore(settings.hbase, prefix=n.prefix)
        assert profile_mismatches(expected["profiles"], lambda p: evaluate(derive_profile_hash(hb.profile_buckets(p)))) == []
        # Every bad record is in the DLQ, once, with its reason (read_committed: transactional sink).
        dlq = _dlq_reasons(settings, n.dlq)
        assert dlq == {k: v for k, v in expected["stats"].items() if k.startswith("dlq:")}
    finally:
        store.delete_prefix()
        store.close()
