"""Connecting to Redis: the one factory of every zhongtai Redis client, standalone or Redis Cluster.

``redis.mode: standalone`` (default) connects to ``redis.host:port``; ``redis.mode: cluster`` connects
to a Redis Cluster through ``redis.nodes`` (redis-py's ``RedisCluster``, which routes each command to
the node that holds its key's slot and splits non-transactional pipelines by node).

Zhongtai's key layout needs no hash tag (docs/semantics.md, "Redis keys"): no atomic operation spans
two keys. What differs between the two modes is confined to the helpers below: a multi-key read
(:func:`mget`), a pipeline that calls Lua scripts (:func:`execute_scripted`) and a ``WATCH``/``MULTI``
transaction on one key (:func:`client_for_key`). Code outside ``connectors/`` never sees the difference.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import NoScriptError, RedisClusterException

if TYPE_CHECKING:  # pragma: no cover
    from redis.commands.core import Script

    from config.settings import RedisSettings

logger = logging.getLogger(__name__)

#: Either kind of client; both speak the same commands for single keys and pipelines.
Client = redis.Redis | RedisCluster


def _password(cfg: RedisSettings) -> str | None:
    return cfg.password.get_secret_value() if cfg.password else None


def cluster_nodes(cfg: RedisSettings) -> list[tuple[str, int]]:
    """``redis.nodes`` as (host, port) pairs (validated by ``RedisSettings``)."""
    return [(h, int(p)) for h, _, p in (n.rpartition(":") for n in cfg.nodes)]


def redis_address(cfg: RedisSettings) -> str:
    """Where the settings point: ``Redis at 127.0.0.1:6390`` or ``Redis Cluster at a:1, b:2``."""
    if cfg.mode == "cluster":
        return "Redis Cluster at " + ", ".join(cfg.nodes)
    return f"Redis at {cfg.host}:{cfg.port}"


def redis_client(cfg: RedisSettings, socket_timeout: float = 30) -> Client:
    """The one way zhongtai connects to Redis (string replies, the configured db, ACL user and password;
    a component's own user comes from ``Settings.for_component``).

    Standalone: a lazy ``redis.Redis`` (no round trip yet). Cluster: a ``RedisCluster`` that asks the
    startup nodes for the slot map now; when none answers, ``redis.ConnectionError`` naming the nodes
    (the same error a standalone client raises on its first command)."""
    if cfg.mode != "cluster":
        return redis.Redis(host=cfg.host, port=cfg.port, db=cfg.db, username=cfg.username, password=_password(cfg),
                           decode_responses=True, socket_timeout=socket_timeout)
    try:
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in cluster_nodes(cfg)],
                            username=cfg.username, password=_password(cfg), decode_responses=True,
                            socket_timeout=socket_timeout,
                            socket_connect_timeout=min(socket_timeout, 5.0))
    except RedisClusterException as e:
        raise redis.ConnectionError(f"{redis_address(cfg)}: no startup node answers with a slot map ({e}); "
                                    "is the cluster up (`zhongtai stack up --redis-cluster`)?") from e


def node_client(cfg: RedisSettings, host: str, port: int, socket_timeout: float = 2) -> redis.Redis:
    """A client of one server, whatever the mode: the local stack's health probes and cluster set-up."""
    return redis.Redis(host=host, port=port, username=cfg.username, password=_password(cfg), decode_responses=True,
                       socket_timeout=socket_timeout)


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


def client_for_key(client: Client, key: str) -> redis.Redis:
    """A plain client of the server that holds ``key``: ``WATCH``/``MULTI`` on that one key works on it in
    both modes (redis-py's cluster pipeline has no transactions). After a slot moved, the server answers
    ``MOVED`` (:class:`redis.exceptions.MovedError`): call :func:`refresh_slots` and ask again."""
    if not isinstance(client, RedisCluster):
        return client
    return client.get_redis_connection(client.get_node_from_key(key))


def refresh_slots(client: Client) -> None:
    """Re-read the cluster's slot map (after a ``MOVED`` answer); nothing in standalone mode."""
    if isinstance(client, RedisCluster):
        client.nodes_manager.initialize()


def mget(client: Client, keys: Sequence[str]) -> list[str | None]:
    """Values of ``keys`` in order (one ``MGET``; per slot in cluster mode, so not one atomic read there)."""
    if not keys:
        return []
    if isinstance(client, RedisCluster):
        return client.mget_nonatomic(list(keys))
    return client.mget(list(keys))


def queue_script(pipe: Any, script: Script, keys: Sequence[str], args: Sequence[Any]) -> None:
    """Queue one call of ``script`` on a pipeline made by :func:`execute_scripted`, in either mode.

    A cluster pipeline routes ``EVALSHA`` by its first key like any command; redis-py blocks its
    ``evalsha`` method there only because the pipeline cannot load scripts, which
    :func:`execute_scripted` does."""
    if isinstance(pipe, RedisCluster):
        pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
    else:
        script(keys=list(keys), args=list(args), client=pipe)


def execute_scripted(client: Client, scripts: Sequence[Script], fill: Callable[[Any], None]) -> list[Any]:
    """Run a non-transactional pipeline that ``fill`` queues (``scripts`` called with :func:`queue_script`).

    Standalone redis-py loads the scripts itself. A cluster pipeline does not: a node that lacks one
    (restarted, or never asked) answers ``NOSCRIPT``; then every script is loaded on every primary and
    the whole pipeline runs again, so what ``fill`` queues must be idempotent (zhongtai's writes are)."""
    for attempt in (1, 2):
        pipe = client.pipeline(transaction=False)
        fill(pipe)
        try:
            return pipe.execute()
        except NoScriptError:
            if attempt == 2 or not isinstance(client, RedisCluster):
                raise
            logger.info("redis cluster: a node lacked a Lua script; loading %d on every primary", len(scripts))
            for s in scripts:
                s.sha = client.script_load(s.script)
    raise AssertionError("unreachable")  # pragma: no cover


def component_acl_rules(cfg: RedisSettings) -> dict[str, str]:
    """The Redis ACL rules (``ACL SETUSER name <rules>``) each component's user needs, least privilege within
    the key prefix (a tenant's namespace qualifies it: ``a.zt:*`` holds nothing of tenant ``b``).
    docs/security.md explains them; the local stack writes them into its ACL file.

    * ``job`` / ``applier``: the writers of the live store (Lua scripts, ``WATCH``/``MULTI`` included);
    * ``api``: reads, and writes only its keys' token buckets (``apirate``: the gateway's rate limit; a script it
      runs can write nothing else, scripts running with the caller's rights);
    * ``worker``: writes only its ledger (``dlv``) and rate-limit (``rate``) keys, reads the rest."""
    p = cfg.prefix
    safe = "+@connection -@dangerous"
    writer = f"resetkeys ~{p}:* resetchannels -@all +@read +@write +@scripting +@transaction {safe}"
    return {
        "job": writer,
        "applier": writer,
        "api": f"resetkeys %RW~{p}:apirate:* %R~{p}:* resetchannels -@all +@read +@write +@scripting {safe}",
        "worker": f"resetkeys %RW~{p}:dlv:* %RW~{p}:rate:* %R~{p}:* resetchannels -@all +@read +@write +@scripting "
                  f"+@transaction {safe}",
    }
