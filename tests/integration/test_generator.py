"""The synthetic stream: deterministic, faults at their exact counts, labels that an independent
reading of the bytes (the oracle) agrees with, duplicates behind their originals.

Pure: no Kafka. The streams are small (tens of thousands of records) so the module runs in seconds.
"""

from __future__ import annotations

import zlib
from collections import Counter, defaultdict

import pytest

from config.settings import JobSettings
from operators.pii import normalise_email, normalise_phone
from zhongtai.devtools.generator import DLQ_REASONS, FAULT_CLASSES, GeneratorConfig, Oracle, generate
from zhongtai.devtools.generator.faults import BAD_UTF8
from zhongtai.devtools.generator.model import fault_rates
from zhongtai.devtools.generator.oracle import decode
from zhongtai.devtools.generator.population import email_spellings, phone_spellings

JOB = JobSettings()
N = 30_000
#: Many faults of every class, every DLQ record also breaking a later check where one exists.
STRESS = GeneratorConfig(
    seed=7, persons=300, events=20_000, faults=fault_rates(0.3), edge_rate=0.05, compound_share=1.0
)


@pytest.fixture(scope="module")
def stream() -> list:
    return list(generate(GeneratorConfig(events=N)))


@pytest.fixture(scope="module")
def stress() -> list:
    return list(generate(STRESS))


def _dup_classes(records: list) -> Counter:
    """Classify each ``dup`` record as exact (same bytes as the first record of its event_id) or not."""
    first: dict[str, bytes] = {}
    out: Counter = Counter()
    pseudo = lambda t, v: v
    for r in records:
        e = decode(r.value, r.timestamp_ms, JOB, pseudo)
        if isinstance(e, str):
            continue
        if e.event_id not in first:
            first[e.event_id] = r.value
        elif r.kind == "dup":
            out["dup_exact" if first[e.event_id] == r.value else "dup_conflict"] += 1
    return out


# --- determinism ---------------------------------------------------------------------------------


def test_same_seed_same_bytes(stream):
    again = list(generate(GeneratorConfig(events=N)))
    assert again == stream


def test_other_seed_other_bytes(stream):
    other = list(generate(GeneratorConfig(seed=43, events=N)))
    assert len(other) == len(stream)
    assert sum(a.value == b.value for a, b in zip(other, stream, strict=True)) == 0


# --- counts and labels -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["stream", "stress"])
def test_every_fault_class_at_its_exact_count(name, request):
    records = request.getfixturevalue(name)
    cfg = GeneratorConfig(events=N) if name == "stream" else STRESS
    want = cfg.fault_counts()
    assert len(records) == cfg.events
    got = Counter(r.kind for r in records)
    for reason in DLQ_REASONS:
        assert got[reason] == want[reason] > 0, reason
    assert _dup_classes(records) == Counter(
        {"dup_exact": want["dup_exact"], "dup_conflict": want["dup_conflict"]}
    )
    assert got["ok"] == cfg.events - sum(want.values())


def test_default_rates_add_up_to_two_percent_bad():
    cfg = GeneratorConfig(events=100_000)
    assert sum(cfg.fault_counts().values()) == 2_000
    assert set(cfg.faults) == set(FAULT_CLASSES)
    assert GeneratorConfig(faults={"late": 0.01}).fault_counts()["oversized"] == 0
    with pytest.raises(ValueError, match="unknown fault"):
        GeneratorConfig(faults={"lateish": 0.01})


@pytest.mark.parametrize("name", ["stream", "stress"])
def test_oracle_reads_every_record_as_labelled(name, request):
    records = request.getfixturevalue(name)
    oracle = Oracle(JOB)
    wrong = [
        (r.kind, k, r.value[:200]) for r in records if (k := oracle.feed(r.value, r.timestamp_ms)) != r.kind
    ]
    assert wrong == []


def test_a_wrong_label_would_be_caught(stream):
    """Negative control: the comparison above notices a single mislabelled record."""
    i = next(i for i, r in enumerate(stream) if r.kind == "late")
    tampered = stream[:i] + [stream[i]._replace(kind="ok")] + stream[i + 1 :]
    oracle = Oracle(JOB)
    assert sum(oracle.feed(r.value, r.timestamp_ms) != r.kind for r in tampered) == 1


