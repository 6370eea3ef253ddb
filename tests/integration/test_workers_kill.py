"""kill -9 of a ``zhongtai worker`` subprocess mid-batch, twice, then a restart that finishes.

The webhook server counts what it accepts by ``Idempotency-Key``. With the idempotency record
every action arrives exactly once, except that an action whose delivery was in flight at the
kill may arrive a second time (same key, flagged ``in_doubt`` in the ledger: the provider-side
dedup case of docs/workers.md), at most one per kill; every action has exactly one receipt.

Negative control: the same kills with ``worker.idempotency: false`` re-deliver the whole
uncommitted part of the batch: many actions arrive twice without being in doubt.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import orjson
import pytest

from connectors.channels.redis_state import RedisLedger, redis_client
from tests.helpers import ROOT, free_port, fresh_names
from tests.workers_env import (
    RecordingHttpServer,
    cleanup,
    create,
    make_action,
    produce,
    receipts,
    scrape,
    settings_yaml,
    topics_of,
    worker_settings,
    write_contacts,
)

pytestmark = [pytest.mark.stack]

N = 150
KILL_AT = (23, 81)  # accepted deliveries at which the worker is killed (mid-batch: batch_size 40)


def _start(config: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env = {k: v for k, v in env.items() if not k.startswith("ZT__")}
    return subprocess.Popen(
        [sys.executable, "-m", "zhongtai.cli", "--config", str(config), "worker", "--channel", "webhook",
         "--idle-exit-s", "6"],
        cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )


def _wait(pred, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.005)


def _kill_run(tmp_path: Path, idempotency: bool):
    names = fresh_names()
    with RecordingHttpServer(delay_s=0.01) as server:
        s = worker_settings(names, tmp_path / f"contacts-{names.tag}.yaml", idempotency=idempotency,
                            batch_size=40, lease_ms=4_000, webhook={"timeout_s": 3.0})
        topics = topics_of(s, "webhook")
        create(s, topics)
        try:
            write_contacts(Path(s.worker.contacts.path), {f"p{i}": {"webhook_url": f"{server.url}/h"} for i in range(N)})
            produce(s, topics[0], [make_action(i, "webhook") for i in range(N)])
            config = settings_yaml(s, tmp_path / f"worker-{names.tag}.yaml")
            log = tmp_path / f"worker-{names.tag}.log"
            for at in KILL_AT:
                p = _start(config, log)
                try:
                    _wait(lambda at=at, p=p: len(server.accepted()) >= at or p.poll() is not None, 60, f"{at} deliveries")
                    assert p.poll() is None, f"worker exited early: {log.read_text()[-2000:]}"
                finally:
                    os.kill(p.pid, signal.SIGKILL)
                    p.wait()
            p = _start(config, log)
            assert p.wait(timeout=90) == 0, log.read_text()[-3000:]
            keys = server.accepted_keys()
            rs = receipts(s)
            ledger = RedisLedger(redis_client(s.redis), s.redis.prefix, "webhook", 60)
            in_doubt = {a for a, r in ledger.records().items() if r.in_doubt}
            ledger.client.close()
            return keys, rs, in_doubt, log.read_text()
        finally:
            cleanup(s, topics)


def test_kill9_mid_batch_delivers_every_action_exactly_once(tmp_path):
    keys, rs, in_doubt, log = _kill_run(tmp_path, idempotency=True)
    ids = {f"{i:032x}" for i in range(N)}
    assert set(keys) == ids, log[-2000:]
    twice = {a for a, n in keys.items() if n > 1}
    assert all(keys[a] == 2 for a in twice) and twice <= in_doubt and len(in_doubt) <= len(KILL_AT), (
        twice, in_doubt, log[-3000:])
    assert sum(keys.values()) == N + len(twice)
    assert Counter(r["action_id"] for r in rs) == Counter({a: 1 for a in ids})
    assert {r["status"] for r in rs} == {"delivered"}


def test_negative_control_kill9_without_idempotency_record_duplicates(tmp_path):
    keys, rs, in_doubt, _ = _kill_run(tmp_path, idempotency=False)
    ids = {f"{i:032x}" for i in range(N)}
    assert set(keys) == ids  # nothing lost ...
    twice = {a for a, n in keys.items() if n > 1}
    assert len(twice) >= 10 and not in_doubt  # ... but the uncommitted part of each batch went out again
    # (receipts stay one per action: they are bound to the offsets' transaction, not to the record)
    assert Counter(r["action_id"] for r in rs) == Counter({a: 1 for a in ids})


def test_cli_worker_coupon_serves_exact_metrics_over_http(tmp_path):
    """``zhongtai worker --channel coupon --metrics-port P`` as a subprocess: coupons go to persons
    the directory does not know (the person id is the address), an opted-out person is suppressed,
    a duplicate message is skipped, and ``/metrics`` says exactly that."""
    names = fresh_names()
    with RecordingHttpServer() as server:
        s = worker_settings(names, tmp_path / "contacts.yaml", coupon={"url": f"{server.url}/coupons"})
        topics = topics_of(s, "coupon")
        create(s, topics)
        try:
            write_contacts(Path(s.worker.contacts.path), {"p0": {"opt_out": ["coupon"]}})
            acts = [make_action(i, "coupon", coupon_value=20) for i in range(6)]
            produce(s, topics[0], [*acts, acts[1]])
            config = settings_yaml(s, tmp_path / "worker.yaml")
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("ZT__")} | {"PYTHONPATH": str(ROOT)}
            p = subprocess.Popen(
                [sys.executable, "-m", "zhongtai.cli", "--config", str(config), "worker", "--channel", "coupon",
                 "--metrics-port", str(port), "--idle-exit-s", "8", "--instance", "7"],
                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )
            want = {
                "zhongtai_worker_delivered_total{outcome=first}": 5.0,
                "zhongtai_worker_suppressed_total{outcome=opted_out}": 1.0,
                "zhongtai_worker_duplicates_total{outcome=duplicate}": 1.0,
                "zhongtai_worker_delivery_latency_seconds_count{outcome=delivered}": 5.0,
            }
            seen: dict = {}

            def settled() -> bool:
                nonlocal seen
                try:
                    seen = {k: v for k, v in scrape(port).items() if "_bucket" not in k and "_sum" not in k}
                except (OSError, httpx.HTTPError):
                    return False
                settled_kinds = ("delivered_total", "suppressed_total", "duplicates_total")
                return sum(v for k, v in seen.items() if any(x in k for x in settled_kinds)) >= 7  # messages

            try:
                _wait(lambda: settled() or p.poll() is not None, 60, "the worker's /metrics")
                assert seen == want
            finally:
                p.send_signal(signal.SIGTERM)  # graceful stop: commits and prints its stats
                out = p.communicate(timeout=30)[0].decode()
            assert p.returncode == 0, out[-2000:]
            stats = json.loads(out.strip().splitlines()[-1])
            assert (stats["delivered"], stats["suppressed"], stats["duplicates"]) == (5, 1, 1)
            assert sorted(server.accepted_keys()) == sorted(a.action_id for a in acts[1:])
            body = orjson.loads(server.requests[0].body)
            assert (body["params"], body["campaign"]) == ({"coupon_value": 20}, "c1")
            assert Counter(r["status"] for r in receipts(s)) == Counter({"delivered": 5, "suppressed": 1})
        finally:
            cleanup(s, topics)
