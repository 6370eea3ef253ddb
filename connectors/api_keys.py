"""The API's keys and their rate limits in Redis (docs/api.md, "Keys").

Keys live in Redis, not HBase: the API reads the key on every request and must see a revocation at once
in every API process, and Redis is the store every request already talks to (the rate limit is there
too), answering in well under a millisecond; HBase through Thrift is the slowest store and would add a
round trip per request. The cost: keys live as long as Redis's data, so a production Redis keeps its
append-only file (docker/compose.yaml and the Kubernetes manifests do); the local stack's Redis is not
persistent unless ``stack.redis_aof`` is set, and keys must then be created again after a restart.

Keys (prefix = ``redis.prefix``): ``{prefix}:apikey:{id}`` hash ``{digest, name, scopes, role, per_s,
burst, created_ms, revoked_ms, source}`` (no TTL: a key lives until it is deleted; a revoked key stays listed),
``{prefix}:apikeys`` set of ids, ``{prefix}:apirate:{id}`` hash (the key's token bucket, TTL one minute
past its last use). Each operation touches one key, so it runs as it is on a Redis Cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from connectors.redis_clients import client_for_key, redis_client

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import RedisSettings

_LUA = Path(__file__).with_name("api_keys.lua").read_text(encoding="utf-8")
_BUCKET_TTL_S = 60


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A stored key (never its secret). ``per_s``/``burst`` None: the API's default rate."""

    key_id: str
    digest: str
    name: str
    role: str
    scopes: frozenset[str]
    per_s: float | None
    burst: int | None
    created_ms: int
    revoked_ms: int | None
    #: The envelope ``source`` of events the collector accepts with this key (``collect:write``; "" : ``api``).
    source: str = ""

    def to_json(self) -> dict[str, object]:
        return {"id": self.key_id, "name": self.name, "role": self.role, "scopes": sorted(self.scopes),
                "per_s": self.per_s, "burst": self.burst, "created_ms": self.created_ms,
                "revoked_ms": self.revoked_ms, "source": self.source}


def _record(key_id: str, h: dict[str, str]) -> KeyRecord:
    return KeyRecord(key_id, h["digest"], h.get("name", ""), h.get("role", ""),
                     frozenset(s for s in h.get("scopes", "").split(",") if s),
                     float(h["per_s"]) if h.get("per_s") else None, int(h["burst"]) if h.get("burst") else None,
                     int(h.get("created_ms", "0")), int(h["revoked_ms"]) if h.get("revoked_ms") else None,
                     h.get("source", ""))


class RedisApiKeys:
    """Create, read, list and revoke keys; take a token from a key's bucket."""

    def __init__(self, cfg: RedisSettings, prefix: str | None = None) -> None:
        self.prefix = prefix or cfg.prefix
        self.client = redis_client(cfg, socket_timeout=5)
        self._take = cast(Any, self.client).register_script(_LUA)

    def _key(self, key_id: str) -> str:
        return f"{self.prefix}:apikey:{key_id}"

    def create(self, rec: KeyRecord) -> None:
        fields = {"digest": rec.digest, "name": rec.name, "role": rec.role, "scopes": ",".join(sorted(rec.scopes)),
                  "created_ms": str(rec.created_ms), "source": rec.source}
        if rec.per_s is not None:
            fields["per_s"] = repr(rec.per_s)
        if rec.burst is not None:
            fields["burst"] = str(rec.burst)
        if not self.client.hsetnx(self._key(rec.key_id), "digest", rec.digest):
            raise ValueError(f"API key id {rec.key_id} exists already; create the key again (a new random id)")
        self.client.hset(self._key(rec.key_id), mapping=fields)
        self.client.sadd(f"{self.prefix}:apikeys", rec.key_id)

    def get(self, key_id: str) -> KeyRecord | None:
        h = cast(dict[str, str], self.client.hgetall(self._key(key_id)))
        return _record(key_id, h) if h.get("digest") else None

    def list(self) -> list[KeyRecord]:
        ids = sorted(cast(set[str], self.client.smembers(f"{self.prefix}:apikeys")))
        return [r for r in (self.get(i) for i in ids) if r is not None]

    def revoke(self, key_id: str, now_ms: int) -> KeyRecord | None:
        """Mark the key revoked (it stays listed); None when there is no such key. Revoking twice keeps the
        first time."""
        rec = self.get(key_id)
        if rec is None:
            return None
        self.client.hsetnx(self._key(key_id), "revoked_ms", str(now_ms))
        return self.get(key_id)

    def take(self, key_id: str, now_ms: int, per_s: float, burst: int) -> float:
        """One token of ``key_id``'s bucket (``operators.delivery.ratelimit.take`` in Lua, atomic across API
        processes): 0.0 when taken, else the seconds until one is available."""
        bucket = f"{self.prefix}:apirate:{key_id}"
        out = self._take(keys=[bucket], args=[now_ms, per_s, burst, _BUCKET_TTL_S],
                         client=client_for_key(self.client, bucket))
        return float(out)

    def close(self) -> None:
        self.client.close()