def _also_fails(r) -> set[str]:
    """Later checks a DLQ record fails besides its own, judged leniently from the bytes."""
    import json

    out = set()
    try:
        text = r.value.decode("utf-8")
    except UnicodeDecodeError:
        out.add("not_utf8")
        text = r.value.decode("utf-8", "replace")
    try:
        obj = json.loads(text)
    except ValueError:
        return out | {"malformed_json"}
    if isinstance(obj, dict) and type(obj.get("ts")) is int:
        if obj["ts"] > r.timestamp_ms + JOB.max_future_skew_ms:
            out.add("future_ts")
        if r.timestamp_ms - obj["ts"] > JOB.allowed_lateness_ms:
            out.add("late")
    return out - {r.kind}


def test_stress_has_records_that_fail_several_checks(stress):
    """So the label agreement above also proves the check order (first failing check wins)."""
    also = Counter((r.kind, extra) for r in stress if r.kind in DLQ_REASONS for extra in _also_fails(r))
    assert also[("oversized", "not_utf8")] > 0 and also[("oversized", "malformed_json")] > 0
    assert also[("not_utf8", "malformed_json")] > 0
    assert also[("missing_field:event_id", "late")] > 0
    assert also[("wrong_type:props.qty", "future_ts")] > 0


# --- placement ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["stream", "stress"])
def test_duplicates_follow_their_original_in_the_same_partition(name, request):
    records = request.getfixturevalue(name)
    where: dict[str, tuple[str, int, bytes, int]] = {}
    pseudo = lambda t, v: v
    dups = 0
    for pos, r in enumerate(records):
        e = decode(r.value, r.timestamp_ms, JOB, pseudo)
        if isinstance(e, str):
            continue
        if e.event_id in where:
            assert r.kind == "dup"
            topic, partition, key, first_pos = where[e.event_id]
            assert (r.topic, r.partition, r.key) == (topic, partition, key)
            assert pos > first_pos
            dups += 1
        else:
            assert r.kind == "ok"
            where[e.event_id] = (r.topic, r.partition, r.key, pos)
    assert dups == sum(r.kind == "dup" for r in records) > 0


def test_partition_topic_and_key(stream):
    cfg = GeneratorConfig(events=N)
    for r in stream:
        assert r.partition == zlib.crc32(r.key) % cfg.partitions
        assert r.topic in cfg.topics()
    assert {r.topic for r in stream} == {"zt.events.web", "zt.events.app", "zt.events.offline"}
    assert {cfg.topic_for(s) for s in ("store", "crm", "cs")} == {"zt.events.offline"}
    assert Counter(r.partition for r in stream).keys() == {0, 1}


def test_record_timestamps_nearly_in_order_per_partition(stream):
    """Within a partition a record timestamp is never more than 1.5 s below an earlier one."""
    high: dict[tuple[str, int], int] = defaultdict(int)
    worst = 0
    for r in stream:
        k = (r.topic, r.partition)
        worst = max(worst, high[k] - r.timestamp_ms)
        high[k] = max(high[k], r.timestamp_ms)
    assert 0 < worst < 1_500


def test_valid_events_cluster_in_sessions_and_span(stream):
    cfg = GeneratorConfig(events=N)
    pseudo = lambda t, v: v
    by_key: dict[bytes, list[int]] = defaultdict(list)
    delays = []
    for r in stream:
        if r.kind != "ok":
            continue
        e = decode(r.value, r.timestamp_ms, JOB, pseudo)
        assert cfg.start_ms <= e.ts < cfg.start_ms + cfg.span_ms + JOB.max_future_skew_ms
        by_key[r.key].append(e.ts)
        delays.append(r.timestamp_ms - e.ts)
    gaps = [b - a for ts in by_key.values() for a, b in zip(sorted(ts), sorted(ts)[1:])]
    assert sum(g <= 150_000 for g in gaps) / len(gaps) > 0.6  # a person's events come in bursts
    assert sum(0 <= d <= 3_000 for d in delays) / len(delays) > 0.97
    assert max(delays) == JOB.allowed_lateness_ms  # the boundary case "delay_equals_lateness"


def test_event_mix_and_purchase_fields(stream):
    pseudo = lambda t, v: v
    import json

    types: Counter = Counter()
    for r in stream:
        if r.kind != "ok":
            continue
        d = json.loads(r.value)
        types[d["event_type"]] += 1
        if d["event_type"] == "purchase":
            p = d["props"]
            assert p["order_id"].startswith("SO")
            assert str(p.get("qty", 1)) in ("1", "2", "3")
        assert not isinstance(decode(r.value, r.timestamp_ms, JOB, pseudo), str)
    assert (
        types["page_view"]
        > types["exposure"]
        > types["add_to_cart"]
        > types["purchase"]
        > types["register"]
        > 0
    )
    assert types["login"] > 0 and types["coupon_redeem"] > 0


