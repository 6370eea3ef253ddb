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

from connectors.hbase_store import HBaseStore, derive_profile_hash
from connectors.redis_store import RedisStore
from operators.identity import IdentityRules
from operators.profile_windows import evaluate
from tests.helpers import counter_mismatches, fresh_names, make_settings, profile_mismatches, read_topics
from zhongtai.devtools.generator import GeneratorConfig, expected, generate
from zhongtai.devtools.generator.model import IDENTITY_NOISE
from zhongtai.devtools.generator.oracle import expected_identity
from zhongtai.devtools.generator.produce import produce
from zhongtai.jobs.runner import RunOptions, run_events_job

pytestmark = [pytest.mark.stack, pytest.mark.flink]


def _read_all(settings, topic: str) -> list[bytes]:
    return [m.value() for m in read_topics(settings, [topic])]


def _pii_values(records) -> set[str]:
    """Every raw phone and e-mail of the stream, as sent and in their normalised forms."""
    from operators.pii import normalise_email, normalise_phone

    out: set[str] = set()
    for r in records:
        try:
            ids = orjson.loads(r.value).get("ids")
        except (orjson.JSONDecodeError, AttributeError):
            continue
        if not isinstance(ids, dict):
            continue
        for t, norm in (("phone", normalise_phone), ("email", normalise_email)):
            v = ids.get(t)
            if isinstance(v, str) and len(v.strip()) >= 5:
                n = norm(v)
                out |= {v.strip(), n, n.lstrip("+")}
    return {v for v in out if len(v) >= 5}


def _pii_leaks(settings, prefix: str, topics: list[str], values: set[str]) -> list[str]:
    """Where a raw phone/e-mail appears in what the job wrote: Redis keys and values under ``prefix``,
    every HBase cell of the prefix's tables, every record (value and headers) of ``topics``."""
    import happybase

    texts: list[tuple[str, str]] = []
    r = RedisStore(settings.redis, prefix=prefix)
    try:
        for key in r.client.scan_iter(match=f"{prefix}:*", count=1000):
            kind = r.client.type(key)
            val = {"hash": r.client.hgetall, "set": r.client.smembers, "string": r.client.get}.get(kind, str)(key)
            texts.append((f"redis {key}", f"{key} {val}"))
    finally:
        r.close()
    conn = happybase.Connection(settings.hbase.host, settings.hbase.port, table_prefix=prefix,
                                table_prefix_separator="_")
    try:
        for table in ("profile", "identity", "actions"):
            for row, cells in conn.table(table).scan():
                texts.append((f"hbase {table} {row!r}", repr((row, cells))))
    finally:
        conn.close()
    for topic in topics:
        for v in _read_all(settings, topic):
            texts.append((f"kafka {topic}", v.decode("utf-8", "replace")))
    return [f"{where}: {v}" for where, text in texts for v in values if v in text][:20]


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
        # Tags: evaluated on every profile change and on event-time timers. A flip due after the last
        # watermark (newest event time minus the allowed lateness) cannot have happened; one due before
        # it has happened or not, depending on how far the periodic watermark got before the bounded
        # input ended (timers fired by the end-of-input watermark are ignored: docs/tags.md; exact
        # timer flips are tested in tests/pipeline/test_tags_job.py with explicit watermark drivers).
        from operators.tags import TAGS_FILE, TagSet

        tagset = TagSet.load(TAGS_FILE)
        final_wm = max(int(p["last_seen"]) for p in want["profiles"].values()) - settings.job.watermark_delay_ms
        got_tags = {pid: store.tags_of(pid) for pid in want["profiles"]}
        want_tags = {}
        for pid, prof in want["profiles"].items():
            last = int(prof["last_seen"])
            at_last = sorted(tagset.evaluate(prof, last))
            flip = tagset.next_flip_ms(prof, last)
            after = sorted(tagset.evaluate(prof, flip)) if flip is not None and flip <= final_wm else at_last
            want_tags[pid] = got_tags[pid] if got_tags[pid] in (at_last, after) else at_last
        assert got_tags == want_tags
        assert any(t for t in want_tags.values() if "high_value" in t)  # the check has teeth
        assert sorted(store.tag_members("high_value")) == sorted(p for p, t in want_tags.items() if "high_value" in t)
        assert {pid: sorted(hb.tags(pid)) for pid in some} == {pid: want_tags[pid] for pid in some}
        # Changes: JSON records, merges among them, each naming persons of the final mapping or merged away.
        changes = [orjson.loads(v) for v in _read_all(settings, changes_topic)]
        kinds = {c["kind"] for c in changes}
        assert "merge" in kinds and "attach" in kinds
        assert all(set(c) == {"kind", "person", "other", "identifiers", "ts_ms", "cause"} for c in changes)
        # PII: no raw or normalised phone / e-mail anywhere the job wrote (the DLQ is the exception by
        # design: it keeps the original bytes of the bad events, docs/semantics.md).
        values = _pii_values(records)
        assert len(values) > 50
        topics = [changes_topic, settings.kafka.topics.tag_changes, settings.kafka.topics.control_results]
        assert _pii_leaks(settings, n.prefix, topics, values) == []
        # negative control: the scan finds a value that is there
        store.client.set(f"{n.prefix}:leak", sorted(values)[0])
        assert _pii_leaks(settings, n.prefix, [], values) != []
    finally:
        store.delete_prefix()
        store.close()
        hb.close()


