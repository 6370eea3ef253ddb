"""HBase: the durable profile store. The only module importing ``happybase``.

Layout (DESIGN.md, tables named ``{namespace}_{table}`` through happybase's table prefix):
``profile`` row = person id; family ``b`` holds the absolute per-minute buckets
(``b:m:{epoch_minute}`` = ``views,carts,purchases,events,gmv_cents,first,last,last_purchase``,
the same row the Redis profile applies), family ``i`` the person's identifiers; ``identity`` row =
identifier (``p:pid`` its person, ``e:<ts>:<other>`` its edge log); ``actions`` row = action id
(``a:status``, ``a:record``, ``a:ts`` its audit; ``a:c:<purchase event id>`` a purchase attributed to it);
``audit`` row = :func:`audit_row` (newest first), ``a:e`` the JSON entry of one control change made through
the API (docs/api.md, "Audit"); ``prices`` row = item (``c:<ts 13 digits>`` each list-price change's record), ``offers`` row = person
(``o:<ts 13 digits>:<offer id>`` each offer decision's record, granted or refused; docs/pricing.md).
A bucket cell is written with its absolute value from Flink state, so a replay writes the same
cell again: idempotent, and order-independent because one bucket is owned by one aggregate key.
Lifetime totals and rolling windows are derived from the buckets by ``operators.profile_windows``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import happybase

from connectors.redis_store import StoreRow, _cents

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import HBaseSettings

logger = logging.getLogger(__name__)

TABLES: dict[str, dict[str, dict]] = {
    "profile": {"b": {"max_versions": 1}, "m": {"max_versions": 1}, "t": {"max_versions": 1}, "i": {"max_versions": 1}},
    "identity": {"p": {"max_versions": 1}, "e": {"max_versions": 1}},
    "actions": {"a": {"max_versions": 1}},
    "prices": {"c": {"max_versions": 1}},
    "offers": {"o": {"max_versions": 1}},
}
#: The API's audit log (zhongtai/services/api/audit.py): created by the API on its first entry, not by the job,
#: which never writes it.
AUDIT_TABLES: dict[str, dict[str, dict]] = {"audit": {"a": {"max_versions": 1}}}


class HBaseSchemaError(RuntimeError):
    """An existing zhongtai table lacks column families the store writes (created by an older zhongtai)."""


def missing_families(conn: happybase.Connection) -> dict[str, list[str]]:
    """Table (name without the prefix) → the families of :data:`TABLES` the existing table lacks.

    Tables that do not exist are not listed (``ensure_tables`` creates them)."""
    existing = {t.decode() for t in conn.tables()}
    out: dict[str, list[str]] = {}
    for name, families in TABLES.items():
        if name in existing:
            have = {f.decode().rstrip(":") for f in conn.table(name).families()}
            lacking = sorted(set(families) - have)
            if lacking:
                out[name] = lacking
    return out


def schema_advice(prefix: str, missing: dict[str, list[str]]) -> str:
    """What to do about :func:`missing_families`, for an error message."""
    tables = "; ".join(f"{prefix}_{t} lacks {', '.join(fams)}" for t, fams in sorted(missing.items()))
    alters = "; ".join(f"alter '{prefix}_{t}', " + ", ".join(f"{{NAME => '{f}', VERSIONS => 1}}" for f in fams)
                       for t, fams in sorted(missing.items()))
    return (f"HBase tables created by an older zhongtai: {tables}. Add the families in the HBase shell "
            f"({alters}), or drop the tables and let zhongtai create them.")


class HBaseStore:
    def __init__(self, cfg: HBaseSettings, prefix: str | None = None) -> None:
        self.cfg = cfg
        self.prefix = prefix or cfg.namespace
        self.conn = happybase.Connection(
            host=cfg.host, port=cfg.port, table_prefix=self.prefix, table_prefix_separator="_",
            timeout=cfg.timeout_ms, autoconnect=True,
        )

    def ensure_tables(self, tables: Mapping[str, dict[str, dict]] = TABLES) -> None:
        """Create the missing ``tables`` (safe when several workers race to create the same one)."""
        from Hbase_thrift import AlreadyExists, IOError  # happybase's generated Thrift module

        existing = {t.decode() for t in self.conn.tables()}
        for name, families in tables.items():
            if name not in existing:
                try:
                    self.conn.create_table(name, families)
                    logger.info("hbase: created table %s_%s", self.prefix, name)
                except AlreadyExists:
                    pass
                except IOError as e:  # the Thrift1 server reports a lost creation race this way
                    if b"TableExistsException" not in (getattr(e, "message", b"") or b""):
                        raise
        missing = missing_families(self.conn)
        if missing:
            raise HBaseSchemaError(schema_advice(self.prefix, missing))

    def write(self, rows: Sequence[StoreRow]) -> int:
        """Write a batch's person buckets, identifier mappings and edge-log records (one batch per table).

        ``profile`` row = person id: ``b:m:<minute>`` buckets (removed with ``pd``), ``i:<identifier>``,
        ``t:<tag>`` = event time it was added (removed when the tag is).
        ``identity`` row = identifier: ``p:pid`` (removed with ``id``), ``e:<ts>:<other>`` edge records.
        The ``i:`` cell of the person an identifier left is removed too (its old pid is read first).

        Removal writes an EMPTY value (a tombstone the readers skip), never an HBase delete: a delete
        masks every put of the same cell with the same server timestamp (millisecond), so a bucket
        removed and re-added within one millisecond (an anchor moving between persons) would vanish.
        Puts of one cell with equal timestamps keep the last one written. Within a batch only the
        last value of each cell is sent.
        """
        cells: dict[tuple[str, bytes, bytes], bytes] = {}  # (table, row, column) → value, in row order
        idents = [r for r in rows if r.kind in ("i", "id")]
        old_pid: dict[str, str] = {}
        if idents:
            for key, data in self.conn.table("identity").rows([r.key.encode() for r in idents], columns=[b"p:pid"]):
                if data.get(b"p:pid"):
                    old_pid[key.decode()] = data[b"p:pid"].decode()
        n = 0
        for r in rows:
            key = r.key.encode()
            if r.kind in ("p", "pd"):
                value = f"{r.n1},{r.n2},{r.n3},{r.n4},{_cents(r.amount)},{r.t1},{r.t2},{r.t3}" if r.kind == "p" else ""
                cells["profile", key, f"b:m:{r.bucket}".encode()] = value.encode()
            elif r.kind in ("i", "id"):
                col = f"i:{r.key}".encode()
                before = old_pid.get(r.key)
                pid = r.s1 if r.kind == "i" else None
                if before and before != pid:
                    cells["profile", before.encode(), col] = b""
                cells["identity", key, b"p:pid"] = pid.encode() if pid else b""
                if pid:
                    cells["profile", pid.encode(), col] = b"1"
                old_pid[r.key] = pid or ""
            elif r.kind == "ax":
                status = b"emitted" if r.n1 else b"suppressed"
                cells["actions", key, b"a:status"] = status
                cells["actions", key, b"a:record"] = (r.s1 or "").encode()
                cells["actions", key, b"a:ts"] = str(r.bucket).encode()
            elif r.kind == "cx":  # a purchase attributed to this action: a:c:<purchase event id>
                eid = json.loads(r.s1 or "{}").get("purchase_event_id", "")
                cells["actions", key, f"a:c:{eid}".encode()] = (r.s1 or "").encode()
            elif r.kind == "pr":
                cells["prices", key, f"c:{r.bucket:013d}".encode()] = (r.s1 or "").encode()
            elif r.kind == "po":
                oid = json.loads(r.s1 or "{}").get("offer_id", "")
                cells["offers", key, f"o:{r.bucket:013d}:{oid}".encode()] = (r.s1 or "").encode()
            elif r.kind in ("t", "tr"):
                cells["profile", key, f"t:{r.s1}".encode()] = str(r.bucket).encode() if r.kind == "t" else b""
            elif r.kind == "tv":  # a computed trait: b:t:<name> = its value text (empty: none)
                name, _, value = (r.s1 or "").partition("=")
                v = json.loads(value) if value else None
                text = "" if v is None else v if isinstance(v, str) else json.dumps(v)
                cells["profile", key, f"b:t:{name}".encode()] = text.encode()
            elif r.kind == "e":
                other, _, rest = (r.s1 or "").partition("|")
                cells["identity", key, f"e:{r.bucket:013d}:{other}".encode()] = f"{r.n1}|{rest}".encode()
            else:
                continue
            n += 1
        by_table: dict[str, dict[bytes, dict[bytes, bytes]]] = {}
        for (table_name, row_key, col_name), cell in cells.items():
            by_table.setdefault(table_name, {}).setdefault(row_key, {})[col_name] = cell
        for table, puts in by_table.items():
            with self.conn.table(table).batch(batch_size=self.cfg.batch_size) as b:
                for row, data in puts.items():
                    b.put(row, data)
        return n

    def action(self, action_id: str) -> dict[str, str]:
        row = self.conn.table("actions").row(action_id.encode())
        return {k.decode()[2:]: v.decode() for k, v in row.items()}

    def conversions(self, action_id: str) -> dict[str, str]:
        """The purchases attributed to an action: purchase event id → conversion JSON (``a:c:*`` cells)."""
        row = self.conn.table("actions").row(action_id.encode())
        return {k.decode()[4:]: v.decode() for k, v in row.items() if k.startswith(b"a:c:")}

    def price_history(self, item: str) -> list[dict]:
        """The item's list-price changes (records), oldest first."""
        row = self.conn.table("prices").row(item.encode(), columns=[b"c"])
        return [json.loads(v) for _, v in sorted(row.items()) if v]

    def offer_history(self, person: str) -> list[dict]:
        """The person's offer decisions (records, granted or refused), oldest first."""
        row = self.conn.table("offers").row(person.encode(), columns=[b"o"])
        return [json.loads(v) for _, v in sorted(row.items()) if v]

    def traits(self, pid: str) -> dict[str, str]:
        """The person's computed traits as stored (``b:t:<name>`` cells): name → value text."""
        row = self.conn.table("profile").row(pid.encode(), columns=[b"b"])
        return {k.decode()[4:]: v.decode() for k, v in row.items() if k.startswith(b"b:t:") and v}

    def tags(self, pid: str) -> dict[str, int]:
        row = self.conn.table("profile").row(pid.encode(), columns=[b"t"])
        return {k.decode()[2:]: int(v) for k, v in row.items() if v}

    def person_of(self, ident: str) -> str | None:
        row = self.conn.table("identity").row(ident.encode(), columns=[b"p:pid"])
        v = row.get(b"p:pid")
        return v.decode() if v else None

    def edges(self, ident: str) -> list[tuple[int, str, bool, str, str]]:
        """The edge log of anchor ``ident``: (ts, other, accepted, reason, event_id), oldest first."""
        out = []
        for col, val in self.conn.table("identity").row(ident.encode(), columns=[b"e"]).items():
            _, ts, other = col.decode().split(":", 2)
            accepted, reason, event_id = val.decode().split("|", 2)
            out.append((int(ts), other, accepted == "1", reason, event_id))
        return sorted(out)

    def profile_buckets(self, person: str) -> dict[str, str]:
        """The profile row as a hash shaped like the Redis one (for ``profile_windows.evaluate``)."""
        row = self.conn.table("profile").row(person.encode())
        out: dict[str, str] = {}
        for col, val in row.items():
            fam, _, q = col.decode().partition(":")
            if fam == "b" and val:
                out[q] = val.decode()
        return out

    def write_audit(self, entries: Sequence[tuple[str, str]]) -> None:
        """Put ``(row, JSON entry)`` pairs into ``audit`` (rows from :func:`audit_row`; written once each)."""
        with self.conn.table("audit").batch() as b:
            for row, entry in entries:
                b.put(row.encode(), {b"a:e": entry.encode()})

    def audit(self, limit: int, row_start: str | None = None) -> list[tuple[str, str]]:
        """Up to ``limit`` ``(row, JSON entry)`` of ``audit``, newest first, from ``row_start`` on (a page's
        ``next``)."""
        table = self.conn.table("audit")
        return [(k.decode(), v[b"a:e"].decode())
                for k, v in table.scan(row_start=row_start.encode() if row_start else None, limit=limit)]

    def delete_rows(self, table: str) -> int:
        t = self.conn.table(table)
        n = 0
        with t.batch(batch_size=1000) as b:
            for key, _ in t.scan(columns=[]):
                b.delete(key)
                n += 1
        return n

    def close(self) -> None:
        self.conn.close()


