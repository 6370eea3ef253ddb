"""Experiments defined at run time through the control topic, and tag targeting, in the real event job.

One unbounded job (Kafka -> Flink -> Redis) starts with an EMPTY definitions file and:

1. batch 1 (before any experiment) is processed; then ``live`` (device unit, stream assignment at
   ``page_view``, start in event time after batch 1) and ``gone`` arrive on the control topic and
   are ``applied``; a broken version 2 of ``live`` is ``rejected`` with its reason (the old version
   keeps counting); a ``stop`` (version 3, ``stop_ms`` in event time) is applied. Batch 2 then
   runs through the job, and the Redis statistics of ``live`` and ``gone`` equal the plain-Python
   oracle of tests/pipeline/test_experiments_pipeline.py over batch 2 exactly (the cut is the definition's
   start in event time: batch 1 is before it, so the result does not depend on timing);
2. a ``delete`` of ``gone`` retracts its units: every variant drops to zero, the meta hash says deleted;
3. ``vip-offer`` (person unit, assigned at ``login``, targeting ``'high_value' in tags``): batch 1
   made ten persons ``high_value`` (big purchases) and ten not; all twenty log in during batch 2.
   Exactly the targeted ones are exposed (oracle over their events only), none of the others.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest

from connectors.control import publish
from connectors.redis_experiments import STAT_FIELDS, RedisExperiments
from connectors.redis_store import RedisStore
from operators.experiments.definitions import ExperimentRegistry, control_message, parse_definitions
from tests.helpers import fresh_names, make_settings, read_topics, wait_until
from tests.pipeline.test_experiments_pipeline import _quantized, oracle
from zhongtai.jobs.runner import RunOptions, run_events_job

pytestmark = [pytest.mark.stack, pytest.mark.flink]

H = 3_600_000
DAY = 24 * H
NOW = int(time.time() * 1000) // DAY * DAY
S = NOW - 3 * DAY  # batch 1: [S, S + 1h); batch 2 and the experiments' start: S + 1 day
START = S + DAY
STOP = START + 90 * 60_000  # live is stopped at START + 90 min: later triggers do not expose


def definitions_yaml() -> str:
    return f"""
experiments:
  - key: live
    version: 1
    unit: device
    variants: [control, banner]
    start: {START}
    assign_on: [page_view]
    conversion: {{event_type: purchase, window: 1h}}
    revenue: {{event_type: purchase, window: 1h}}
  - key: gone
    version: 1
    unit: device
    variants: [{{key: a, weight: 0.3}}, {{key: b, weight: 0.7}}]
    start: {START}
    assign_on: [add_to_cart]
    conversion: purchase
    revenue: purchase
  - key: vip-offer
    version: 1
    unit: person
    variants: [plain, gift]
    targeting: "'high_value' in tags"
    start: {START}
    assign_on: [login]
    conversion: {{event_type: purchase, window: 2h}}
    revenue: {{event_type: purchase, window: 2h}}
