"""``{prefix}:stats`` holds the fields docs/semantics.md lists: the absolute totals the job writes AND the
derived ``received``, ``dlq``, ``duplicates`` (a dashboard reading the hash itself used to miss them)."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from config import load_settings
from connectors.redis_store import RedisStore, StoreRow

pytestmark = pytest.mark.stack


def _row(kind: str, key: str, n1: int = 0, n4: int = 0, bucket: int = 0) -> StoreRow:
    return StoreRow(kind, key, bucket, n1, 0, 0, n4, 0, Decimal(0), 0, 0, 0)


def _s(name: str, n: int) -> StoreRow:
    return _row("s", name, n1=n)


def test_the_hash_has_every_listed_field_exactly() -> None:
    store = RedisStore(load_settings().redis, prefix=f"tstats{uuid.uuid4().hex[:8]}")
    try:
        store.write([_s("valid", 90), _s("unique", 85), _s("dlq:late", 4), _s("dlq:not_utf8", 6)])
        raw = {k: int(v) for k, v in store.client.hgetall(store.stats_key).items()}
        assert raw == {"valid": 90, "unique": 85, "dlq:late": 4, "dlq:not_utf8": 6, "dlq": 10, "received": 100,
                       "duplicates": 5}
        # absolute values: a later checkpoint's totals replace them, and the derived ones follow
        store.write([_s("valid", 95), _s("unique", 88)])
        raw = {k: int(v) for k, v in store.client.hgetall(store.stats_key).items()}
        assert (raw["received"], raw["duplicates"], raw["dlq"]) == (105, 7, 10)
        assert store.stats() == raw  # the reader and the hash agree
        # negative control: rows without a total leave the derived fields alone (nothing to derive from)
        store.write([_row("c", "all", n4=1, bucket=1)])
        assert int(store.client.hget(store.stats_key, "received")) == 105
    finally:
        store.delete_prefix()
        store.close()
