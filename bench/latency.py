"""Event→Redis latency of the job, from a live run.

Method: the job runs unbounded (child process, fresh topic/group/prefix). A warm-up trickle (1 event
every 0.5 s, event time 30 minutes back so it lands in other minute keys) runs until the job's
``stats.received`` shows it consumes. Then the parent produces ``rate`` valid events per second for
``seconds`` s with event time = now, recording each event's send time; a poller reads the
``all:<minute>`` counter's ``events`` field every 20 ms. The k-th event of a minute is taken as
visible at the first poll where that minute's count is ≥ k (events of one minute are produced in
order, and counts are monotonic), so its latency = that poll's time − its send time. This includes
Kafka produce (linger 5 ms), the job's mini-batch (``job.mini_batch_latency_ms``), in ``log`` store mode
the checkpoint that commits the store log and the applier, and the pipelined Redis write; resolution
±20 ms.

Timers (``timers=True``: the job runs with ``bench/latency_rules.yaml``, cart abandonment without quiet
hours or caps, and the shipped tags): while the load runs, probe persons send an ``add_to_cart`` dated so
that something is due a few seconds later in wall time (event time = wall time in this run):
``tp*`` an abandonment action (due at start + 30 min + the pattern's 30 s lateness), ``tg*`` the tag
``cart_abandoner`` (due at last_seen + 1 h). A read_committed consumer of the actions and tag-change
topics notes when each appears; its delay = that time − the due time. This is what a user sees: the
watermark (``job.watermark_delay_ms`` behind the newest event time), the bundle and the checkpoint that
commits the outputs.
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

from config.plugins import channel_names
from config.settings import Settings, settings_to_json
from zhongtai.devtools.stack._proc import inherited_env


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


PROBES = 10
RULES_FILE = Path(__file__).resolve().parent / "latency_rules.yaml"


def _timer_watch(settings: Settings, topics: list[str], seen: dict[str, float], stop: threading.Event) -> None:
    """Notes the wall time each probe's action / tag change first appears (read_committed); keys are the
    probes' identifiers (``user_id:tp3``), mapped from their person ids."""
    from confluent_kafka import Consumer

    from operators.identity import person_id

    probe_of = {person_id(f"user_id:{k}{i}"): f"user_id:{k}{i}" for k in ("tp", "tg") for i in range(PROBES)}

    c = Consumer({"bootstrap.servers": settings.kafka.bootstrap, "group.id": f"lat-watch-{uuid.uuid4().hex[:8]}",
                  "auto.offset.reset": "earliest", "isolation.level": "read_committed", "enable.auto.commit": False})
    c.subscribe(topics)
    try:
        while not stop.is_set():
            m = c.poll(0.05)
            if m is None or m.error():
                continue
            d = orjson.loads(m.value())
            who = probe_of.get(d.get("person_id") or d.get("person") or "", "")
            if who and who not in seen:
                if d.get("template") == "probe" or (d.get("tag") == "cart_abandoner" and d.get("op") == "add"):
                    seen[who] = time.time()
    finally:
        c.close()


