"""Redis: the live store (counters, profiles, pipeline totals). The only module importing ``redis``.

Writes are idempotent under replay (DESIGN.md): counters and totals are absolute values taken from
Flink state (``HSET``), profile buckets go through ``redis_profile.lua`` which applies the change
against the value stored before. Nothing here is a blind increment of a replayable input.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import redis

from operators import profile_windows

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import RedisSettings

logger = logging.getLogger(__name__)

_LUA = Path(__file__).with_name("redis_profile.lua").read_text(encoding="utf-8")
#: identifier → person, with the person's identifier set kept in step (idempotent: replays are no-ops).
#: KEYS[1] = id key; ARGV = person id ('' = none), identifier, prefix of the person's identifier sets.
_ID_LUA = """
local old = redis.call('GET', KEYS[1])
if old == ARGV[1] or (not old and ARGV[1] == '') then return 0 end
if old then redis.call('SREM', ARGV[3] .. old, ARGV[2]) end
if ARGV[1] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('SADD', ARGV[3] .. ARGV[1], ARGV[2])
end
return 1
"""


@dataclass(frozen=True, slots=True)
class StoreRow:
    """One upsert from the job's aggregates (the ``zt_store_rows`` view).

    kind ``c``: live counters, ``key`` = scope, ``bucket`` = epoch minute;
    kind ``p``: person minute bucket, ``key`` = person, ``bucket`` = epoch minute;
    kind ``pd``: that person minute bucket no longer exists (its anchor moved to another person);
    kind ``i``: identifier ``key`` belongs to person ``s1``; ``id``: identifier ``key`` has no person;
    kind ``e``: identity edge-log record (HBase only): ``key`` = anchor, ``bucket`` = ts, ``n1`` = accepted,
    ``s1`` = ``"<other>|<reason>|<event_id>"``;
    kind ``t`` / ``tr``: person ``key`` gained / lost tag ``s1`` at event time ``bucket``;
    kind ``ac``: action counter ``key`` (``<rule>|<channel>`` / ``suppressed:<reason>``) = ``n1``;
    kind ``ax``: action audit (HBase only): ``key`` = action_id, ``n1`` = 1 emitted / 0 suppressed, ``s1`` = JSON;
    kind ``cv``: attributed conversions of ``key`` (``<rule>|<channel>``): ``n1`` = count, ``amount`` = revenue;
    kind ``cx``: one conversion (HBase only): ``key`` = action_id, ``bucket`` = purchase ts, ``s1`` = its JSON
    (``operators.rules.attribution.Conversion.to_json()``);
    kind ``s``: pipeline total, ``key`` = name, ``n1`` = value.
    """

    kind: str
    key: str
    bucket: int
    n1: int  # views | value
    n2: int  # carts
    n3: int  # purchases
    n4: int  # events
    n5: int  # persons (counters only)
    amount: Decimal  # revenue / gmv
    t1: int  # first ts in bucket
    t2: int  # last ts in bucket
    t3: int  # last purchase ts in bucket, 0 if none
    s1: str | None = None  # person id (``i``) / edge details (``e``)


def redis_client(cfg: RedisSettings, socket_timeout: float = 30) -> redis.Redis:
    """The one way zhongtai connects to Redis (string replies, the configured db and password)."""
    return redis.Redis(
        host=cfg.host,
        port=cfg.port,
        db=cfg.db,
        password=cfg.password.get_secret_value() if cfg.password else None,
        decode_responses=True,
        socket_timeout=socket_timeout,
    )


def minute_label(epoch_minute: int) -> str:
    """Epoch minute → ``YYYYMMDDHHMM`` (UTC)."""
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch_minute * 60, tz=dt.UTC).strftime("%Y%m%d%H%M")


def _cents(amount: Decimal | None) -> int:
    return int((amount or Decimal(0)) * 100)


class RedisStore:
    """Batched, idempotent writer and reader of zhongtai's Redis keys.

    Create it where it is used (inside a Flink function's ``open``): it holds a connection.
    """

    def __init__(self, cfg: RedisSettings, prefix: str | None = None) -> None:
        self.cfg = cfg
        self.prefix = prefix or cfg.prefix
        self.client = redis_client(cfg)
        self._profile_script = self.client.register_script(_LUA)
        self._id_script = self.client.register_script(_ID_LUA)

    # ---- keys -----------------------------------------------------------------------------------
    def counter_key(self, scope: str, minute_label_: str) -> str:
        return f"{self.prefix}:m:{scope}:{minute_label_}"

    def profile_key(self, person: str) -> str:
        return f"{self.prefix}:profile:{person}"

    def id_key(self, ident: str) -> str:
        """``{prefix}:id:{type}:{value}`` → person id."""
        return f"{self.prefix}:id:{ident}"

    @property
    def members_prefix(self) -> str:
        """``{prefix}:ids:{pid}`` is the set of a person's identifiers."""
        return f"{self.prefix}:ids:"

    @property
    def stats_key(self) -> str:
        return f"{self.prefix}:stats"

    # ---- writing --------------------------------------------------------------------------------
    def write(self, rows: Sequence[StoreRow]) -> int:
        """Write one batch in a single pipelined round trip. Returns the number of rows applied."""
        if not rows:
            return 0
        pipe = self.client.pipeline(transaction=False)
        scopes: set[str] = set()
        for r in rows:
            if r.kind == "c":
                key = self.counter_key(r.key, minute_label(r.bucket))
                pipe.hset(
                    key,
                    mapping={
                        "views": r.n1,
                        "carts": r.n2,
                        "purchases": r.n3,
                        "events": r.n4,
                        "persons": r.n5,
                        "revenue": str((r.amount or Decimal(0)).quantize(Decimal("0.01"))),
                    },
                )
                pipe.expire(key, self.cfg.minute_counter_ttl_s)
                scopes.add(r.key)
            elif r.kind in ("p", "pd"):
                self._profile_script(
                    keys=[self.profile_key(r.key)],
                    args=[
                        r.bucket, r.n1, r.n2, r.n3, r.n4, _cents(r.amount), r.t1, r.t2, r.t3,
                        profile_windows.KEEP_MINUTES, profile_windows.KEEP_HOURS, profile_windows.KEEP_DAYS,
                        "del" if r.kind == "pd" else "set",
                    ],
                    client=pipe,
                )
            elif r.kind in ("i", "id"):
                pid = r.s1 if r.kind == "i" and r.s1 else ""
                self._id_script(keys=[self.id_key(r.key)], args=[pid, r.key, self.members_prefix], client=pipe)
            elif r.kind in ("t", "tr"):  # tag added / removed: ``{prefix}:tag:{tag}`` and the person's set
                op = pipe.sadd if r.kind == "t" else pipe.srem
                op(f"{self.prefix}:tag:{r.s1}", r.key)
                op(f"{self.prefix}:tags:{r.key}", r.s1)
            elif r.kind == "ac":  # action counters: "<rule>|<channel>" or "suppressed:<reason>"
                pipe.hset(f"{self.prefix}:actions", r.key, r.n1)
            elif r.kind == "cv":  # attributed conversions per "<rule>|<channel>": count and revenue
                pipe.hset(f"{self.prefix}:conversions", r.key, r.n1)
                pipe.hset(f"{self.prefix}:conversions:revenue", r.key,
                          str((r.amount or Decimal(0)).quantize(Decimal("0.01"))))
            elif r.kind in ("e", "ax", "cx"):
                continue  # edge log and action audit are durable history: HBase only
            elif r.kind == "s":
                pipe.hset(self.stats_key, r.key, r.n1)
            else:  # pragma: no cover - the SQL only produces the kinds above
                raise ValueError(f"redis store: unknown row kind {r.kind!r} for key {r.key!r}")
        if scopes:
            pipe.sadd(f"{self.prefix}:m:scopes", *sorted(scopes))
        pipe.execute()
        return len(rows)

    # ---- reading --------------------------------------------------------------------------------
    def profile_hash(self, person: str) -> dict[str, str]:
        return self.client.hgetall(self.profile_key(person))

    def profile(self, person: str, as_of: int | None = None) -> dict[str, object]:
        return profile_windows.evaluate(self.profile_hash(person), as_of)

    def counters(self, scope: str, minute_label_: str) -> dict[str, str]:
        return self.client.hgetall(self.counter_key(scope, minute_label_))

    def all_counters(self) -> dict[str, dict[str, str]]:
        """Every live counter hash, keyed ``<scope>:<YYYYMMDDHHMM>`` (for tests and the demo)."""
        out: dict[str, dict[str, str]] = {}
        head = f"{self.prefix}:m:"
        keys = [k for k in self.client.scan_iter(match=head + "*", count=1000) if k != head + "scopes"]
        pipe = self.client.pipeline(transaction=False)
        for k in keys:
            pipe.hgetall(k)
        for k, v in zip(keys, pipe.execute(), strict=True):
            out[k[len(head):]] = v
        return out

    def person_of(self, ident: str) -> str | None:
        """The person id of identifier ``"type:value"`` (value as stored: phone/e-mail hashed), or None."""
        return self.client.get(self.id_key(ident))

    def identifiers(self, pid: str) -> list[str]:
        return sorted(self.client.smembers(self.members_prefix + pid))

    def tags_of(self, pid: str) -> list[str]:
        """The person's live tags (``{prefix}:tags:{pid}`` set, kept with the ``{prefix}:tag:{tag}`` sets)."""
        return sorted(self.client.smembers(f"{self.prefix}:tags:{pid}"))

    def action_counters(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.client.hgetall(f"{self.prefix}:actions").items()}

    def conversion_counters(self) -> dict[str, tuple[int, str]]:
        """Attributed conversions per ``<rule>|<channel>``: (count, revenue as a 2-decimal string)."""
        counts = self.client.hgetall(f"{self.prefix}:conversions")
        revenue = self.client.hgetall(f"{self.prefix}:conversions:revenue")
        return {k: (int(v), revenue.get(k, "0.00")) for k, v in counts.items()}

    def tag_members(self, tag: str) -> set[str]:
        return set(self.client.smembers(f"{self.prefix}:tag:{tag}"))

    def id_mapping(self) -> dict[str, str]:
        """Every identifier → person id under this prefix (tests, audits)."""
        head = f"{self.prefix}:id:"
        keys = list(self.client.scan_iter(match=head + "*", count=1000))
        values = self.client.mget(keys) if keys else []
        return {k[len(head):]: v for k, v in zip(keys, values, strict=True) if v is not None}

    def persons(self) -> list[str]:
        head = f"{self.prefix}:profile:"
        return [k[len(head):] for k in self.client.scan_iter(match=head + "*", count=1000)]

    def stats(self) -> dict[str, int]:
        """Pipeline totals as written (``valid``, ``unique``, ``dlq:<reason>``) plus the derived
        ``dlq`` (sum of the reasons), ``received`` (valid + dlq) and ``duplicates`` (valid - unique)."""
        out = {k: int(v) for k, v in self.client.hgetall(self.stats_key).items()}
        if out:
            out["dlq"] = sum(v for k, v in out.items() if k.startswith("dlq:"))
            out["received"] = out.get("valid", 0) + out["dlq"]
            out["duplicates"] = out.get("valid", 0) - out.get("unique", 0)
        return out

    def delete_prefix(self) -> int:
        """Delete every key under this store's prefix (tests, ``zhongtai reset``)."""
        n = 0
        for batch in _chunks(self.client.scan_iter(match=f"{self.prefix}:*", count=1000), 500):
            n += self.client.delete(*batch)
        return n

    def close(self) -> None:
        self.client.close()


def _chunks(it: Iterable[str], n: int) -> Iterable[list[str]]:
    buf: list[str] = []
    for x in it:
        buf.append(x)
        if len(buf) >= n:
            yield buf
            buf = []
    if buf:
        yield buf
