"""A ``zhongtai collect`` process for the collector tests (no tests here).

``running_collector(config)`` writes ``config`` (a settings tree, merged over the defaults) to a YAML file,
starts ``python -m zhongtai.cli --config FILE collect --port N`` on 127.0.0.1 and yields its base URL once
it answers (``/healthz`` answers 503 while Kafka is down, which counts as started); the process is stopped
(SIGTERM: the producer flushes) when the block ends.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import ROOT, free_port

WEB_KEY = "web-key-" + "0" * 8
CRM_KEY = "crm-key-" + "1" * 8
KEYS = [{"key": WEB_KEY, "source": "web"}, {"key": CRM_KEY, "source": "crm"}]


def collector_topic() -> str:
    """A fresh topic that the default events pattern of a fresh test's ``Names`` does not reach."""
    return f"zt.c{uuid.uuid4().hex[:10]}.events.collector"


@contextmanager
def running_collector(config: dict[str, Any], *, namespace: str | None = None, port: int | None = None,
                      workers: int = 1, start_timeout_s: float = 60.0) -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "collector.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        port = port or free_port()
        cmd = [sys.executable, "-m", "zhongtai.cli", "--config", str(path)]
        if namespace:
            cmd += ["--namespace", namespace]
        cmd += ["collect", "--port", str(port), "--workers", str(workers)]
        log = Path(tmp) / "collector.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=out,
                                    stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + start_timeout_s
            while True:
                try:
                    with urllib.request.urlopen(base + "/healthz", timeout=1):
                        break
                except urllib.error.HTTPError:
                    break  # it answers (503: Kafka down)
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"collector did not start on {base}:\n{log.read_text()}") from None
                    time.sleep(0.2)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