def measure_latency(settings: Settings, runid: str, work: Path, rate: int = 5_000, seconds: float = 20.0,
                    hbase: bool = True, timers: bool = True, mode: str | None = None) -> dict[str, Any]:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from connectors.redis_clients import redis_client
    from connectors.redis_store import minute_label

    mode = mode or settings.job.store_mode
    settings = settings.model_copy(update={"job": settings.job.model_copy(update={"store_mode": mode})})
    topic = f"zt.bench.{runid}.lat{mode}.web"
    dlq = f"zt.bench.{runid}.lat{mode}-dlq"
    actions_prefix = f"zt.bench.{runid}.lat{mode}.actions."
    tag_topic = f"zt.bench.{runid}.lat{mode}.tags"
    prefix = f"ztbench:{runid}:lat{mode}"
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    for fut in admin.create_topics([NewTopic(topic, num_partitions=settings.kafka.partitions,
                                             replication_factor=1)]).values():
        fut.result()
    args_path, result_path = work / "latency.args.json", work / "latency.result.json"
    args_path.write_bytes(orjson.dumps({
        "name": "job", "settings": settings_to_json(settings), "result": str(result_path),
        "kwargs": {"group": f"zt-bench-{runid}-lat{mode}", "topic_pattern": topic.replace(".", r"\."),
                   "dlq_topic": dlq, "redis_prefix": prefix, "hbase_prefix": "ztbench", "hbase": hbase,
                   "job_name": f"zt-bench-{runid}-lat{mode}", "bounded": False, "tag_topic": tag_topic,
                   **({"rules": True, "rules_file": str(RULES_FILE), "actions_prefix": actions_prefix,
                       "experiments": False} if timers else {})},
    }))
    # A process that already ran a PyFlink job carries its runtime variables; a fresh child must not.
    env = inherited_env()
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    log = (work / "latency.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "bench.contender", str(args_path)], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    r = redis_client(settings.redis)
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap, "linger.ms": 5, "acks": "all",
                         "enable.idempotence": True})
    tag = uuid.uuid4().hex[:8]
    n = 0

    def send(ts_ms: int, user: str | None = None, event_type: str = "page_view") -> None:
        nonlocal n
        n += 1
        value = orjson.dumps({"event_id": f"lat-{tag}-{n}", "event_type": event_type, "ts": ts_ms,
                              "ids": {"user_id": user or f"u{n % 500}"}, "source": "web",
                              "props": {"campaign_id": "lat", "channel": "web"}})
        producer.produce(topic, value, key=str(n % 64).encode(), timestamp=int(time.time() * 1000))
        producer.poll(0)

    seen: dict[str, float] = {}
    due: dict[str, float] = {}
    watch_stop = threading.Event()
    watcher = None
    if timers:
        from connectors.kafka_admin import create_topics

        create_topics(settings, [f"{actions_prefix}push", tag_topic])
        watcher = threading.Thread(target=_timer_watch, args=(settings, [f"{actions_prefix}push", tag_topic], seen,
                                                               watch_stop), daemon=True)
        watcher.start()

    def probes(at_s: float) -> None:
        """Probe persons whose action / tag is due ``at_s`` + i s of wall time (event time = wall time)."""
        for i in range(PROBES):
            d = at_s + i
            t_cart = int((time.time() + d) * 1000) - 30 * 60_000 - 30_000
            send(t_cart, f"tp{i}", "add_to_cart")
            due[f"user_id:tp{i}"] = time.time() + d
            t_tag = int((time.time() + d) * 1000) - 3_600_000
            send(t_tag, f"tg{i}", "add_to_cart")
            due[f"user_id:tg{i}"] = time.time() + d

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
            pr = redis_client(settings.redis)
            while not stop.is_set():
                for m in list(sent):
                    v = pr.hget(f"{prefix}:m:all:{minute_label(m)}", "events")
                    samples.setdefault(m, []).append((time.monotonic(), int(v or 0)))
                stop.wait(0.02)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        if timers:
            probes(5.0)
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
            if done and len(seen) >= len(due):
                break
            if done and timers:  # keep the watermark moving until the probes' times have come
                send(int(time.time() * 1000))
            time.sleep(0.2)
        stop.set()
        poller.join()
    finally:
        watch_stop.set()
        if watcher is not None:
            watcher.join()
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
    out: dict[str, Any] = {
        "method": "live run, counter-visibility per event (see bench/latency.py)",
        "store_mode": mode, "checkpoint_interval_ms": settings.flink.checkpoint_interval_ms,
        "rate": rate, "seconds": seconds, "events": total, "samples": len(lat), "not_visible": missing,
        "p50_ms": round(_pct(lat, 0.50)) if lat else None,
        "p99_ms": round(_pct(lat, 0.99)) if lat else None,
        "max_ms": round(max(lat)) if lat else None,
        "topics": [topic, dlq, tag_topic, *([f"{actions_prefix}{c}" for c in channel_names()] if timers else [])],
    }
    if timers:
        for kind, pre in (("action", "user_id:tp"), ("tag", "user_id:tg")):
            delays = [(seen[p] - due[p]) * 1000 for p in due if p.startswith(pre) and p in seen]
            out[f"timer_{kind}_delay_ms"] = {
                "probes": sum(1 for p in due if p.startswith(pre)), "seen": len(delays),
                "p50": round(_pct(delays, 0.5)) if delays else None, "max": round(max(delays)) if delays else None}
    return out
