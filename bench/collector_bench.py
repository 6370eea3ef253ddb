"""Throughput and latency of ``zhongtai collect`` (docs/performance.md, "The collector").

Method: one ``zhongtai collect`` process (one uvicorn worker, as shipped) on 127.0.0.1 writing to a fresh topic
``zt.bench<id>.collector`` (``kafka.partitions`` partitions; no job reads it), and, in this process, an asyncio
load of ``--concurrency`` keep-alive connections (httpx) each sending pre-built ``/v1/batch`` bodies of
``--batch`` events back to back (each waits for its answer: the collector answers after Kafka's
acknowledgement). The events are the SDK's shape (track / page / identify with context, ~0.5 KB each, 2,000
anonymous ids, a fifth of them identified). ``--warmup`` requests first, unmeasured.

Reported: accepted events/s = measured events / wall seconds of the measured requests; per-request latency
percentiles (send → answer); the collector's CPU seconds (``/proc/<pid>/stat``, user + system) over the
measured part and CPU µs per event; the load average before and after (the machine is shared). Every answer
must be 200 with ``accepted`` = the batch size, or the run fails.

``--workers 1 2`` (the default) runs the collector with one process, then with two (one per core).

``python -m bench.collector_bench [--events 100000] [--batch 100] [--concurrency 8] [--workers 1 2] [--out FILE]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "collector.json"
KEY = "bench-key-" + uuid.uuid4().hex[:12]


def _iso(ms: int) -> str:
    dt = datetime.fromtimestamp(ms / 1000, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _bodies(n_batches: int, batch: int, seed: int) -> list[bytes]:
    """``n_batches`` request bodies of ``batch`` SDK-shaped events each (unique messageIds)."""
    rnd = random.Random(seed)
    now = int(time.time() * 1000)
    out = []
    for b in range(n_batches):
        msgs = []
        for i in range(batch):
            a = rnd.randrange(2000)
            ctx = {"library": {"name": "zt.js", "version": "1"}, "locale": "zh-CN",
                   "page": {"path": f"/p/{rnd.randrange(500)}", "url": f"https://shop.example.com/p/{rnd.randrange(500)}",
                            "referrer": "https://www.example.com/", "title": "商品"},
                   "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"}
            msg: dict[str, Any] = {"messageId": f"{b}-{i}-{uuid.UUID(int=rnd.getrandbits(128))}",
                                   "anonymousId": f"anon-{a:05d}", "timestamp": _iso(now), "context": ctx}
            if a % 5 == 0:
                msg["userId"] = f"user-{a:05d}"
            r = rnd.random()
            if r < 0.5:
                msg |= {"type": "page", "name": "Product", "properties": {"path": ctx["page"]["path"]}}
            elif r < 0.8:
                msg |= {"type": "track", "event": "Add To Cart",
                        "properties": {"item_id": f"sku-{rnd.randrange(10_000)}", "price": "12.50", "qty": 1}}
            elif r < 0.95:
                msg |= {"type": "track", "event": "purchase",
                        "properties": {"order_id": f"o-{b}-{i}", "price": "99.90", "qty": rnd.randint(1, 3)}}
            else:
                msg |= {"type": "identify", "userId": f"user-{a:05d}", "traits": {"tier": "gold", "city": "杭州"}}
            msgs.append(msg)
        out.append(json.dumps({"batch": msgs, "sentAt": _iso(now)}, ensure_ascii=False).encode())
    return out


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _load(base: str, bodies: list[bytes], concurrency: int, batch: int) -> list[float]:
    """Send every body (``concurrency`` at a time, each connection back to back); the latency of each."""
    latencies: list[float] = []
    todo = iter(bodies)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, auth=httpx.BasicAuth(KEY, ""), limits=limits, timeout=60) as client:

        async def worker() -> None:
            for body in todo:
                t0 = time.perf_counter()
                r = await client.post("/v1/batch", content=body, headers={"Content-Type": "application/json"})
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200 or r.json().get("accepted") != batch:
                    raise RuntimeError(f"collector answered {r.status_code}: {r.text[:500]}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_up(base: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=1):
                return
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"collector at {base} says Kafka is down ({e}); is the stack up?") from None
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"collector did not start on {base}:\n{log.read_text()}") from None
            time.sleep(0.2)


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid`` and its children (the worker processes of ``--workers N``)."""
    total = _cpu_s(pid)
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        total += _cpu_s(int(child))
    return total


def run(events: int, batch: int, concurrency: int, warmup: int, workers: int = 1, seed: int = 7) -> dict[str, Any]:
    """One measured run (see the module's docstring); the result as written to the JSON file."""
    topic = f"zt.bench{uuid.uuid4().hex[:8]}.collector"
    n_batches = max(1, events // batch)
    bodies = _bodies(n_batches + warmup, batch, seed)
    with tempfile.TemporaryDirectory() as tmp:
        cfg, log = Path(tmp) / "collector.yaml", Path(tmp) / "collector.log"
        cfg.write_text(yaml.safe_dump({"collector": {"topic": topic, "write_keys": [{"key": KEY, "source": "web"}],
                                                     "max_batch_events": max(500, batch)}}))
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "zhongtai.cli", "--config", str(cfg), "collect", "--port",
                                     str(port), "--workers", str(workers)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                    env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            _wait_up(base, proc, log)
            asyncio.run(_load(base, bodies[:warmup], concurrency, batch))
            load_before = os.getloadavg()
            cpu0, t0 = _tree_cpu_s(proc.pid), time.perf_counter()
            latencies = asyncio.run(_load(base, bodies[warmup:], concurrency, batch))
            wall, cpu = time.perf_counter() - t0, _tree_cpu_s(proc.pid) - cpu0
            load_after = os.getloadavg()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    measured = n_batches * batch
    return {
        "when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "events": measured, "batch": batch, "concurrency": concurrency, "workers": workers, "requests": n_batches,
        "bytes_per_event": round(sum(map(len, bodies)) / len(bodies) / batch),
        "wall_s": round(wall, 3), "events_per_s": round(measured / wall),
        "latency_ms": {q: round(_pct(latencies, p) * 1000, 1)
                       for q, p in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))},
        "collector_cpu_s": round(cpu, 2), "cpu_us_per_event": round(cpu / measured * 1e6, 1),
        "cores": os.cpu_count(), "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after], "topic": topic,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.collector_bench", description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--warmup", type=int, default=20, help="unmeasured requests first")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="collector processes; one run each")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    results = [run(args.events, args.batch, args.concurrency, args.warmup, workers) for workers in args.workers]
    Path(args.out).write_text(json.dumps({"runs": results}, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{'workers':>7} {'events':>8} {'batch':>5} {'conns':>5} {'events/s':>9} {'p50 ms':>7} {'p95 ms':>7} "
          f"{'p99 ms':>7} {'max ms':>7} {'CPU µs/ev':>9} {'load 1m':>13}")
    for r in results:
        lat = r["latency_ms"]
        print(f"{r['workers']:>7} {r['events']:>8,} {r['batch']:>5} {r['concurrency']:>5} {r['events_per_s']:>9,} "
              f"{lat['p50']:>7} {lat['p95']:>7} {lat['p99']:>7} {lat['max']:>7} {r['cpu_us_per_event']:>9} "
              f"{r['load_before'][0]:>6}→{r['load_after'][0]:<6}")
    print(f"written to {args.out} ({results[0]['cores']} cores; the load average includes whatever else runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
