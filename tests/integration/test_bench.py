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
    from zhongtai.devtools.generator import GeneratorConfig, generate
    from zhongtai.devtools.generator.oracle import _Pseudonyms, decode

    s = load_settings()
    pseudo = _Pseudonyms(s.pii)
    cfg = GeneratorConfig(events=20_000, faults={c: 0.01 for c in GeneratorConfig().faults})
    for r in generate(cfg, s.job):
        assert fast_decode(r.value, r.timestamp_ms, s.job, pseudo) == decode(r.value, r.timestamp_ms, s.job, pseudo)


def _tuned_full_differences(n_events: int, *, rules: bool = False, moves: bool = True) -> tuple[int, list[str]]:
    """``bench.tuned_full.consume`` over a generated stream (batches of 2,000 records, as Kafka would hand
    them) into Redis under a fresh prefix; every counter, the totals, every profile and the id map compared
    with the oracle. ``moves=False`` is the negative control: person buckets stay where an anchor's first
    event put them when the identity graph later merges or splits persons."""
    from bench.check import diff_counters, diff_profiles, diff_stats
    from bench.tuned_full import FullWork, consume, diff_id_map
    from connectors.redis_store import RedisStore
    from tests.helpers import fresh_names
    from zhongtai.devtools.generator import GeneratorConfig, generate
    from zhongtai.devtools.generator.oracle import Oracle, resolve_persons

    s = load_settings()
    cfg = GeneratorConfig(events=n_events)
    resolved, person_of = resolve_persons(generate(cfg, s.job), s.job, s.pii)
    oracle = Oracle(s.job, s.pii, person_of)
    records = [(r.value, r.timestamp_ms) for r in generate(cfg, s.job)]
    for value, ts in records:
        oracle.feed(value, ts)
    expected = oracle.result()
    store = RedisStore(s.redis, prefix=fresh_names().prefix)
    saved = FullWork.moves
    if not moves:
        FullWork.moves = lambda self, mappings: None  # type: ignore[method-assign]
    try:
        consume(s, (records[i:i + 2_000] for i in range(0, len(records), 2_000)), store, rules=rules)
        n, shown = diff_counters(store.all_counters(), expected["counters"])
        pn, pshown = diff_profiles(store, expected["profiles"])
        idn, idshown = diff_id_map(store.id_mapping(), resolved)
        stats = diff_stats(store.stats(), expected["stats"])
        return n + pn + idn + len(stats), shown + pshown + idshown + stats
    finally:
        FullWork.moves = saved  # type: ignore[method-assign]
        store.delete_prefix()
        store.close()


@pytest.mark.stack
def test_tuned_full_is_exact() -> None:
    """The full-work consumer writes the oracle's counters, totals, profiles and id map; without moving a
    person's buckets on merges (negative control) its profiles are wrong."""
    n, shown = _tuned_full_differences(20_000)
    assert n == 0, shown
    n, shown = _tuned_full_differences(20_000, moves=False)
    assert n > 0 and any(s.startswith("profile ") for s in shown)


@pytest.mark.stack
def test_tuned_full_with_rules_is_exact() -> None:
    n, shown = _tuned_full_differences(5_000, rules=True)
    assert n == 0, shown


@pytest.mark.stack
def test_bench_tuned_full_is_exact() -> None:
    """Through the bench: Kafka in, Redis out, checked by ``bench.run`` (counters, stats, profiles, id map)."""
    from bench.run import run_bench

    doc = run_bench(load_settings(), 5_000, ["tuned_full"], latency=False)
    c = doc["contenders"]["tuned_full"]
    assert c["profiles_checked"] > 0 and c["identifiers_checked"] > 0
    assert c["exact"] is True, c.get("differences")


def test_logic_probe_times_every_stage() -> None:
    """The logic probe runs the job's operators on a small stream: every stage is timed under its parent,
    one ``on_rows`` call per bundle, the state encoded per bundle and timer, and the operators are left
    unpatched afterwards."""
    import operators.person as person
    from bench.logic_probe import probe
    from operators.profile import Profile

    originals = (person.tag_step_memo, person.evaluate, Profile.apply, Profile.fields)
    doc = probe(load_settings(), 3_000, rules=True, bundle=500)
    st, c = doc["stages"], doc["counts"]
    for path in ("decode", "identity", "person.rows", "person.rows/profile.apply", "person.rows/tags",
                 "person.rows/rules", "person.timers", "state.encode"):
        assert st[path]["calls_per_event"] > 0, path
    assert st["decode"]["calls_per_event"] == 1.0
    assert round(st["person.rows"]["calls_per_event"] * c["records"]) == c["bundles"]
    assert round(st["state.encode"]["calls_per_event"] * c["records"]) <= c["bundles"] + c["timers"]
    assert c["identity_steps"] > 0 and c["m_rows"] > 0 and c["e_rows"] > 0
    assert 0 < doc["total_us_per_event"] < sum(s["incl_us_per_event"] for s in st.values())
    assert (person.tag_step_memo, person.evaluate, Profile.apply, Profile.fields) == originals


def test_every_contender_name_has_a_function() -> None:
    # job_rules and job-rocksdb once ended in a KeyError in the child (only "job" was dispatched)
    from bench.contender import contender_function
    from bench.run import CONTENDERS, EXTRA

    fns = {name: contender_function(name) for name in CONTENDERS + EXTRA}
    assert {n: f.__name__ for n, f in fns.items()} == {
        "job": "_run_job", "naive": "run_naive", "tuned": "run_tuned", "tuned_full": "run_tuned_full",
        "sql": "run_sql", "raw": "run_raw", "job-redis": "_run_job", "job-direct": "_run_job",
        "job-rocksdb": "_run_job", "job_rules": "_run_job", "tuned_full-rules": "run_tuned_full"}
    with pytest.raises(KeyError):  # negative control: an unknown name is not silently a job
        contender_function("tuned-full")
