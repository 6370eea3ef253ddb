"""The workers' Redis state: idempotency records and shared token buckets.

Both apply the pure step functions of ``zhongtai.services.workers`` (``ledger.claim``/``ledger.finish``,
``ratelimit.take``) inside an optimistic ``WATCH``/``MULTI`` transaction, retried when another
worker changed the key in between, so every transition is atomic across worker processes. Each
transaction touches one key, so it runs as it is on a Redis Cluster: on the node that holds the key
(``connectors.redis_clients.client_for_key``).

Keys (prefix = ``redis.prefix``): ``{prefix}:dlv:{channel}:{action_id}`` hash (the record, TTL
``worker.record_ttl_s``), ``{prefix}:rate:{channel}`` hash (the bucket, TTL one minute after last use).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar, cast

import redis

from connectors.redis_clients import Client, client_for_key, refresh_slots
from operators.delivery import ledger, ratelimit
from operators.delivery.ledger import Claim, Outcome, Record

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import RedisSettings

T = TypeVar("T")
_MAX_RETRIES = 100


def redis_client(cfg: RedisSettings) -> Client:
    from connectors.redis_clients import redis_client as client

    return client(cfg, socket_timeout=10)


def _atomic(client: Client, key: str, step: Callable[[dict[str, str]], tuple[dict[str, str] | None, T]],
            ttl_s: int) -> T:
    """Read ``key``'s hash, compute ``step`` and write its new hash (if any) unless the key changed."""
    for _ in range(_MAX_RETRIES):
        with client_for_key(client, key).pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key)
                new, answer = step(cast(dict[str, str], pipe.hgetall(key)))
                pipe.multi()
                if new is not None:
                    pipe.hset(key, mapping=new)
                    pipe.expire(key, ttl_s)
                pipe.execute()
                return answer
            except redis.WatchError:
                continue
            except redis.exceptions.MovedError:  # a cluster slot moved to another node: ask the new owner
                refresh_slots(client)
                continue
    raise RuntimeError(f"redis key {key}: {_MAX_RETRIES} conflicting updates in a row; is a worker looping?")


class RedisLedger:
    """``operators.delivery.ledger.Ledger`` in Redis (durable across worker restarts)."""

    def __init__(self, client: Client, prefix: str, channel: str, ttl_s: int) -> None:
        self.client, self.prefix, self.channel, self.ttl_s = client, prefix, channel, ttl_s

    def key(self, action_id: str) -> str:
        return f"{self.prefix}:dlv:{self.channel}:{action_id}"

    def claim(self, action_id: str, owner: str, src: str, now_ms: int, lease_ms: int) -> Claim:
        def step(h: dict[str, str]) -> tuple[dict[str, str] | None, Claim]:
            new, answer = ledger.claim(Record.from_hash(h), owner, src, now_ms, lease_ms)
            return (new.to_hash() if new else None), answer

        return _atomic(self.client, self.key(action_id), step, self.ttl_s)

    def finish(self, action_id: str, owner: str, outcome: Outcome, now_ms: int) -> Record | None:
        def step(h: dict[str, str]) -> tuple[dict[str, str] | None, Record | None]:
            new = ledger.finish(Record.from_hash(h), owner, outcome, now_ms)
            return (new.to_hash() if new else None), new

        return _atomic(self.client, self.key(action_id), step, self.ttl_s)

    def get(self, action_id: str) -> Record | None:
        return Record.from_hash(cast(dict[str, str], self.client.hgetall(self.key(action_id))))

    def records(self) -> dict[str, Record]:
        """Every record of this channel (tests and operators' inspection)."""
        head = self.key("")
        out = {}
        for k in self.client.scan_iter(match=head + "*", count=1000):
            r = Record.from_hash(cast(dict[str, str], self.client.hgetall(k)))
            if r is not None:
                out[k[len(head):]] = r
        return out


class RedisTokenBucket:
    """A channel's token bucket shared by all its worker processes."""

    def __init__(self, client: Client, prefix: str, channel: str, per_s: float, burst: int) -> None:
        self.client, self.per_s, self.burst = client, per_s, burst
        self.key = f"{prefix}:rate:{channel}"

    def try_take(self, now_ms: int) -> float:
        def step(h: dict[str, str]) -> tuple[dict[str, str], float]:
            old = ratelimit.Bucket(float(h["tokens"]), int(h["updated_ms"])) if h else None
            new, wait = ratelimit.take(old, now_ms, self.per_s, self.burst)
            return {"tokens": repr(new.tokens), "updated_ms": str(new.updated_ms)}, wait

        return _atomic(self.client, self.key, step, 60)