def audit_row(ts_ms: int, seq: str) -> str:
    """The ``audit`` row of an entry made at ``ts_ms``: the reversed time first, so a scan reads newest first;
    ``seq`` (unique per entry, e.g. its control message id and item) keeps entries of one millisecond apart."""
    return f"{9_999_999_999_999 - ts_ms:013d}:{seq}"


def derive_profile_hash(buckets: dict[str, str]) -> dict[str, str]:
    """Rebuild the Redis-shaped profile hash (totals, hour/day buckets) from HBase minute buckets."""
    out: dict[str, str] = {}
    tot = {"views": 0, "carts": 0, "purchases": 0, "events": 0, "gmv_cents": 0}
    first = last = lastp = 0
    agg: dict[str, int] = {}
    for q, val in buckets.items():
        if not q.startswith("m:"):
            continue
        minute = int(q[2:])
        v, c, p, e, g, f, la, lp = (int(x) for x in val.split(","))
        out[q] = val
        tot["views"] += v
        tot["carts"] += c
        tot["purchases"] += p
        tot["events"] += e
        tot["gmv_cents"] += g
        first = f if not first else min(first, f)
        last = max(last, la)
        lastp = max(lastp, lp)
        h, d = minute // 60, minute // 1440
        for k, x in ((f"hv:{h}", v), (f"hc:{h}", c), (f"dp:{d}", p), (f"dg:{d}", g)):
            agg[k] = agg.get(k, 0) + x
    out.update({k: str(v) for k, v in tot.items()})
    out.update({k: str(v) for k, v in agg.items()})
    out["first_seen"], out["last_seen"] = str(first), str(last)
    if lastp:
        out["last_purchase"] = str(lastp)
    return out