def test_control_block_and_split_re_derive_persons_and_profiles() -> None:
    """Identity control messages on the control topic, taken by the running job: a kiosk device is
    blocked and a cookie split off; the final graph and every profile equal the batch resolution under
    the same overlay. A broken message is rejected with its reason and changes nothing."""
    from confluent_kafka import Producer

    from operators.identity import resolve_batch
    from zhongtai.devtools.generator.identity import kiosk_devices
    from zhongtai.devtools.generator.oracle import observations

    settings = make_settings(flink={"parallelism": 2})
    n = fresh_names()
    cfg = GeneratorConfig(seed=5, persons=120, events=3000, topic_prefix=n.topic_prefix, partitions=2,
                          **IDENTITY_NOISE)
    produce(settings, cfg, name=n.tag, progress=False, expected="none")
    records = list(generate(cfg, settings.job))
    obs = observations(records, settings.job, settings.pii)
    rules = IdentityRules.from_settings(settings.identity, settings.pii)
    before = resolve_batch(obs, rules)
    kiosk = next(f"device_id:{k}" for k in kiosk_devices(cfg) if f"device_id:{k}" in before)
    some_cookie = next(i for i in sorted(before) if i.startswith("cookie_id:")
                       and sum(p == before[i] for p in before.values()) > 2)
    overlay = rules.with_blocked([kiosk]).with_isolated([some_cookie])
    after = resolve_batch(obs, overlay)
    assert after != before  # the commands matter (negative control for the assertions below)

    from zhongtai.jobs.runner import ensure_control_topics

    ensure_control_topics(settings, settings.kafka.topics.control, settings.kafka.topics.control_results)
    p = Producer({"bootstrap.servers": settings.kafka.bootstrap})
    for msg in ({"kind": "identity", "op": "block", "identifier": kiosk, "version": 1, "ts_ms": 1},
                {"kind": "identity", "op": "explode", "identifier": kiosk, "version": 2, "ts_ms": 2},
                {"kind": "identity", "op": "split", "identifier": some_cookie, "version": 3, "ts_ms": 3}):
        p.produce(settings.kafka.topics.control, orjson.dumps(msg))
    p.flush(10)

    def person_of(e):
        # The anchor is fixed when the event is decoded (its strongest statically clean identifier); an
        # anchor blocked later belongs to no person, so its events leave every profile (docs/identity.md).
        anchor = rules.clean_ids(e.ids)[0]
        return after.get(anchor, "none")

    want = expected(records, settings.job, settings.pii, person_of=person_of)
    run_events_job(settings, RunOptions(bounded=True, group=n.group, topic_pattern=n.topic_pattern, dlq_topic=n.dlq,
                                        identity_topic=n.dlq + ".identity", redis_prefix=n.prefix,
                                        hbase_prefix=n.prefix, resume=False, job_name=n.job))
    store = RedisStore(settings.redis, prefix=n.prefix)
    try:
        results = [orjson.loads(v) for v in _read_all(settings, settings.kafka.topics.control_results)]
        assert [(r["op"], r["status"]) for r in results] == [("block", "applied"), ("explode", "rejected"),
                                                            ("split", "applied")], results
        assert "op" in results[1]["reason"]
        assert kiosk not in store.id_mapping()
        assert store.id_mapping() == after
        profiles = {k: v for k, v in want["profiles"].items() if k != "none"}
        assert profile_mismatches(profiles, store.profile) == []
    finally:
        store.delete_prefix()
        store.close()
