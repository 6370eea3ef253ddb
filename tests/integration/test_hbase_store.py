"""The HBase writer against the real HBase: removals are tombstones, so order within and across
batches decides, never the server timestamp."""

from __future__ import annotations

from decimal import Decimal

import pytest

from connectors.hbase_store import HBaseStore
from connectors.redis_store import StoreRow
from tests.helpers import fresh_names, make_settings

pytestmark = [pytest.mark.stack]


def _row(kind: str, key: str, bucket: int = 0, n1: int = 0, s1: str | None = None) -> StoreRow:
    return StoreRow(kind, key, bucket, n1, 0, 0, 1, 0, Decimal("2.50"), 1_000, 2_000, 0, s1)


@pytest.fixture()
def hb():
    settings = make_settings()
    n = fresh_names()
    store = HBaseStore(settings.hbase, prefix=f"zt_t_{n.tag}")
    store.ensure_tables()
    try:
        yield store
    finally:
        for t in ("profile", "identity", "actions"):
            store.conn.disable_table(t)
            store.conn.delete_table(t)
        store.close()


def test_removed_and_readded_in_one_millisecond_stays(hb: HBaseStore) -> None:
    # a bucket leaves a person and comes back (an anchor moved away and back), all in one batch,
    # then a second batch removes another bucket and re-adds it right away
    hb.write([_row("p", "P1", 10, 1), _row("pd", "P1", 10), _row("p", "P1", 10, 3), _row("p", "P1", 11, 1)])
    hb.write([_row("pd", "P1", 11)])
    hb.write([_row("p", "P1", 11, 5)])
    assert hb.profile_buckets("P1") == {"m:10": "3,0,0,1,250,1000,2000,0", "m:11": "5,0,0,1,250,1000,2000,0"}
    hb.write([_row("pd", "P1", 10)])
    assert hb.profile_buckets("P1") == {"m:11": "5,0,0,1,250,1000,2000,0"}


def test_identifier_moves_and_tags_flip(hb: HBaseStore) -> None:
    hb.write([_row("i", "email:h1", s1="P1"), _row("t", "P1", 100, s1="vip")])
    hb.write([_row("i", "email:h1", s1="P2"), _row("tr", "P1", 200, s1="vip"), _row("t", "P1", 300, s1="vip")])
    assert hb.person_of("email:h1") == "P2"
    assert hb.tags("P1") == {"vip": 300}
    assert hb.conn.table("profile").row(b"P1", columns=[b"i"]) == {b"i:email:h1": b""}  # left P1: tombstone
    assert hb.conn.table("profile").row(b"P2", columns=[b"i"]) == {b"i:email:h1": b"1"}
    hb.write([_row("id", "email:h1"), _row("tr", "P1", 400, s1="vip")])
    assert hb.person_of("email:h1") is None
    assert hb.tags("P1") == {}


def _drop(conn, tables) -> None:
    for t in tables:
        if t.encode() in conn.tables():
            conn.delete_table(t, disable=True)


def test_the_stack_creates_what_the_store_writes_and_mends_an_empty_stale_table() -> None:
    """``zhongtai stack up`` creates the tables with the store's families (one definition; a second copy
    once lacked ``b`` and every profile write of the demo failed). An empty table of an older layout is
    re-created; one with rows is left alone with an error that says how to add the family."""
    import happybase

    from connectors.hbase_store import TABLES, HBaseSchemaError
    from zhongtai.devtools.stack.hbase import ensure_tables

    n = fresh_names()
    settings = make_settings(hbase={"namespace": f"zt_s_{n.tag}"})
    conn = happybase.Connection(host=settings.hbase.host, port=settings.hbase.port,
                                table_prefix=settings.hbase.namespace, table_prefix_separator="_")
    try:
        # an older layout: profile without the bucket family b, still empty
        conn.create_table("profile", {"m": {"max_versions": 1}, "t": {"max_versions": 1}, "i": {"max_versions": 1}})
        created = ensure_tables(settings)
        assert sorted(created) == [f"{settings.hbase.namespace}_{t}" for t in sorted(TABLES)]
        for t, families in TABLES.items():
            assert sorted(f.decode().rstrip(":") for f in conn.table(t).families()) == sorted(families)
        assert ensure_tables(settings) == []

        # the same old layout with a row in it: not dropped; the stack and the store both say what to do
        _drop(conn, ["profile"])
        conn.create_table("profile", {"m": {"max_versions": 1}, "t": {"max_versions": 1}, "i": {"max_versions": 1}})
        conn.table("profile").put(b"P1", {b"m:events": b"1"})
        with pytest.raises(RuntimeError) as e:
            ensure_tables(settings)
        assert f"{settings.hbase.namespace}_profile lacks b" in str(e.value)
        assert f"alter '{settings.hbase.namespace}_profile', {{NAME => 'b', VERSIONS => 1}}" in str(e.value)
        assert conn.table("profile").row(b"P1") == {b"m:events": b"1"}
        store = HBaseStore(settings.hbase)
        try:
            with pytest.raises(HBaseSchemaError, match="lacks b"):
                store.ensure_tables()
        finally:
            store.close()
    finally:
        _drop(conn, list(TABLES))
        conn.close()
