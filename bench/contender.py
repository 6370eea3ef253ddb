"""Child-process entry of one contender: ``python -m bench.contender <args.json>``.

``args.json`` holds ``{"name", "settings", "kwargs", "result"}``; the child runs the contender,
measures its own wall time (from just before the first client or JVM is created until the last
record is processed and written) and writes ``{"seconds", ...}`` to ``result``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson


def _run_job(settings: Any, **kw: Any) -> dict[str, Any]:
    from zhongtai.jobs.runner import RunOptions, run_events_job

    kw.setdefault("bounded", True)
    run_events_job(settings, RunOptions(resume=False, **kw))
    return {"complete": True}


def contender_function(name: str) -> Callable[..., dict[str, Any]]:
    """The function a contender runs; every name in ``bench.run.CONTENDERS`` and ``EXTRA`` has one."""
    if name.startswith("job"):  # job, job_rules, job-redis, job-direct, job-rocksdb: settings/kwargs differ
        return _run_job
    if name == "sql":
        from .sql_only import run_sql

        return run_sql
    from . import consumers
    from .tuned_full import run_tuned_full

    fns: dict[str, Callable[..., dict[str, Any]]] = {
        "raw": consumers.run_raw, "naive": consumers.run_naive, "tuned": consumers.run_tuned,
        "tuned_full": run_tuned_full, "tuned_full-rules": run_tuned_full}
    return fns[name]


def run(name: str, settings: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    fn = contender_function(name)
    t0 = time.monotonic()
    out = fn(settings, **kwargs)
    out["seconds"] = time.monotonic() - t0
    return out


def main(argv: list[str] | None = None) -> int:
    from config.settings import Settings

    argv = sys.argv[1:] if argv is None else argv
    args = orjson.loads(Path(argv[0]).read_bytes())
    settings = Settings.model_validate_json(args["settings"])
    out = run(args["name"], settings, args["kwargs"])
    Path(args["result"]).write_bytes(orjson.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
