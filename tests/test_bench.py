"""The bench harness's contenders compute exactly the oracle's counters (a correctness test, not timed).

Runs ``bench.run.run_bench`` on a small fresh stream (5k events, default fault mix) with the naive and
tuned consumers, raw consumption and the event job, and asserts every checked contender is exact.
"""

from __future__ import annotations

import pytest

from config.settings import load_settings


@pytest.mark.stack
def test_bench_hand_written_consumers_are_exact() -> None:
    from bench.run import run_bench

    doc = run_bench(load_settings(), 5_000, ["naive", "tuned", "raw"], latency=False)
    c = doc["contenders"]
    assert c["raw"]["records"] == 5_000
    for name in ("naive", "tuned"):
        assert c[name]["counters_checked"] > 0
        assert c[name]["exact"] is True, (name, c[name].get("differences"))


@pytest.mark.stack
@pytest.mark.flink
def test_bench_job_is_exact() -> None:
    from bench.run import run_bench

    doc = run_bench(load_settings(), 5_000, ["job"], latency=False)
    job = doc["contenders"]["job"]
    assert job["profiles_checked"] > 0
    assert job["exact"] is True, job.get("differences")


def test_fast_decode_agrees_with_the_oracle() -> None:
    """The tuned consumer's orjson fast path gives the oracle's answer on every generated record."""
    from bench.fastdecode import fast_decode
    from zhongtai.generator import GeneratorConfig, generate
    from zhongtai.generator.oracle import _Pseudonyms, decode

    s = load_settings()
    pseudo = _Pseudonyms(s.pii)
    cfg = GeneratorConfig(events=20_000, faults={c: 0.01 for c in GeneratorConfig().faults})
    for r in generate(cfg, s.job):
        assert fast_decode(r.value, r.timestamp_ms, s.job, pseudo) == decode(r.value, r.timestamp_ms, s.job, pseudo)
