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
