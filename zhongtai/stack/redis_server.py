"""Our own Redis instance (Debian's ``redis-server``) on ``settings.redis.port``, no persistence.

If ``redis-server`` is missing it is installed with apt-get. A system service apt may start on
6379 is left alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import TYPE_CHECKING

from ._proc import Log, Paths, StackError, read_pid, tail

if TYPE_CHECKING:
    from config import Settings

NAME = "redis"
MARKER = "redis-server"


def ports(settings: Settings) -> list[int]:
    return [settings.redis.port]


def _redis_server(log: Log) -> str:
    path = shutil.which("redis-server")
    if path:
        return path
    apt = shutil.which("apt-get")
    if not apt:
        raise StackError("redis-server is not on PATH and apt-get is missing: install Redis 7 yourself")
    if os.geteuid() != 0:
        raise StackError("redis-server is not on PATH: run `sudo apt-get install -y redis-server`")
    log("redis: installing Debian's redis-server (apt-get) …")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in ([apt, "update", "-q"], [apt, "install", "-y", "-q", "redis-server"]):
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if p.returncode != 0:
            raise StackError(
                f"`{' '.join(cmd)}` failed ({p.returncode}):\n{p.stdout[-2000:]}{p.stderr[-2000:]}"
            )
    path = shutil.which("redis-server")
    if not path:
        raise StackError("apt-get installed redis-server but it is not on PATH (/usr/bin/redis-server?)")
    return path


def start(settings: Settings, paths: Paths, log: Log) -> int:
    exe = _redis_server(log)
    data = paths.data / "redis"
    data.mkdir(parents=True, exist_ok=True)
    pid_file = paths.pid_file(NAME)
    log_file = paths.log_file(NAME)
    pid_file.unlink(missing_ok=True)
    argv = [
        exe,
        "--port",
        str(settings.redis.port),
        "--bind",
        settings.redis.host,
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "yes",
        "--pidfile",
        str(pid_file),
        "--logfile",
        str(log_file),
        "--dir",
        str(data),
    ]
    if settings.redis.password is not None:
        argv += ["--requirepass", settings.redis.password.get_secret_value()]
    p = subprocess.run(argv, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise StackError(
            f"redis-server failed to start ({p.returncode}): {p.stderr.strip()}; read {log_file}"
        )
    import time

    for _ in range(50):  # the daemon writes its PID file right after forking
        pid = read_pid(pid_file, MARKER)
        if pid:
            return pid
        time.sleep(0.1)
    raise StackError(f"redis-server wrote no PID file {pid_file}; read {log_file}:\n{tail(log_file)}")


def probe(settings: Settings) -> bool:
    import redis

    pw = settings.redis.password.get_secret_value() if settings.redis.password else None
    r = redis.Redis(host=settings.redis.host, port=settings.redis.port, password=pw, socket_timeout=2)
    try:
        return bool(r.ping())
    finally:
        r.close()
