"""What the API's gate costs per request (docs/api.md, "Keys, scopes and limits").

Method: one app (``create_app``) in this process driven by Starlette's TestClient, sequential requests to
``GET /v1/profiles/user_id:nobody`` (one Redis identifier lookup, a 404) against the local stack's Redis under a
fresh prefix, in three modes: open (no gate), the legacy token (constant-time compare + the token bucket's Lua
step) and an API key (``HGETALL`` of the key + the Lua step); ``--warmup`` requests first, unmeasured. Then the
token bucket alone: the API's one Lua step against the workers' optimistic ``WATCH``/``MULTI`` bucket
(``RedisTokenBucket``), ``--takes`` calls each. The rate limit is set high enough never to refuse.

Reported: per-request latency percentiles (ms) per mode and the gate's median overhead over open; per-call
percentiles of the two buckets (µs); the load average before and after (the machine is shared).

``python -m bench.api_gateway_bench [--requests 2000] [--warmup 200] [--takes 5000] [--out FILE]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "api-gateway.json"


def _pcts(samples: list[float], scale: float) -> dict[str, float]:
    s = sorted(samples)
    return {"p50": round(statistics.median(s) * scale, 3), "p90": round(s[int(len(s) * 0.9)] * scale, 3),
            "p99": round(s[int(len(s) * 0.99)] * scale, 3), "n": len(s)}


def _requests(client: Any, headers: dict[str, str], n: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        client.get("/v1/profiles/user_id:nobody", headers=headers)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.get("/v1/profiles/user_id:nobody", headers=headers)
        out.append(time.perf_counter() - t0)
        if r.status_code != 404:
            raise SystemExit(f"unexpected answer {r.status_code}: {r.text}")
    return out


def main(argv: list[str] | None = None) -> int:
    from starlette.testclient import TestClient

    from config import load_settings
    from connectors.api_keys import KeyRecord, RedisApiKeys
    from connectors.channels.redis_state import RedisTokenBucket, redis_client
    from connectors.redis_store import RedisStore
    from zhongtai.services.api.app import create_app
    from zhongtai.services.api.keys import new_key

    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--takes", type=int, default=5000)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)

    prefix = f"bgw{uuid.uuid4().hex[:8]}"
    settings = load_settings(overrides={"api": {"rate": {"per_s": 1e6, "burst": 1_000_000}}})
    load_before = os.getloadavg()
    store = RedisApiKeys(settings.redis, prefix)
    key = new_key()
    store.create(KeyRecord(key.key_id, key.digest, "bench", "reader", frozenset({"profiles:read"}), None, None, 0,
                           None))
    modes: dict[str, Any] = {}
    try:
        with TestClient(create_app(settings, prefix=prefix)) as open_client:
            modes["open"] = _pcts(_requests(open_client, {}, args.requests, args.warmup), 1000)
        with TestClient(create_app(settings, prefix=prefix, token="bench-token")) as client:
            modes["legacy token"] = _pcts(_requests(client, {"Authorization": "Bearer bench-token"}, args.requests,
                                                    args.warmup), 1000)
            modes["API key"] = _pcts(_requests(client, {"Authorization": f"Bearer {key.token}"}, args.requests,
                                               args.warmup), 1000)
        buckets: dict[str, Any] = {}
        lua, now = [], int(time.time() * 1000)
        for i in range(args.takes):
            t0 = time.perf_counter()
            store.take("bench", now + i, 1e6, 1_000_000)
            lua.append(time.perf_counter() - t0)
        buckets["Lua (API)"] = _pcts(lua, 1e6)
        client = redis_client(settings.redis)
        watched = RedisTokenBucket(client, prefix, "bench", 1e6, 1_000_000)
        multi = []
        for i in range(args.takes):
            t0 = time.perf_counter()
            watched.try_take(now + i)
            multi.append(time.perf_counter() - t0)
        client.close()
        buckets["WATCH/MULTI (workers)"] = _pcts(multi, 1e6)
    finally:
        store.close()
        RedisStore(settings.redis, prefix=prefix).delete_prefix()
    out = {"requests_ms": modes, "overhead_ms_p50": {m: round(v["p50"] - modes["open"]["p50"], 3)
                                                     for m, v in modes.items() if m != "open"},
           "bucket_take_us": buckets, "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
           "machine": "shared 2-core machine, local stack, other helpers' tests running",
           "command": "python -m bench.api_gateway_bench " + " ".join(argv or [])}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
