"""Experiment statistics inside the real event job (Kafka → Flink → Redis), exact against the oracle.

A device-unit experiment assigned by the stream at ``page_view`` and a person-unit experiment assigned
at ``register`` run in the job (``pipelines.experiments``). The device statistics equal the
plain-Python oracle of tests/pipeline/test_experiments_pipeline.py over the same events exactly; the person
statistics count each person id the job produced once, with conversions never above exposures.
"""

from __future__ import annotations

import textwrap

import pytest

from connectors.redis_experiments import RedisExperiments
from operators.experiments.definitions import load_definitions
from tests.helpers import fresh_names, make_settings
from tests.pipeline.test_experiments_pipeline import _quantized, oracle
from zhongtai.devtools.generator import GeneratorConfig, generate
from zhongtai.devtools.generator.oracle import _Pseudonyms, decode
from zhongtai.devtools.generator.produce import produce
from zhongtai.jobs.runner import RunOptions, run_events_job

pytestmark = [pytest.mark.stack, pytest.mark.flink]

DEFINITIONS = textwrap.dedent("""\
    experiments:
      - key: browse-banner
        version: 1
        hash_seed: browse-banner-1
        unit: device
        coverage: 1.0
        variants:
          - {key: control, weight: 0.5}
          - {key: banner, weight: 0.5}
        start: 2026-11-01T00:00:00Z
        assign_on: [page_view]
        conversion: {event_type: purchase, window: 1h}
        revenue: {event_type: purchase, window: 1h}
        cuped: {covariate_days: 1}
      - key: welcome-coupon
        version: 1
        unit: person
        coverage: 1.0
        variants:
          - {key: c10, weight: 0.5}
          - {key: c20, weight: 0.5}
        start: 2026-11-01T00:00:00Z
        assign_on: [register, login]
        conversion: {event_type: purchase, window: 7d}
        revenue: {event_type: purchase, window: 7d}
    """)


def test_experiment_statistics_in_the_job(tmp_path) -> None:
    path = tmp_path / "experiments.yaml"
    path.write_text(DEFINITIONS)
    settings = make_settings(flink={"parallelism": 2}, experiments={"definitions_file": str(path)})
    defs = load_definitions(path)
    device_defs = [d for d in defs if d.unit == "device"]
    n = fresh_names()
    cfg = GeneratorConfig(seed=21, persons=150, events=4000, topic_prefix=n.topic_prefix, partitions=2)
    produce(settings, cfg, name=n.tag, progress=False, expected="none")
    pseudo = _Pseudonyms(settings.pii)
    seen: set[str] = set()
    events = []
    for r in generate(cfg, settings.job):
        e = decode(r.value, r.timestamp_ms, settings.job, pseudo)
        if isinstance(e, str) or e.event_id in seen:
            continue
        seen.add(e.event_id)
        device = dict(e.ids).get("device_id")
        events.append((e.event_type, e.ts, device, e.amount if e.event_type == "purchase" else None, None, None))
    want = _quantized(oracle(device_defs, events))
    assert sum(v[0] for v in want.values()) > 50 and sum(v[1] for v in want.values()) > 0
    run_events_job(settings, RunOptions(bounded=True, group=n.group, topic_pattern=n.topic_pattern, dlq_topic=n.dlq,
                                        redis_prefix=n.prefix, hbase_prefix=n.prefix, resume=False, job_name=n.job,
                                        hbase=False))
    store = RedisExperiments(settings.redis, prefix=n.prefix)
    try:
        got = {}
        for variant, s in store.read_stats("browse-banner").items():
            got[("browse-banner", variant)] = s
        assert {k: (v.n, v.conversions) for k, v in got.items()} == {k: (v[0], v[1]) for k, v in want.items()}
        raw = {k: store.client.hgetall(f"{n.prefix}:exp:browse-banner:{k[1]}") for k in want}
        assert {k: (v["rev_sum"], v["cov_sum"]) for k, v in raw.items()} == {
            k: (str(v[2]), str(v[4])) for k, v in want.items()}
        person = store.read_stats("welcome-coupon")
        assert sum(s.n for s in person.values()) > 20
        assert all(0 <= s.conversions <= s.n for s in person.values())
    finally:
        for key in store.client.scan_iter(match=f"{n.prefix}:*", count=1000):
            store.client.delete(key)
        store.client.close()
