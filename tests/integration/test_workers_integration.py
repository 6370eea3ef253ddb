"""Channel workers against the real Kafka and Redis, a real SMTP server (aiosmtpd) and real HTTP
servers: exact delivery counts, duplicates, retries, dead letters, receipts, rate limit, metrics.

    PYTHONPATH=. .venv/bin/python -m pytest -q tests/integration/test_workers_integration.py
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from connectors.channels.http import verify_signature
from tests.helpers import fresh_names
from tests.workers_env import (
    RecordingHttpServer,
    SmtpRecorder,
    cleanup,
    create,
    make_action,
    produce,
    read_topic,
    receipts,
    scrape,
    smtp_controller,
    topics_of,
    worker_settings,
    write_contacts,
)
from zhongtai.services.workers.worker import build_worker

pytestmark = [pytest.mark.stack]


def _run(settings, channel, max_messages, *, timeout_s=60.0, metrics=False):
    """Run a worker in this process until ``max_messages`` are settled; returns (stats, metrics)."""
    w = build_worker(settings, channel)
    stop = threading.Event()
    guard = threading.Timer(timeout_s, stop.set)
    guard.start()
    try:
        port = w.metrics.serve(0, addr="127.0.0.1") if metrics else None
        stats = w.run(max_messages=max_messages, stop=stop)
        scraped = scrape(port) if port else {}
    finally:
        guard.cancel()
        w.close()
    assert not stop.is_set(), f"worker did not settle {max_messages} messages within {timeout_s} s"
    return stats, scraped


@pytest.fixture
def env(tmp_path):
    """Fresh names; every topic made by ``make`` and the Redis prefix are deleted afterwards."""
    made = []

    def make(channel, **worker):
        names = fresh_names()
        s = worker_settings(names, tmp_path / f"contacts-{names.tag}.yaml", **worker)
        ts = topics_of(s, channel)
        create(s, ts)
        made.append((s, ts))
        return s

    yield make
    for s, ts in made:
        cleanup(s, ts)


def test_email_exactly_once_with_duplicates_retry_dead_letter_suppression_and_metrics(env, tmp_path):
    smtp = SmtpRecorder(reject={"bounce@example.com"}, defer_once={"slow@example.org"})
    ctl = smtp_controller(smtp)
    ctl.start()
    try:
        s = env("email", smtp={"host": "127.0.0.1", "port": ctl.port, "message_id_domain": "zt.test"},
                templates={"welcome": {"subject": "Welcome $person_id", "body": "Your coupon: $coupon_value"}})
        contacts = {f"p{i}": {"email": f"u{i}@example.com"} for i in range(10)}
        contacts |= {"p10": {"email": "bounce@example.com"}, "p11": {"email": "slow@example.org"},
                     "p12": {"phone": "+8613800000000"}, "p13": {"email": "x@example.com", "opt_out": ["email"]}}
        write_contacts(Path(s.worker.contacts.path), contacts)  # p14 is unknown
        acts = [make_action(i, "email", coupon_value=i) for i in range(15)]
        produce(s, topics_of(s, "email")[0], acts + [acts[0], acts[1], acts[2], b"{broken"])
        stats, m = _run(s, "email", 19, metrics=True)

        ids = {a.action_id for a in acts}
        got = Counter(msg["X-Zhongtai-Action-Id"] for msg in smtp.messages)
        assert got == Counter({f"{i:032x}": 1 for i in (*range(10), 11)})  # exactly once, duplicates skipped
        by_id = {msg["X-Zhongtai-Action-Id"]: msg for msg in smtp.messages}
        m3 = by_id[f"{3:032x}"]
        assert (m3["Message-ID"], m3["To"], m3["Subject"], m3.get_content().strip()) == (
            f"<{3:032x}@zt.test>", "u3@example.com", "Welcome p3", "Your coupon: 3")
        assert smtp.deferred == ["slow@example.org"]

        rs = receipts(s)
        assert Counter(r["action_id"] for r in rs) == Counter({a: 1 for a in ids})  # one receipt each
        st = {int(r["action_id"], 16): (r["status"], r["attempts"], r["reason"]) for r in rs}
        assert st[11] == ("delivered", 2, None)
        assert st[10][:2] == ("failed", 1) and st[10][2].startswith("permanent: smtp recipient refused 550")
        assert (st[12], st[13], st[14]) == (("suppressed", 1, "no_address"), ("suppressed", 1, "opted_out"),
                                            ("suppressed", 1, "no_contact"))
        assert all(st[i] == ("delivered", 1, None) for i in range(10))
        r3 = next(r for r in rs if r["action_id"] == f"{3:032x}")
        assert (r3["person_id"], r3["channel"], r3["provider_id"]) == ("p3", "email", f"<{3:032x}@zt.test>")

        dlq = read_topic(s, topics_of(s, "email")[1])
        reasons = sorted(h["reason"] for _, _, h in dlq)
        assert len(reasons) == 2 and reasons[0].startswith("invalid: not JSON")
        assert reasons[1] == "permanent: smtp recipient refused 550 5.1.1 no such user"

        assert (stats.delivered, stats.failed, stats.suppressed, stats.duplicates, stats.invalid) == (11, 1, 3, 3, 1)
        assert {k: v for k, v in m.items() if "_bucket" not in k and "_sum" not in k} == {
            "zhongtai_worker_delivered_total{outcome=first}": 11.0,
            "zhongtai_worker_failed_total{outcome=permanent}": 1.0,
            "zhongtai_worker_failed_total{outcome=invalid}": 1.0,
            "zhongtai_worker_retried_total{outcome=transient}": 1.0,
            "zhongtai_worker_suppressed_total{outcome=no_address}": 1.0,
            "zhongtai_worker_suppressed_total{outcome=opted_out}": 1.0,
            "zhongtai_worker_suppressed_total{outcome=no_contact}": 1.0,
            "zhongtai_worker_duplicates_total{outcome=duplicate}": 3.0,
            "zhongtai_worker_delivery_latency_seconds_count{outcome=delivered}": 11.0,
            "zhongtai_worker_delivery_latency_seconds_count{outcome=transient}": 1.0,
            "zhongtai_worker_delivery_latency_seconds_count{outcome=permanent}": 1.0,
        }

        # the whole topic re-read by another group: the ledger lets nothing through twice ...
        s2 = s.model_copy(update={"worker": s.worker.model_copy(update={"group": s.worker.group + "-again"})})
        again, _ = _run(s2, "email", 19)
        assert (again.delivered, len(smtp.messages), len(receipts(s))) == (0, 11, 15)
        # ... negative control: the same re-read without the idempotency record delivers again
        s3 = s.model_copy(update={"worker": s.worker.model_copy(update={"group": s.worker.group + "-off",
                                                                         "idempotency": False})})
        off, _ = _run(s3, "email", 19)
        assert off.delivered == 11 and len(smtp.messages) == 22
    finally:
        ctl.stop()


def _webhook_run(env, tmp_path, bad, good, *, max_parked, n=20):
    s = env("webhook", max_parked=max_parked, batch_size=1, backoff_base_ms=2_000, backoff_max_ms=2_000)
    contacts = {f"p{i}": {"webhook_url": f"{(bad if i % 4 == 0 else good).url}/hook"} for i in range(n)}
    write_contacts(Path(s.worker.contacts.path), contacts)
    acts = [make_action(i, "webhook") for i in range(n)]
    produce(s, topics_of(s, "webhook")[0], acts)
    _run(s, "webhook", n)
    return s, acts


def test_failing_webhook_host_does_not_stall_another_and_requests_are_signed(env, tmp_path):
    with RecordingHttpServer(status=503) as bad, RecordingHttpServer() as good:
        s, acts = _webhook_run(env, tmp_path, bad, good, max_parked=10_000)
        good_ids = {a.action_id for i, a in enumerate(acts) if i % 4}
        bad_ids = {a.action_id for i, a in enumerate(acts) if i % 4 == 0}
        assert good.accepted_keys() == Counter({a: 1 for a in good_ids})
        # the failing host was probed once per retry round, not once per parked action and round
        assert {r.headers["Idempotency-Key"] for r in bad.requests} <= bad_ids
        assert 3 <= len(bad.requests) < 3 * len(bad_ids)
        # every good delivery happened before the failing host's first retry: nothing waited on it
        first_retry = sorted(r.t for r in bad.requests)[1]
        assert max(r.t for r in good.requests) < first_retry
        for r in good.requests:
            body = orjson.loads(r.body)
            assert r.headers["Idempotency-Key"] == body["action_id"]
            assert verify_signature(b"whsec", r.headers["X-Zhongtai-Timestamp"], r.body,
                                    r.headers["X-Zhongtai-Signature"], now_s=time.time())
        rs = receipts(s)
        assert Counter(r["action_id"] for r in rs) == Counter({a.action_id: 1 for a in acts})
        assert {(r["status"], r["attempts"]) for r in rs if r["action_id"] in bad_ids} == {("failed", 3)}
        dlq = read_topic(s, topics_of(s, "webhook")[1])
        assert sorted(h["action_id"] for _, _, h in dlq) == sorted(bad_ids)
        for _, _, h in dlq:
            assert h["attempts"] == "3"
            assert h["reason"].startswith("retries_exhausted after 3 attempts: "), h["reason"]
            assert f"POST {bad.url}/hook: HTTP 503" in h["reason"], h["reason"]


def test_negative_control_without_parking_the_failing_host_stalls_the_other(env, tmp_path):
    with RecordingHttpServer(status=503) as bad, RecordingHttpServer() as good:
        _webhook_run(env, tmp_path, bad, good, max_parked=1, n=4)
        first_retry = sorted(r.t for r in bad.requests)[1]
        assert max(r.t for r in good.requests) > first_retry


def _rate_run(env, tmp_path, server, per_s, n=25):
    s = env("webhook", default_rate={"per_s": per_s, "burst": 1}, shared_rate_limit=True)
    write_contacts(Path(s.worker.contacts.path), {f"p{i}": {"webhook_url": server.url} for i in range(n)})
    produce(s, topics_of(s, "webhook")[0], [make_action(i, "webhook") for i in range(n)])
    _run(s, "webhook", n)
    return sorted(r.t for r in server.requests)


def _violations(stamps, per_s, burst, slack_s=0.02):
    """Pairs (i, j) that arrived closer than a bucket of ``per_s``/``burst`` allows."""
    return [(i, j) for i in range(len(stamps)) for j in range(i + 1, len(stamps))
            if stamps[j] - stamps[i] < (j - i - burst) / per_s - slack_s]


def test_rate_limit_respected_and_unlimited_control_violates_it(env, tmp_path):
    with RecordingHttpServer() as server:
        stamps = _rate_run(env, tmp_path, server, per_s=20)
        assert len(stamps) == 25 and _violations(stamps, 20, 1) == []
    with RecordingHttpServer() as server:  # negative control: no effective limit
        stamps = _rate_run(env, tmp_path, server, per_s=100_000)
        assert len(stamps) == 25 and len(_violations(stamps, 20, 1)) > 50
