"""Private instances of the stack's services for the service fault tests (no tests here).

The shared stack (``zhongtai stack up``) serves every engineer's tests at once, so a test that restarts
a service starts its OWN instance with ``zhongtai.devtools.stack``: the shared settings with free ports and a
``stack.run_dir`` under the test's tmp dir, started with ``start_procs`` and stopped with ``stop_procs``
(by the PID file the private instance wrote: the shared processes are never touched).

* ``redis``: a ``redis-server`` with an append-only file (``stack.redis_aof``, as in production);
* ``hbase-thrift``: a Thrift1 server on its own port against the SHARED HBase master (Thrift is stateless);
* ``kafka``: a single-node KRaft broker with its own ports and log dir.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config.settings import Settings
from tests.helpers import free_port, make_settings
from zhongtai.devtools.stack import start_procs, stop_procs

logger = logging.getLogger(__name__)


@dataclass
class PrivateService:
    """One private process; ``settings`` point at it (and at the shared stack for everything else)."""

    name: str
    settings: Settings
    restarts: list[dict[str, Any]]

    def start(self) -> float:
        t0 = time.monotonic()
        start_procs(self.settings, [self.name], log=logger.info)
        return time.monotonic() - t0

    def stop(self, kill: bool = False) -> str:
        return stop_procs(self.settings, [self.name], kill=kill, log=logger.info)[self.name]

    def restart(self, kill: bool = True, down_s: float = 2.0) -> dict[str, Any]:
        """Stop (SIGKILL when ``kill``, else SIGTERM), stay down ``down_s`` seconds, start and wait for health."""
        t0 = time.monotonic()
        how = self.stop(kill)
        time.sleep(down_s)
        up_s = self.start()
        r = {"stop": how, "down_s": round(time.monotonic() - t0, 1), "start_s": round(up_s, 1)}
        self.restarts.append(r)
        return r


def _private(name: str, tmp_path: Path, **overrides: Any) -> PrivateService:
    stack = {"run_dir": str(tmp_path / f"stack-{name}"), **overrides.pop("stack", {})}
    return PrivateService(name, make_settings(stack=stack, **overrides), [])


@contextlib.contextmanager
def _running(svc: PrivateService) -> Iterator[PrivateService]:
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


def private_redis(tmp_path: Path, aof: bool = True, **overrides: Any) -> contextlib.AbstractContextManager[PrivateService]:
    """A running ``redis-server`` on a free port (AOF ``everysec`` unless ``aof=False``); ``overrides`` of
    the other settings sections (as ``make_settings`` takes them)."""
    return _running(_private("redis", tmp_path, redis={"port": free_port()}, stack={"redis_aof": aof}, **overrides))


def private_thrift(tmp_path: Path, **overrides: Any) -> contextlib.AbstractContextManager[PrivateService]:
    """A running HBase Thrift1 server on a free port, serving the shared HBase."""
    return _running(_private("hbase-thrift", tmp_path, hbase={"port": free_port()}, **overrides))


def private_kafka(tmp_path: Path, **overrides: Any) -> contextlib.AbstractContextManager[PrivateService]:
    """A running single-node KRaft broker (broker and controller on free ports, its own log dir)."""
    return _running(_private("kafka", tmp_path, kafka={"bootstrap": f"127.0.0.1:{free_port()}"},
                             stack={"kafka_controller_port": free_port()}, **overrides))


@contextlib.contextmanager
def private_secured(tmp_path: Path, **overrides: Any) -> Iterator[Settings]:
    """A running SECURED Kafka (SASL_PLAINTEXT + SCRAM, the authorizer on, each component's principal and ACLs)
    and Redis (ACL users, the default user off) on free ports, in one private ``stack.run_dir``; yields their
    settings (the super user's: ``.for_component(name)`` gives a component's). ``overrides`` must name the
    credentials: ``kafka.security``, ``redis.username``/``password`` and ``security.components``."""
    kafka, redis = dict(overrides.pop("kafka", {})), dict(overrides.pop("redis", {}))
    stack = {"run_dir": str(tmp_path / "stack-secured"), "kafka_controller_port": free_port(),
             **overrides.pop("stack", {})}
    settings = make_settings(kafka={**kafka, "bootstrap": f"127.0.0.1:{free_port()}"},
                             redis={**redis, "port": free_port()}, stack=stack, **overrides)
    start_procs(settings, ["redis", "kafka"], log=logger.info)
    try:
        yield settings
    finally:
        stop_procs(settings, ["kafka", "redis"], log=logger.info)