def test_ids_mix_exercises_every_identifier_type(stream):
    import json

    seen: Counter = Counter()
    iso = 0
    for r in stream:
        if r.kind == "ok":
            d = json.loads(r.value)
            seen.update(k for k, v in d["ids"].items() if v)
            iso += isinstance(d["ts"], str)
    assert set(seen) >= {"user_id", "unionid", "openid", "phone", "email", "device_id", "cookie_id"}
    assert 0.05 < iso / len(stream) < 0.2


# --- raw PII spellings and bad bytes -----------------------------------------------------------------


def test_phone_and_email_spellings_normalise_to_one_value():
    assert {normalise_phone(s) for s in phone_spellings("13800138000")} == {"+8613800138000"}
    assert len(set(phone_spellings("13800138000"))) == 8
    assert {normalise_email(s) for s in email_spellings("wang.lei7@example.com")} == {"wang.lei7@example.com"}
    assert len(set(email_spellings("wang.lei7@example.com"))) == 5


@pytest.mark.parametrize("bad", BAD_UTF8)
def test_bad_utf8_sequences_are_invalid_between_ascii(bad):
    with pytest.raises(UnicodeDecodeError):
        (b'{"t": "a' + bad + b'b"}').decode("utf-8")


def test_limits_are_taken_from_the_job_settings():
    job = JobSettings(max_event_bytes=4_096, allowed_lateness_ms=2 * 3_600_000, max_future_skew_ms=0)
    cfg = GeneratorConfig(seed=3, persons=50, events=5_000, faults=fault_rates(0.2))
    records = list(generate(cfg, job))
    oracle = Oracle(job)
    assert all(oracle.feed(r.value, r.timestamp_ms) == r.kind for r in records)
    assert max(len(r.value) for r in records if r.kind == "ok") == 4_096
    # Negative control: the same stream judged with the default limits disagrees somewhere.
    default = Oracle(JOB)
    assert any(default.feed(r.value, r.timestamp_ms) != r.kind for r in records)


# --- identity noise and ground truth -------------------------------------------------------------------


def _digest(records) -> str:
    import hashlib

    h = hashlib.sha256()
    for r in records:
        h.update(r.topic.encode() + bytes([r.partition]) + r.key + r.value + str(r.timestamp_ms).encode() + r.kind.encode())
    return h.hexdigest()


def test_identity_noise_off_keeps_the_existing_stream_byte_for_byte():
    """Pinned digest, computed with the generator as it was before the identity options existed."""
    cfg = GeneratorConfig(seed=5, persons=80, events=3000)
    assert not cfg.identity_noise
    assert _digest(generate(cfg)) == "2f83b1066f932f67a3185ff88ce3a3c00cd05f22df8e766631178dca5be8d16c"
    # Negative control: any noise option changes it.
    assert _digest(generate(cfg.model_copy(update={"junk_id_share": 0.01}))) != _digest(generate(cfg))


NOISY = GeneratorConfig(
    seed=3, persons=300, events=15_000, shared_device_share=0.1, kiosks=2, kiosk_share=0.05,
    junk_id_share=0.03, late_share=0.03,
)


@pytest.fixture(scope="module")
def noisy() -> list:
    return list(generate(NOISY))


def _ok_events(records) -> list[dict]:
    import json

    return [json.loads(r.value) | {"_rec": r.timestamp_ms} for r in records if r.kind == "ok"]


def test_noisy_stream_is_still_labelled_exactly(noisy):
    oracle = Oracle(JOB)
    assert [r.kind for r in noisy] == [oracle.feed(r.value, r.timestamp_ms) for r in noisy]
    assert Counter(r.kind for r in noisy)["ok"] == NOISY.events - sum(NOISY.fault_counts().values())


def test_noise_shows_shared_devices_kiosks_junk_and_late_events(noisy):
    from zhongtai.devtools.generator.identity import JUNK, kiosk_devices

    users_of: dict[str, set] = defaultdict(set)
    junk = late = 0
    for d in _ok_events(noisy):
        ids = d["ids"]
        if "user_id" in ids and "device_id" in ids and ids["user_id"] != "-1":
            users_of[ids["device_id"]].add(ids["user_id"])
        junk += any((t, v) in JUNK for t, v in ids.items())
        ts = d["ts"] if isinstance(d["ts"], int) else None
        late += ts is not None and d["_rec"] - ts > 600_000
    kiosks = set(kiosk_devices(NOISY))
    shared = [dv for dv, us in users_of.items() if len(us) >= 2 and dv not in kiosks]
    assert len(shared) >= 5
    assert max(len(users_of[k]) for k in kiosks) >= 5
    ok = sum(r.kind == "ok" for r in noisy)
    assert 0.02 < junk / ok < 0.04
    assert 0.015 < late / ok < 0.04
    # Negative control: the same config without noise has none of it.
    plain = NOISY.model_copy(update={"shared_device_share": 0, "kiosk_share": 0, "junk_id_share": 0, "late_share": 0})
    assert not any(any((t, v) in JUNK for t, v in d["ids"].items()) for d in _ok_events(generate(plain)))


