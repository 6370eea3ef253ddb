"""Event→Redis latency of the job, from a live run.

Method: the job runs unbounded (child process, fresh topic/group/prefix). A warm-up trickle (1 event
every 0.5 s, event time 30 minutes back so it lands in other minute keys) runs until the job's
``stats.received`` shows it consumes. Then the parent produces ``rate`` valid events per second for
``seconds`` s with event time = now, recording each event's send time; a poller reads the
``all:<minute>`` counter's ``events`` field every 20 ms. The k-th event of a minute is taken as
visible at the first poll where that minute's count is ≥ k (events of one minute are produced in
order, and counts are monotonic), so its latency = that poll's time − its send time. This includes
Kafka produce (linger 5 ms), the job's mini-batch (``job.mini_batch_latency_ms``), the Python
bundle (``python.fn-execution.bundle.time``) and the pipelined Redis write; resolution ±20 ms.
"""

from __future__ import annotations


import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from config.settings import Settings, settings_to_json
from zhongtai.stack._proc import inherited_env


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def measure_latency(settings: Settings, runid: str, work: Path, rate: int = 2_000, seconds: float = 20.0,
                    hbase: bool = True) -> dict[str, Any]:
    import redis
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from connectors.redis_store import minute_label

    topic = f"zt.bench.{runid}.lat.web"
    dlq = f"zt.bench.{runid}.lat-dlq"
    prefix = f"ztbench:{runid}:lat"
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    for fut in admin.create_topics([NewTopic(topic, num_partitions=settings.kafka.partitions,
                                             replication_factor=1)]).values():
        fut.result()
    args_path, result_path = work / "latency.args.json", work / "latency.result.json"
    args_path.write_bytes(orjson.dumps({
        "name": "job", "settings": settings_to_json(settings), "result": str(result_path),
        "kwargs": {"group": f"zt-bench-{runid}-lat", "topic_pattern": topic.replace(".", r"\."), "dlq_topic": dlq,
                   "redis_prefix": prefix, "hbase_prefix": "ztbench", "hbase": hbase,
                   "job_name": f"zt-bench-{runid}-lat", "bounded": False},
    }))
    # A process that already ran a PyFlink job carries its runtime variables; a fresh child must not.
    env = inherited_env()
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    log = (work / "latency.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "bench.contender", str(args_path)], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    r = redis.Redis(host=settings.redis.host, port=settings.redis.port, db=settings.redis.db,
                    password=settings.redis.password.get_secret_value() if settings.redis.password else None)
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap, "linger.ms": 5, "acks": "all",
                         "enable.idempotence": True})
    tag = uuid.uuid4().hex[:8]
    n = 0

    def send(ts_ms: int) -> None:
        nonlocal n
        n += 1
        value = orjson.dumps({"event_id": f"lat-{tag}-{n}", "event_type": "page_view", "ts": ts_ms,
                              "ids": {"user_id": f"u{n % 500}"}, "source": "web",
                              "props": {"campaign_id": "lat", "channel": "web"}})
        producer.produce(topic, value, key=str(n % 64).encode(), timestamp=ts_ms)
        producer.poll(0)

    try:
        deadline = time.monotonic() + 180
        while True:  # warm-up until the job consumes
            if proc.poll() is not None:
                raise RuntimeError(f"bench latency: the job exited early; see {work / 'latency.log'}")
            send(int(time.time() * 1000) - 30 * 60_000)
            producer.flush(5)
            if int(r.hget(f"{prefix}:stats", "valid") or 0) > 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"bench latency: the job did not start in 180 s; see {work / 'latency.log'}")
            time.sleep(0.5)
        sent: dict[int, list[float]] = {}
        samples: dict[int, list[tuple[float, int]]] = {}
        stop = threading.Event()

        def poll() -> None:
            pr = redis.Redis(host=settings.redis.host, port=settings.redis.port, db=settings.redis.db,
                             password=settings.redis.password.get_secret_value() if settings.redis.password else None)
            while not stop.is_set():
                for m in list(sent):
                    v = pr.hget(f"{prefix}:m:all:{minute_label(m)}", "events")
                    samples.setdefault(m, []).append((time.monotonic(), int(v or 0)))
                stop.wait(0.02)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        t0 = time.monotonic()
        total = int(rate * seconds)
        for i in range(total):
            target = t0 + i / rate
            now = time.monotonic()
            if target > now:
                time.sleep(target - now)
            ts = int(time.time() * 1000)
            sent.setdefault(ts // 60_000, []).append(time.monotonic())
            send(ts)
        producer.flush(10)
        end = time.monotonic() + 90
        while time.monotonic() < end:
            done = all(samples.get(m) and samples[m][-1][1] >= len(ts_list) for m, ts_list in sent.items())
            if done:
                break
            time.sleep(0.2)
        stop.set()
        poller.join()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    lat: list[float] = []
    missing = 0
    for m, times in sent.items():
        smp = samples.get(m, [])
        j = 0
        for k, t_sent in enumerate(times, start=1):
            while j < len(smp) and smp[j][1] < k:
                j += 1
            if j == len(smp):
                missing += len(times) - k + 1
                break
            lat.append((smp[j][0] - t_sent) * 1000)
    for key in r.scan_iter(match=f"{prefix}:*", count=1000):
        r.delete(key)
    return {
        "method": "live run, counter-visibility per event (see bench/latency.py)",
        "rate": rate, "seconds": seconds, "events": total, "samples": len(lat), "not_visible": missing,
        "p50_ms": round(_pct(lat, 0.50)) if lat else None,
        "p99_ms": round(_pct(lat, 0.99)) if lat else None,
        "max_ms": round(max(lat)) if lat else None,
        "topics": [topic, dlq],
    }
