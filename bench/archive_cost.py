"""The archive's cost on the job's throughput: the bench's ``job`` contender without and with ``archive.enabled``.

``python -m bench.archive_cost --events 30000 [--out bench/results/archive-cost.json]``: the same seeded
events (each run pre-fills its own topics from the same seed), the job once with the archive off and once
with it on (into a scratch warehouse, deleted after), no latency phase. Writes both contenders' results, the
ratio on/off of events/s (wall and steady) and the machine's load average around each run
(docs/warehouse.md quotes them).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from config import load_settings

from .run import run_bench


def measure(events: int, persons: int) -> dict[str, Any]:
    out: dict[str, Any] = {"events": events, "cpus": os.cpu_count(), "runs": {}}
    scratch = Path(tempfile.mkdtemp(prefix="zt-archive-cost-"))
    try:
        for mode in ("off", "on"):
            settings = load_settings(overrides={"archive": {"enabled": mode == "on",
                                                            "path": (scratch / "wh").as_uri()}})
            load_before = os.getloadavg()
            doc = run_bench(settings, events, ["job"], latency=False, persons=persons)
            job = doc["contenders"]["job"]
            out["runs"][mode] = {"load_before": [round(x, 1) for x in load_before],
                                 "load_after": [round(x, 1) for x in os.getloadavg()], "job": job}
            print(f"[archive-cost] archive {mode}: {job['events_per_s']} ev/s, steady "
                  f"{job.get('steady_events_per_s')}, exact {job.get('exact')}", flush=True)
        if any(scratch.glob("wh/events/dt=*/part-*")):
            out["archived_tables"] = sorted(p.name for p in (scratch / "wh").iterdir())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    off, on = out["runs"]["off"]["job"], out["runs"]["on"]["job"]
    out["ratio_on_off"] = round(on["events_per_s"] / off["events_per_s"], 3) if off["events_per_s"] else None
    if off.get("steady_events_per_s") and on.get("steady_events_per_s"):
        out["steady_ratio_on_off"] = round(on["steady_events_per_s"] / off["steady_events_per_s"], 3)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.archive_cost", description=__doc__)
    p.add_argument("--events", type=int, default=30_000)
    p.add_argument("--persons", type=int, default=2_000)
    p.add_argument("--out", default="bench/results/archive-cost.json")
    a = p.parse_args(argv)
    doc = measure(a.events, a.persons)
    Path(a.out).write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    print(f"[archive-cost] on/off: {doc['ratio_on_off']} (steady {doc.get('steady_ratio_on_off')}) -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