def test_ground_truth_covers_every_real_identifier_and_no_junk(noisy):
    from config.settings import PiiSettings
    from operators.pii import pseudonymise
    from zhongtai.devtools.generator.identity import JUNK, identity_truth, kiosk_devices, population
    from zhongtai.devtools.generator.oracle import observations

    def hashed_null(pii: PiiSettings) -> str:
        return pseudonymise("email", "null", pii.hmac_secret.get_secret_value())

    truth = identity_truth(NOISY)
    seen = {f"{t}:{v}" for o in observations(noisy, JOB, PiiSettings()) for t, v in o.ids}
    unknown = seen - truth.keys()
    # Only junk values (e-mail "null" as the job stores it: hashed) and the boundary case's "d-edge".
    pii = PiiSettings()
    junk = {f"{t}:{pseudonymise(t, v, pii.hmac_secret.get_secret_value())}" for t, v in JUNK}
    assert unknown <= junk | {"device_id:d-edge"} and "email:" + hashed_null(pii) in unknown
    assert {truth[f"device_id:{k}"] for k in kiosk_devices(NOISY)} == {"kiosk0", "kiosk1"}
    persons, owner = population(NOISY)
    device, o = next(iter(owner.items()))
    assert truth[f"device_id:{device}"] == f"person{o}"
    assert sum(device in p.devices for p in persons) >= 2


def test_kiosk_share_needs_kiosks():
    with pytest.raises(ValueError, match="kiosks"):
        GeneratorConfig(kiosk_share=0.1)


# --- producing (needs the local Kafka; skipped when it is not reachable) ------------------------------


def _kafka_or_skip(settings) -> None:
    import socket

    host, _, port = settings.kafka.bootstrap.split(",")[0].rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        pytest.skip(f"no Kafka at {settings.kafka.bootstrap} (`zhongtai stack up`)")


@pytest.mark.stack
@pytest.mark.parametrize("mode", ["after", "parallel"])
def test_produce_writes_each_partition_in_stream_order(tmp_path, mode):
    import json
    import uuid

    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient

    from config import load_settings
    from zhongtai.devtools.generator.produce import produce

    settings = load_settings(overrides={"stack": {"run_dir": str(tmp_path)}})
    _kafka_or_skip(settings)
    cfg = GeneratorConfig(
        seed=11,
        persons=100,
        events=3_000,
        faults=fault_rates(0.1),
        # Outside zt.events.* so a job reading the default topic pattern never sees test data.
        topic_prefix=f"zt.test.gen.{uuid.uuid4().hex[:8]}.",
    )
    report = produce(settings, cfg, progress=False, expected=mode)
    assert report.records == 3_000 and report.kinds == dict(
        sorted(Counter(r.kind for r in generate(cfg)).items())
    )

    want: dict[tuple[str, int], list] = defaultdict(list)
    for r in generate(cfg, settings.job):
        want[(r.topic, r.partition)].append((r.key, r.value, r.timestamp_ms))
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap,
            "group.id": "t-" + uuid.uuid4().hex,
            "enable.auto.commit": False,
        }
    )
    try:
        for (topic, partition), expected_records in want.items():
            consumer.assign([TopicPartition(topic, partition, 0)])
            got = []
            while len(got) < len(expected_records):
                msgs = consumer.consume(len(expected_records) - len(got), timeout=10)
                assert msgs, f"{topic}[{partition}]: only {len(got)} of {len(expected_records)} records"
                for m in msgs:
                    assert m.error() is None, m.error()
                    got.append((m.key(), m.value(), m.timestamp()[1]))
            assert got == expected_records, f"{topic}[{partition}] differs"
    finally:
        consumer.close()
        admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
        for fut in admin.delete_topics(cfg.topics(), operation_timeout=30).values():
            fut.result()

    expected_file = json.loads(report.expected_path.read_text())
    assert expected_file["meta"]["digest"] == report.digest
    assert expected_file["stats"]["received"] == 3_000
    assert expected_file["stats"]["dlq"] == sum(n for k, n in report.kinds.items() if k in DLQ_REASONS)
