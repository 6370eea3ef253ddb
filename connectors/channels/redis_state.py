"""The workers' Redis state: idempotency records and shared token buckets.

Both apply the pure step functions of ``zhongtai.services.workers`` (``ledger.claim``/``ledger.finish``,
``ratelimit.take``) inside an optimistic ``WATCH``/``MULTI`` transaction, retried when another
worker changed the key in between, so every transition is atomic across worker processes. Each
transaction touches one key, so it runs as it is on a Redis Cluster: on the node that holds the key
(``connectors.redis_clients.client_for_key``).

A lost connection (Redis restarted or failing over, a broken pipe) is retried inside the step with
backoff (50 ms doubling to 2 s) on a fresh connection for up to ``UNAVAILABLE_FOR_S``; the worker's loop
waits meanwhile and goes on where it was. A transaction whose answer was lost may have been applied: the
retry reads the key first, and when it holds exactly what that write would have left, the write happened
and its answer is returned (a claim is not mistaken for another holder's, a finish is not lost).

Keys (prefix = ``redis.prefix``): ``{prefix}:dlv:{channel}:{action_id}`` hash (the record, TTL
``worker.record_ttl_s``), ``{prefix}:rate:{channel}`` hash (the bucket, TTL one minute after last use).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar, cast

import redis

from connectors.redis_clients import Client, client_for_key, refresh_slots
from operators.delivery import ledger, ratelimit
from operators.delivery.ledger import Claim, Outcome, Record

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import RedisSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")
_MAX_RETRIES = 100
#: How long one step retries a lost Redis connection before it raises (the worker then stops and its restart
#: re-reads from the committed offsets). Below the consumer's ``max.poll.interval.ms`` (300 s): the worker
#: stays in its group while it waits.
UNAVAILABLE_FOR_S = 120.0
#: First and longest pause between two attempts on a lost connection (seconds; doubling in between).
BACKOFF_S = (0.05, 2.0)

#: Called with the error on every retry of a lost connection (the worker counts ``retried{outcome="redis"}``).
OnRetry = Callable[[BaseException], None]


def redis_client(cfg: RedisSettings) -> Client:
    from connectors.redis_clients import redis_client as client

    return client(cfg, socket_timeout=10)


def _connection_lost(e: BaseException) -> bool:
    """A lost or refused connection; redis-py reports one that dies while a key is WATCHed as a WatchError."""
    lost = (redis.ConnectionError, redis.TimeoutError)
    return isinstance(e, lost) or (isinstance(e, redis.WatchError) and isinstance(e.__context__, lost))


def _atomic(client: Client, key: str, step: Callable[[dict[str, str]], tuple[dict[str, str] | None, T]],
            ttl_s: int, on_retry: OnRetry | None = None) -> T:
    """Read ``key``'s hash, compute ``step`` and write its new hash (if any) unless the key changed.

    A lost connection is retried (see the module's doc) for ``UNAVAILABLE_FOR_S``, then raised."""
    conflicts, delay, deadline = 0, BACKOFF_S[0], None
    lost: tuple[dict[str, str], T] | None = None  # a write whose answer the connection lost, and that answer
    while conflicts < _MAX_RETRIES:
        with client_for_key(client, key).pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key)
                current = cast(dict[str, str], pipe.hgetall(key))
                if lost is not None:
                    written, answer = lost
                    lost = None
                    if current == written:  # the interrupted transaction was applied: its answer stands
                        return answer
                new, answer = step(current)
                pipe.multi()
                if new is not None:
                    pipe.hset(key, mapping=new)
                    pipe.expire(key, ttl_s)
                try:
                    pipe.execute()
                except (redis.ConnectionError, redis.TimeoutError, redis.WatchError) as e:
                    if new is not None and _connection_lost(e):
                        lost = (new, answer)
                    raise
                return answer
            except redis.exceptions.MovedError:  # a cluster slot moved to another node: ask the new owner
                refresh_slots(client)
                continue
            except (redis.ConnectionError, redis.TimeoutError, redis.WatchError) as e:
                if not _connection_lost(e):  # another worker changed the key meanwhile: read it again
                    conflicts += 1
                    continue
                now = time.monotonic()
                deadline = deadline if deadline is not None else now + UNAVAILABLE_FOR_S
                if now > deadline:
                    raise redis.ConnectionError(f"redis key {key}: no connection for {UNAVAILABLE_FOR_S:.0f} s "
                                                f"({e!r}); is Redis up?") from e
                logger.warning("redis key %s: %r; retrying in %.2f s (gives up %.0f s after the first failure)",
                               key, e, delay, UNAVAILABLE_FOR_S)
                if on_retry is not None:
                    on_retry(e)
                time.sleep(delay)
                delay = min(delay * 2, BACKOFF_S[1])
    raise RuntimeError(f"redis key {key}: {_MAX_RETRIES} conflicting updates in a row; is a worker looping?")


class RedisLedger:
    """``operators.delivery.ledger.Ledger`` in Redis (durable across worker restarts)."""

    def __init__(self, client: Client, prefix: str, channel: str, ttl_s: int, on_retry: OnRetry | None = None) -> None:
        self.client, self.prefix, self.channel, self.ttl_s = client, prefix, channel, ttl_s
        self.on_retry = on_retry

    def key(self, action_id: str) -> str:
        return f"{self.prefix}:dlv:{self.channel}:{action_id}"

    def claim(self, action_id: str, owner: str, src: str, now_ms: int, lease_ms: int) -> Claim:
        def step(h: dict[str, str]) -> tuple[dict[str, str] | None, Claim]:
            new, answer = ledger.claim(Record.from_hash(h), owner, src, now_ms, lease_ms)
            return (new.to_hash() if new else None), answer

        return _atomic(self.client, self.key(action_id), step, self.ttl_s, self.on_retry)

    def finish(self, action_id: str, owner: str, outcome: Outcome, now_ms: int) -> Record | None:
        def step(h: dict[str, str]) -> tuple[dict[str, str] | None, Record | None]:
            new = ledger.finish(Record.from_hash(h), owner, outcome, now_ms)
            return (new.to_hash() if new else None), new

        return _atomic(self.client, self.key(action_id), step, self.ttl_s, self.on_retry)

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

    def __init__(self, client: Client, prefix: str, channel: str, per_s: float, burst: int,
                 on_retry: OnRetry | None = None) -> None:
        self.client, self.per_s, self.burst, self.on_retry = client, per_s, burst, on_retry
        self.key = f"{prefix}:rate:{channel}"

    def try_take(self, now_ms: int) -> float:
        def step(h: dict[str, str]) -> tuple[dict[str, str], float]:
            old = ratelimit.Bucket(float(h["tokens"]), int(h["updated_ms"])) if h else None
            new, wait = ratelimit.take(old, now_ms, self.per_s, self.burst)
            return {"tokens": repr(new.tokens), "updated_ms": str(new.updated_ms)}, wait

        return _atomic(self.client, self.key, step, 60, self.on_retry)
