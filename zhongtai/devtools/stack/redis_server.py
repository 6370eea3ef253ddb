"""Our own Redis (Debian's ``redis-server``): the standalone server on
``settings.redis.port`` (service ``redis``; no persistence unless ``stack.redis_aof``, then an append-only
file fsynced every second, as in docker/compose.yaml) and a three-master Redis Cluster on ``settings.redis.nodes``
(service ``redis-cluster``, processes ``redis-cluster-1..3``; ``zhongtai stack up --redis-cluster``).

If ``redis-server`` is missing it is installed with apt-get. A system service apt may start on
6379 is left alone.

The cluster: each node is a ``redis-server --cluster-enabled yes`` with its own PID file, log and
``<run_dir>/data/redis-cluster-N/nodes.conf`` (wiped at start: a node always starts empty, like the
standalone server); once the three answer, :func:`form_cluster` joins them with ``redis-cli --cluster
create`` (all 16384 slots, no replicas) unless they already form a healthy cluster.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from connectors.redis_clients import cluster_nodes, component_acl_rules, node_client

from ._proc import Log, Paths, StackError, read_pid, require_tool, run_checked, tail

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
    # later options win: with stack.redis_aof the append-only file in <run_dir>/data/redis is loaded at start
    aof = ["--appendonly", "yes", "--appendfsync", "everysec"] if settings.stack.redis_aof else []
    acl = acl_file(settings, paths)
    return _daemon(settings, paths, log, NAME, settings.redis.host, settings.redis.port,
                   aof + (["--aclfile", str(acl)] if acl else []))


def acl_lines(settings: Settings) -> list[str]:
    """The ACL file of a secured Redis (``redis.username`` set): that user may do everything (the stack's
    probes, the tests' checks, ``admin``), each user of ``security.components.*.redis`` what its component
    needs (``connectors.redis_clients.component_acl_rules``), the ``default`` user nothing. Passwords are
    stored as their SHA-256 (``#<hex>``), never in clear."""
    cfg = settings.redis
    if cfg.username is None or cfg.password is None:
        return []

    def sha(secret: str) -> str:
        return "#" + hashlib.sha256(secret.encode()).hexdigest()

    lines = ["user default off resetpass -@all",
             f"user {cfg.username} on {sha(cfg.password.get_secret_value())} ~* &* +@all"]
    rules = component_acl_rules(cfg)
    for component, creds in settings.security.components.items():
        if creds.redis is not None and component in rules:
            lines.append(f"user {creds.redis.username} on {sha(creds.redis.password.get_secret_value())} "
                         f"{rules[component]}")
    return lines


def acl_file(settings: Settings, paths: Paths) -> Path | None:
    """Write :func:`acl_lines` to ``<run_dir>/conf/redis/users.acl`` (mode 0600); None when Redis is not secured."""
    lines = acl_lines(settings)
    if not lines:
        return None
    path = paths.conf / "redis" / "users.acl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text("\n".join(lines) + "\n")
    return path


def _daemon(settings: Settings, paths: Paths, log: Log, name: str, host: str, port: int,
            extra: list[str]) -> int:
    """Start one daemonised ``redis-server`` named ``name`` (PID file, log, data dir) and return its PID."""
    exe = _redis_server(log)
    data = paths.data / name
    data.mkdir(parents=True, exist_ok=True)
    pid_file = paths.pid_file(name)
    log_file = paths.log_file(name)
    pid_file.unlink(missing_ok=True)
    argv = [
        exe,
        "--port",
        str(port),
        "--bind",
        host,
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
        *extra,
    ]
    if settings.redis.password is not None and settings.redis.username is None:
        pw = settings.redis.password.get_secret_value()
        argv += ["--requirepass", pw, "--masterauth", pw]
    p = subprocess.run(argv, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise StackError(
            f"{name}: redis-server failed to start ({p.returncode}): {p.stderr.strip()}; read {log_file}"
        )
    for _ in range(50):  # the daemon writes its PID file right after forking
        pid = read_pid(pid_file, MARKER)
        if pid:
            return pid
        time.sleep(0.1)
    raise StackError(f"redis-server wrote no PID file {pid_file}; read {log_file}:\n{tail(log_file)}")


def probe(settings: Settings) -> bool:
    return _ping(settings, settings.redis.host, settings.redis.port)


def _ping(settings: Settings, host: str, port: int) -> bool:
    r = node_client(settings.redis, host, port)
    try:
        return bool(r.ping())
    finally:
        r.close()


# ---- the Redis Cluster ----------------------------------------------------------------------------
CLUSTER = "redis-cluster"
#: Masters the local cluster has (``redis.nodes`` names their addresses).
CLUSTER_SIZE = 3
#: A node's cluster bus listens on its port + this (Redis's fixed offset).
BUS_OFFSET = 10_000


def _node_address(settings: Settings, index: int) -> tuple[str, int] | None:
    nodes = cluster_nodes(settings.redis)
    return nodes[index] if index < len(nodes) else None


def _check_nodes(settings: Settings) -> list[tuple[str, int]]:
    nodes = cluster_nodes(settings.redis)
    local = {"127.0.0.1", "localhost"}
    if len(nodes) != CLUSTER_SIZE or any(h not in local for h, _ in nodes):
        raise StackError(f"redis-cluster: the local stack starts {CLUSTER_SIZE} masters on 127.0.0.1, but redis.nodes "
                         f"is {list(settings.redis.nodes)}; set it to {CLUSTER_SIZE} 127.0.0.1:PORT entries")
    return nodes


@dataclass(frozen=True)
class _ClusterNode:
    """Process ``redis-cluster-<index+1>``: the cluster node at ``redis.nodes[index]``."""

    index: int
    marker: str = MARKER
    grace_s: float = 10.0

    @property
    def name(self) -> str:
        return f"{CLUSTER}-{self.index + 1}"

    def ports(self, settings: Settings) -> list[int]:
        addr = _node_address(settings, self.index)
        return [addr[1], addr[1] + BUS_OFFSET] if addr else []

    def start(self, settings: Settings, paths: Paths, log: Log) -> int:
        host, port = _check_nodes(settings)[self.index]
        conf = paths.data / self.name / "nodes.conf"
        conf.unlink(missing_ok=True)  # start empty, as the standalone server does (no persistence)
        return _daemon(settings, paths, log, self.name, "127.0.0.1" if host == "localhost" else host, port, [
            "--cluster-enabled", "yes", "--cluster-config-file", str(conf), "--cluster-node-timeout", "5000"])

    def probe(self, settings: Settings) -> bool:
        addr = _node_address(settings, self.index)
        return addr is not None and _ping(settings, *addr)


CLUSTER_PROCS = [_ClusterNode(i) for i in range(CLUSTER_SIZE)]


def cluster_state(settings: Settings) -> list[dict[str, str]]:
    """``CLUSTER INFO`` of every node in ``redis.nodes`` (``cluster_state``, ``cluster_known_nodes`` ...)."""
    out = []
    for host, port in cluster_nodes(settings.redis):
        r = node_client(settings.redis, host, port)
        try:
            out.append({k: str(v) for k, v in r.cluster("INFO").items()})
        finally:
            r.close()
    return out


def _healthy(info: list[dict[str, str]]) -> bool:
    return all(i.get("cluster_state") == "ok" and i.get("cluster_known_nodes") == str(CLUSTER_SIZE)
               and i.get("cluster_slots_assigned") == "16384" for i in info)


def form_cluster(settings: Settings, paths: Paths, log: Log, timeout_s: float = 60.0) -> None:
    """Join the three running nodes into one cluster (``redis-cli --cluster create``), unless they already
    form a healthy one; wait until every node says ``cluster_state:ok``. A half-formed cluster (a node was
    restarted alone and came back empty) is an error that says how to start afresh."""
    nodes = _check_nodes(settings)
    info = cluster_state(settings)
    if _healthy(info):
        log(f"{CLUSTER}: cluster of {CLUSTER_SIZE} masters already formed")
        return
    if any(i.get("cluster_known_nodes") != "1" or i.get("cluster_slots_assigned") != "0" for i in info):
        raise StackError(f"{CLUSTER}: the nodes {list(settings.redis.nodes)} are neither empty nor a healthy "
                         f"cluster ({[(i.get('cluster_state'), i.get('cluster_known_nodes')) for i in info]}): "
                         f"stop them (`zhongtai stack down {CLUSTER}`) and start them again")
    t0 = time.monotonic()
    cli = require_tool("redis-cli", "it comes with redis-server (apt-get install -y redis-tools)")
    env = {"REDISCLI_AUTH": settings.redis.password.get_secret_value()} if settings.redis.password else None
    run_checked(CLUSTER, [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for _, p in nodes),
                          "--cluster-replicas", "0", "--cluster-yes"], paths, env)
    while not _healthy(info := cluster_state(settings)):
        if time.monotonic() - t0 > timeout_s:
            raise StackError(f"{CLUSTER}: not ok {timeout_s:.0f} s after `redis-cli --cluster create` "
                             f"({info}); read {paths.log_file(CLUSTER)}")
        time.sleep(0.2)
    log(f"{CLUSTER}: {CLUSTER_SIZE} masters on {', '.join(settings.redis.nodes)} formed a cluster "
        f"in {time.monotonic() - t0:.1f}s; log {paths.log_file(CLUSTER)}")