"""


def _event(i: int, tag: str, etype: str, ts: int, ids: dict, price: str | None = None) -> dict:
    """One envelope; ``tag`` makes the event id unique per test and batch."""
    props = {"price": price, "qty": 1} if price is not None else {}
    return {"event_id": f"{tag}-{i}", "event_type": etype, "ts": ts, "ids": ids, "props": props, "source": "web"}


def batch_1(tag: str) -> list[dict]:
    """Device events before the start (never counted), and the persons' purchases that set their tags:
    u0..u9 buy for 1500 (high_value: gmv_90d >= 1000), u10..u19 for 20."""
    out = []
    for d in range(30):
        out.append(_event(len(out), tag, "page_view", S + d * 1000, {"device_id": f"d{d}"}))
        out.append(_event(len(out), tag, "purchase", S + d * 1000 + 500, {"device_id": f"d{d}"}, "30.00"))
    for u in range(20):
        out.append(_event(len(out), tag, "purchase", S + 60_000 + u, {"user_id": f"u{u}"},
                          "1500.00" if u < 10 else "20.00"))  # fmt: skip
    return out


def batch_2(tag: str) -> list[dict]:
    """After the start: devices view, add to cart and buy (some after live's stop); every person logs
    in and half of them buy 10.00 (small: no tag changes)."""
    out = []
    for d in range(30):
        t = START + d * 5 * 60_000  # d18.. view after the stop (START + 90 min)
        out.append(_event(len(out), tag, "page_view", t, {"device_id": f"d{d}"}))
        if d % 2 == 0:
            out.append(_event(len(out), tag, "add_to_cart", t + 1000, {"device_id": f"d{d}"}))
        if d % 3 == 0:
            out.append(_event(len(out), tag, "purchase", t + 20 * 60_000, {"device_id": f"d{d}"}, f"{10 + d}.50"))
        if d % 5 == 0:
            out.append(_event(len(out), tag, "purchase", t + 2 * H, {"device_id": f"d{d}"}, "99.00"))  # after 1h
    for u in range(20):
        t = START + 10 * 60_000 + u * 1000
        out.append(_event(len(out), tag, "login", t, {"user_id": f"u{u}"}))
        if u % 2 == 0:
            out.append(_event(len(out), tag, "purchase", t + 60_000, {"user_id": f"u{u}"}, "10.00"))
    return out


def _produce(settings, topic: str, events: list[dict]) -> None:
    from confluent_kafka import Producer

    from connectors.kafka_admin import create_topics

    create_topics(settings, [topic], partitions=1)
    p = Producer({"bootstrap.servers": settings.kafka.bootstrap})
    for e in events:
        p.produce(topic, key=e["event_id"].encode(), value=json.dumps(e).encode(), timestamp=e["ts"])  # kts = event time
    assert p.flush(30) == 0


def _as_tuples(events: list[dict], unit_of) -> list[tuple]:
    out = []
    for e in events:
        amount = Decimal(e["props"]["price"]) if e["event_type"] == "purchase" else None
        out.append((e["event_type"], e["ts"], unit_of(e), amount, None, None))
    return out


def _until_equal(read, want, timeout: float = 90.0, show=None) -> None:
    """Poll ``read()`` until it equals ``want``; then (or at the timeout) assert it, with the diff."""
    deadline = time.monotonic() + timeout
    while read() != want and time.monotonic() < deadline:
        time.sleep(1.0)
    assert read() == want, show() if show else ""


def _results(settings) -> list[dict]:
    recs = read_topics(settings, [settings.kafka.topics.control_results], idle_polls=1)
    out = [json.loads(r.value()) for r in recs]
    return [r for r in out if r.get("kind") == "experiment"]


def _stats(store: RedisExperiments, key: str, variants) -> dict:
    out = {}
    for v in variants:
        h = store.raw(key, v)
        if h and int(h["units"]) > 0:
            out[(key, v)] = tuple(int(h[f]) if f in ("units", "converted") else Decimal(h[f]) for f in STAT_FIELDS)
    return out


def test_definitions_from_the_control_topic_and_tag_targeting(tmp_path) -> None:
    empty = tmp_path / "experiments.yaml"
    empty.write_text("experiments: []\n")
    settings = make_settings(flink={"parallelism": 1}, experiments={"definitions_file": str(empty)})
    n = fresh_names()
    live, gone, vip = parse_definitions(definitions_yaml())
    b1, b2 = batch_1(f"{n.tag}-1"), batch_2(f"{n.tag}-2")
    topic = f"{n.topic_prefix}web"
    _produce(settings, topic, b1)
    opts = RunOptions(bounded=False, group=n.group, topic_pattern=n.topic_pattern, dlq_topic=n.dlq,
                      redis_prefix=n.prefix, hbase_prefix=n.prefix, resume=False, job_name=n.job, hbase=False)
    client = run_events_job(settings, opts, wait=False)
    store = RedisExperiments(settings.redis, prefix=n.prefix)
    totals = RedisStore(settings.redis, prefix=n.prefix)
    try:
        wait_until("batch 1", lambda: totals.stats().get("unique") == len(b1), show=totals.stats)
        pids = {f"u{u}": wait_until(f"person of u{u}", lambda u=u: totals.person_of(f"user_id:u{u}")) for u in range(20)}
        vips = {u for u in range(10)}
        wait_until("high_value tags", lambda: all(("high_value" in totals.tags_of(pids[f"u{u}"])) == (u in vips)
                                             for u in range(20)))  # fmt: skip
        broken = {**live.to_dict(), "variants": [{"key": "control", "weight": 0.6}, {"key": "banner", "weight": 0.5}]}
        publish(settings, [
            control_message("upsert", "live", 1, live), control_message("upsert", "gone", 1, gone),
            control_message("upsert", "vip-offer", 1, vip),
            {"kind": "experiment", "op": "upsert", "key": "live", "version": 2, "definition": broken},
            control_message("stop", "live", 3, stop_ms=STOP),
        ])  # fmt: skip
        wait_until("5 control results", lambda: len(_results(settings)) >= 5)
        results = _results(settings)
        results.sort(key=lambda r: (r["key"], r["version"]))
        assert [(r["key"], r["op"], r["version"], r["status"]) for r in results] == [
            ("gone", "upsert", 1, "applied"), ("live", "upsert", 1, "applied"), ("live", "upsert", 2, "rejected"),
            ("live", "stop", 3, "applied"), ("vip-offer", "upsert", 1, "applied")]  # fmt: skip
        assert "sum to 1.1" in results[2]["reason"], results[2]
        # The registry the job folded: live stopped at STOP (version 3), the broken version 2 left out.
        reg = ExperimentRegistry()
        for m in (control_message("upsert", "live", 1, live), control_message("upsert", "gone", 1, gone),
                  control_message("stop", "live", 3, stop_ms=STOP)):
            reg, _ = reg.apply(m, 0)
        live_v3 = reg.definitions["live"]
        assert live_v3.experiment.stop_ms == STOP and live_v3.experiment.weights == live.experiment.weights
        wait_until("meta of live v3", lambda: store.client.hget(store.meta_key("live"), "version") == "3")

        _produce(settings, topic, b2)
        device_events = _as_tuples([e for e in b2 if "device_id" in e["ids"]], lambda e: e["ids"]["device_id"])
        want = _quantized(oracle([live_v3, gone], device_events))
        assert {k[0] for k in want} == {"live", "gone"} and sum(v[1] for v in want.values()) > 0
        variants = {"live": live.variations, "gone": gone.variations}

        _until_equal(lambda: {**_stats(store, "live", variants["live"]), **_stats(store, "gone", variants["gone"])},
                     want, show=lambda: (totals.stats(), sorted(store.client.scan_iter(match=f"{n.prefix}:exp*"))))
        # Stopped: no view at or after STOP exposes (d18..d29 view later).
        assert sum(v[0] for k, v in want.items() if k[0] == "live") == 18

        # 3: targeting. The oracle over the targeted persons' events only; nobody else is exposed.
        person_events = _as_tuples([e for e in b2 if "user_id" in e["ids"]], lambda e: pids[e["ids"]["user_id"]])
        targeted = {pids[f"u{u}"] for u in vips}
        want_vip = _quantized(oracle([vip], [e for e in person_events if e[2] in targeted]))
        assert sum(v[0] for v in want_vip.values()) == 10  # coverage 1: every targeted person
        assert _quantized(oracle([vip], person_events)) != want_vip  # without targeting: 20 persons
        _until_equal(lambda: _stats(store, "vip-offer", vip.variations), want_vip)

        # 2: delete retracts the experiment's units.
        publish(settings, [control_message("delete", "gone", 2)])
        wait_until("delete applied", lambda: any(r["key"] == "gone" and r["op"] == "delete" and r["status"] == "applied"
                                            for r in _results(settings)))  # fmt: skip
        wait_until("gone at zero", lambda: all(store.raw("gone", v).get("units") == "0" for v in gone.variations))
        assert store.client.hget(store.meta_key("gone"), "status") == "deleted"
        assert _stats(store, "live", variants["live"]) == {k: v for k, v in want.items() if k[0] == "live"}
    finally:
        client.cancel().result()
        for key in store.client.scan_iter(match=f"{n.prefix}:*", count=1000):
            store.client.delete(key)
        store.close()
        totals.close()
