"""Redis: the live store (counters, profiles, pipeline totals), standalone or Redis Cluster.

Writes are idempotent under replay (DESIGN.md): counters and totals are absolute values taken from
Flink state (``HSET``), profile buckets go through ``redis_profile.lua`` which applies the change
against the value stored before. Nothing here is a blind increment of a replayable input.

Every command touches one key, or one key per Lua call, so the layout works unchanged on a Redis
Cluster (docs/semantics.md, "Redis keys"). Clients come from ``connectors.redis_clients``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from connectors.redis_clients import Client, execute_scripted, mget, queue_script
from connectors.redis_clients import redis_client as redis_client
from operators import profile_windows

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import RedisSettings

logger = logging.getLogger(__name__)

_LUA = Path(__file__).with_name("redis_profile.lua").read_text(encoding="utf-8")
#: Replace a sorted set as a whole, atomically (readers never see it half written): KEYS[1], ARGV = score,
#: member, score, member, ... (none: the key is deleted).
_ZSET_REPLACE = """
redis.call('DEL', KEYS[1])
if #ARGV > 0 then redis.call('ZADD', KEYS[1], unpack(ARGV)) end
return #ARGV / 2
"""
#: Fields of ``{prefix}:stats`` derived from the others (the job writes the rest as absolute values).
_DERIVED = frozenset({"dlq", "received", "duplicates"})


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
    kind ``tv``: person ``key``'s computed trait: ``s1`` = ``<trait>=<value as JSON>`` (``null``: it has none),
    as of event time ``bucket`` (``operators.traits``);
    kind ``ac``: action counter ``key`` (``<rule>|<channel>`` / ``suppressed:<reason>``) = ``n1``;
    kind ``ax``: action audit (HBase only): ``key`` = action_id, ``n1`` = 1 emitted / 0 suppressed, ``s1`` = JSON;
    kind ``cv``: attributed conversions of ``key`` (``<rule>|<channel>``): ``n1`` = count, ``amount`` = revenue;
    kind ``cx``: one conversion (HBase only): ``key`` = action_id, ``bucket`` = purchase ts, ``s1`` = its JSON
    (``operators.rules.attribution.Conversion.to_json()``);
    kind ``s``: pipeline total, ``key`` = name, ``n1`` = value;
    kind ``ri``: item ``key``'s similar items, ``s1`` = the whole list as JSON ``[[item, score]...]``
    (``state.recs.encode_neighbours_row``; ``[]`` deletes ``{prefix}:rec:item:{key}``);
    kind ``rp``: person ``key``'s recommender window, ``s1`` = ``state.recs.encode_window_row`` (``""``: deleted);
    kind ``pr``: item ``key``'s list price from ``bucket`` (ms) on, ``n1`` = cents, ``s1`` = the change's record
    (``operators.pricing.step.PriceChange.record``); ``{prefix}:price:{key}``;
    kind ``po``: an offer decision for person ``key`` at ``bucket``, ``n1`` = offer cents (0: refused), ``n2`` =
    the TTL (s) of ``{prefix}:offers:{key}``, ``s1`` = the record (``operators.pricing.offers.Offer.record``).
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


@dataclass(frozen=True, slots=True)
class IdentifierMoves:
    """What a batch's identifier rows change: ``members`` = (``"sadd"`` | ``"srem"``, person, identifier)
    on the persons' identifier sets, in row order; ``persons`` = identifier → its person after the
    batch (``""``: none) for every identifier whose person changed."""

    members: list[tuple[str, str, str]]
    persons: dict[str, str]


def identifier_moves(rows: Sequence[StoreRow], stored: dict[str, str | None]) -> IdentifierMoves:
    """Apply the ``i`` / ``id`` rows of a batch, in order, to the mapping ``stored`` before it (identifier
    → person or None). A row that names the person already stored changes nothing (a replay)."""
    current = dict(stored)
    members: list[tuple[str, str, str]] = []
    persons: dict[str, str] = {}
    for r in rows:
        if r.kind not in ("i", "id"):
            continue
        new = r.s1 if r.kind == "i" and r.s1 else ""
        old = current.get(r.key) or ""
        if old == new:
            continue
        if old:
            members.append(("srem", old, r.key))
        if new:
            members.append(("sadd", new, r.key))
        current[r.key] = persons[r.key] = new
    return IdentifierMoves(members, persons)


def minute_label(epoch_minute: int) -> str:
    """Epoch minute → ``YYYYMMDDHHMM`` (UTC)."""
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch_minute * 60, tz=dt.UTC).strftime("%Y%m%d%H%M")


def _cents(amount: Decimal | None) -> int:
    return int((amount or Decimal(0)) * 100)


class RedisStore:
    """Batched, idempotent writer and reader of zhongtai's Redis keys.

    Create it where it is used (inside a Flink function's ``open``): it holds a connection, made on first
    use (so a store whose Redis is down can be created, and fails on its first command).
    """

    def __init__(self, cfg: RedisSettings, prefix: str | None = None) -> None:
        self.cfg = cfg
        self.prefix = prefix or cfg.prefix
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = redis_client(self.cfg)
            self._profile_script = self._client.register_script(_LUA)
            self._zset_script = self._client.register_script(_ZSET_REPLACE)
        return self._client

    # ---- keys -----------------------------------------------------------------------------------
    def counter_key(self, scope: str, minute_label_: str) -> str:
        return f"{self.prefix}:m:{scope}:{minute_label_}"

    def profile_key(self, person: str) -> str:
        return f"{self.prefix}:profile:{person}"

    def traits_key(self, person: str) -> str:
        return f"{self.prefix}:traits:{person}"

    def id_key(self, ident: str) -> str:
        """``{prefix}:id:{type}:{value}`` → person id."""
        return f"{self.prefix}:id:{ident}"

    @property
    def members_prefix(self) -> str:
        """``{prefix}:ids:{pid}`` is the set of a person's identifiers."""
        return f"{self.prefix}:ids:"

    def rec_item_key(self, item: str) -> str:
        """``{prefix}:rec:item:{item}``: sorted set of the item's similar items (score = similarity)."""
        return f"{self.prefix}:rec:item:{item}"

    def rec_person_key(self, person: str) -> str:
        return f"{self.prefix}:rec:person:{person}"

    def price_key(self, item: str) -> str:
        """``{prefix}:price:{item}``: hash of the item's list price (docs/pricing.md)."""
        return f"{self.prefix}:price:{item}"

    def offers_key(self, person: str) -> str:
        """``{prefix}:offers:{person}``: hash offer id → the granted offer's record (JSON)."""
        return f"{self.prefix}:offers:{person}"

    @property
    def stats_key(self) -> str:
        return f"{self.prefix}:stats"

    # ---- writing --------------------------------------------------------------------------------
    def write(self, rows: Sequence[StoreRow]) -> int:
        """Write one batch; returns the number of rows applied.

        Three pipelined round trips: read the identifiers' stored persons; write every row but the
        identifier keys (with the persons' identifier sets moved, :func:`identifier_moves`); then set the
        identifier keys. An identifier key changes only after its sets did, so a batch cut short anywhere
        and written again (the applier retries, a replay) reads the old person again and ends the same."""
        if not rows:
            return 0
        client = self.client
        idents = list(dict.fromkeys(r.key for r in rows if r.kind in ("i", "id")))
        stored = mget(client, [self.id_key(i) for i in idents])
        moves = identifier_moves(rows, dict(zip(idents, stored, strict=True)))
        execute_scripted(client, [self._profile_script, self._zset_script], lambda pipe: self._queue(pipe, rows, moves))
        if moves.persons:
            self._set_identifiers(moves.persons)
        if any(r.kind == "s" for r in rows):
            self._derive_stats()
        return len(rows)

    def _derive_stats(self) -> None:
        """The hash's derived totals (docs/semantics.md): ``dlq`` (sum of the reasons), ``received`` (valid +
        dlq), ``duplicates`` (valid − unique), from the absolute totals just written: idempotent."""
        h = {k: int(v) for k, v in self.client.hgetall(self.stats_key).items() if k not in _DERIVED}
        dlq = sum(v for k, v in h.items() if k.startswith("dlq:"))
        self.client.hset(self.stats_key, mapping={"dlq": dlq, "received": h.get("valid", 0) + dlq,
                                                  "duplicates": h.get("valid", 0) - h.get("unique", 0)})

    def _set_identifiers(self, persons: dict[str, str]) -> None:
        """The last step of :meth:`write`: identifier → person keys (``""``: the key is deleted)."""
        pipe = self.client.pipeline(transaction=False)
        for ident, pid in persons.items():
            if pid:
                pipe.set(self.id_key(ident), pid)
            else:
                pipe.delete(self.id_key(ident))
        pipe.execute()

    def _queue(self, pipe: Any, rows: Sequence[StoreRow], moves: IdentifierMoves) -> None:
        """Queue the writes of ``rows`` on ``pipe``, identifier keys excepted (see :meth:`write`)."""
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
                queue_script(pipe, self._profile_script, [self.profile_key(r.key)], [
                    r.bucket, r.n1, r.n2, r.n3, r.n4, _cents(r.amount), r.t1, r.t2, r.t3,
                    profile_windows.KEEP_MINUTES, profile_windows.KEEP_HOURS, profile_windows.KEEP_DAYS,
                    "del" if r.kind == "pd" else "set",
                ])
            elif r.kind in ("i", "id"):
                continue  # moves.members below; the identifier key itself after this pipeline
            elif r.kind in ("t", "tr"):  # tag added / removed: ``{prefix}:tag:{tag}`` and the person's set
                op = pipe.sadd if r.kind == "t" else pipe.srem
                op(f"{self.prefix}:tag:{r.s1}", r.key)
                op(f"{self.prefix}:tags:{r.key}", r.s1)
            elif r.kind == "tv":  # a computed trait's value: ``{prefix}:traits:{person}`` (not the profile hash,
                # which the profile script deletes when its last bucket leaves: a trait row may come before)
                name, _, value = (r.s1 or "").partition("=")
                v = orjson.loads(value) if value else None
                if v is None:
                    pipe.hdel(self.traits_key(r.key), name)
                else:
                    pipe.hset(self.traits_key(r.key), name, v if isinstance(v, str) else orjson.dumps(v).decode())
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
            elif r.kind == "ri":  # the item's whole neighbour list, replaced at once (absolute: replay-safe)
                args = [x for item, score in orjson.loads(r.s1 or "[]") for x in (repr(float(score)), item)]
                queue_script(pipe, self._zset_script, [self.rec_item_key(r.key)], args)
            elif r.kind == "rp":
                if r.s1:
                    pipe.set(self.rec_person_key(r.key), r.s1)
                else:
                    pipe.delete(self.rec_person_key(r.key))
            elif r.kind == "pr":  # the whole price hash from the change's record (absolute: replay-safe)
                rec = orjson.loads(r.s1 or "{}")
                pipe.hset(self.price_key(r.key), mapping={
                    "price_cents": r.n1, "ts_ms": r.bucket, "policy": rec.get("policy") or "",
                    "variant": rec.get("variant") or "", "reasons": ",".join(rec.get("reasons") or ()),
                    "record": r.s1 or "{}"})
                pipe.sadd(f"{self.prefix}:price:items", r.key)
            elif r.kind == "po":  # granted offers only (refusals are history: HBase and the pricing topic)
                if r.n1 > 0:
                    rec = orjson.loads(r.s1 or "{}")
                    pipe.hset(self.offers_key(r.key), rec.get("offer_id", ""), r.s1 or "{}")
                    pipe.expire(self.offers_key(r.key), max(1, r.n2))
            else:  # pragma: no cover - the SQL only produces the kinds above
                raise ValueError(f"redis store: unknown row kind {r.kind!r} for key {r.key!r}")
        for op, pid, ident in moves.members:
            (pipe.sadd if op == "sadd" else pipe.srem)(self.members_prefix + pid, ident)
        if scopes:
            pipe.sadd(f"{self.prefix}:m:scopes", *sorted(scopes))

    # ---- reading --------------------------------------------------------------------------------
    def profile_hash(self, person: str) -> dict[str, str]:
        return self.client.hgetall(self.profile_key(person))

    def profile(self, person: str, as_of: int | None = None) -> dict[str, object]:
        return profile_windows.evaluate(self.profile_hash(person), as_of)

    def traits(self, person: str) -> dict[str, str]:
        """The person's computed traits (``config/schema.yaml`` ``traits:``) as stored: name → value text."""
        return self.client.hgetall(self.traits_key(person))

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

    def similar_items(self, item: str, k: int | None = None) -> list[tuple[str, float]]:
        """The item's similar items, best first (ties by item id), at most ``k``."""
        pairs = self.client.zrange(self.rec_item_key(item), 0, -1, withscores=True)
        return sorted(((m, float(s)) for m, s in pairs), key=lambda ms: (-ms[1], ms[0]))[:k]

    def similar_items_many(self, items: Sequence[str]) -> dict[str, list[tuple[str, float]]]:
        """:meth:`similar_items` of several items in one pipelined round trip."""
        pipe = self.client.pipeline(transaction=False)
        for item in items:
            pipe.zrange(self.rec_item_key(item), 0, -1, withscores=True)
        return {item: sorted(((m, float(s)) for m, s in pairs), key=lambda ms: (-ms[1], ms[0]))
                for item, pairs in zip(items, pipe.execute() if items else [], strict=True)}

    def rec_window(self, person: str) -> str | None:
        """The person's recommender window as the job wrote it (``state.recs.decode_window_row``), or None."""
        return self.client.get(self.rec_person_key(person))

    def price(self, item: str) -> dict[str, str]:
        """The item's list-price hash (``price_cents``, ``ts_ms``, ``policy``, ``variant``, ``reasons``,
        ``record``), empty when the job has priced nothing for it."""
        return self.client.hgetall(self.price_key(item))

    def offers(self, person: str) -> list[dict[str, Any]]:
        """The person's granted offers (records), oldest first; expired ones included (the reader decides)."""
        recs = [orjson.loads(v) for v in self.client.hvals(self.offers_key(person))]
        return sorted(recs, key=lambda r: (r.get("ts_ms", 0), r.get("offer_id", "")))

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
        values = mget(self.client, keys)
        return {k[len(head):]: v for k, v in zip(keys, values, strict=True) if v is not None}

    def persons(self) -> list[str]:
        head = f"{self.prefix}:profile:"
        return [k[len(head):] for k in self.client.scan_iter(match=head + "*", count=1000)]

    def stats(self) -> dict[str, int]:
        """Pipeline totals (``valid``, ``unique``, ``dlq:<reason>``) and the derived ``dlq`` (sum of the
        reasons), ``received`` (valid + dlq), ``duplicates`` (valid - unique): the writer stores them too
        (``_derive_stats``); they are derived here again so that a hash from an older writer reads the same."""
        out = {k: int(v) for k, v in self.client.hgetall(self.stats_key).items() if k not in _DERIVED}
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
        if self._client is not None:
            self._client.close()
            self._client = None


def _chunks(it: Iterable[str], n: int) -> Iterable[list[str]]:
    buf: list[str] = []
    for x in it:
        buf.append(x)
        if len(buf) >= n:
            yield buf
            buf = []
    if buf:
        yield buf
