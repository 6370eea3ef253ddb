"""Computed traits through the real job (docs/schema.md "Computed traits"), exact against the oracle at p=1 and
p=2 on a generated stream with identity noise: merges move anchors (and so their trait partials) between
persons while the stream runs.

The schema is the shipped ``config/retail_schema.yaml``: its traits cover every aggregate (count, sum, min, max,
distinct_count, first, last), lifetime and windows of minutes, hours and days, and filters with ``==``, ``in``,
``is not null`` and ``not``. Every person's traits in Redis (``{prefix}:traits:{person}``) and, at p=2, HBase
(``b:t:<name>``) equal the oracle's: the same events' values computed from the events themselves, with the
filter evaluated by the expression language (not the job's SQL) and the persons of the guard-railed batch
resolution; the profile look-up of the API and ``zhongtai profile get`` answers them.
"""

from __future__ import annotations

import pytest

from config.schema import SHIPPED
from connectors.hbase_store import HBaseStore
from connectors.redis_store import RedisStore
from operators.identity import IdentityRules
from tests.helpers import fresh_names, make_settings
from zhongtai.devtools.generator import GeneratorConfig, expected, generate
from zhongtai.devtools.generator.model import IDENTITY_NOISE
from zhongtai.devtools.generator.oracle import expected_identity
from zhongtai.devtools.generator.produce import produce
from zhongtai.jobs.runner import RunOptions, run_events_job
from zhongtai.services.profiles import get_profile

pytestmark = [pytest.mark.stack, pytest.mark.flink]


def _text(v: object) -> str:
    return v if isinstance(v, str) else str(v)


@pytest.mark.parametrize("parallelism", [1, 2])
def test_computed_traits_are_exact_under_merges(parallelism: int) -> None:
    settings = make_settings(flink={"parallelism": parallelism},
                             schema_file=str(SHIPPED.with_name("retail_schema.yaml")))
    schema = settings.event_schema
    assert len(schema.traits) == 9
    n = fresh_names()
    cfg = GeneratorConfig(seed=71 + parallelism, persons=60, events=1200, topic_prefix=n.topic_prefix,
                          partitions=2, **IDENTITY_NOISE)
    produce(settings, cfg, name=n.tag, progress=False, expected="none")
    records = list(generate(cfg, settings.job))
    ident = expected_identity(records, cfg, job=settings.job, pii=settings.pii)
    rules = IdentityRules.from_settings(settings.identity, settings.pii)
    resolved = ident.resolved
    assert len(set(resolved.values())) < len(resolved)  # merges happen
    want_all = expected(records, settings.job, settings.pii, person_of=lambda e: resolved[rules.clean_ids(e.ids)[0]],
                        schema=schema)
    want = {p: {k: _text(v) for k, v in t.items()} for p, t in want_all["traits"].items()}
    # the stream gives every trait a value somewhere, and a non-trivial one (the check has teeth)
    for name, spec in schema.traits.items():
        vals = [t[name] for t in want.values() if name in t]
        assert vals, name
        if spec.aggregate in ("count", "distinct_count", "sum"):
            assert any(v not in ("0", "0.00") for v in vals), name
    hbase = parallelism == 2
    run_events_job(settings, RunOptions(bounded=True, group=n.group, topic_pattern=n.topic_pattern, dlq_topic=n.dlq,
                                        redis_prefix=n.prefix, hbase_prefix=n.prefix, hbase=hbase, resume=False,
                                        job_name=n.job))
    store = RedisStore(settings.redis, prefix=n.prefix)
    try:
        assert sorted(store.persons()) == sorted(want_all["profiles"])
        got = {p: store.traits(p) for p in want}
        bad = {p: (got[p], w) for p, w in want.items() if got[p] != w}
        assert bad == {}, list(bad.items())[:5]
        # no trait hash of a person merged away
        assert sorted(k.rsplit(":", 1)[-1] for k in store.client.scan_iter(match=f"{n.prefix}:traits:*")) == \
            sorted(p for p, t in want.items() if t)
        # the API's and `zhongtai profile get`'s look-up answers them too
        pid = max(want, key=lambda p: len(want[p]))
        assert get_profile(settings, pid, prefix=n.prefix)["traits"] == want[pid]
        if hbase:
            hb = HBaseStore(settings.hbase, prefix=n.prefix)
            try:
                some = sorted(want)[:40]
                assert {p: hb.traits(p) for p in some} == {p: want[p] for p in some}
            finally:
                hb.close()
    finally:
        store.delete_prefix()
        store.close()
