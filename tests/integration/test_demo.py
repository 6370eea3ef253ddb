"""``zhongtai demo`` (what ``make demo`` runs after starting the stack) end to end on the real stack.

A smaller stream than the real demo, in its own Redis prefix and HBase namespace; everything else is the
demo as a user runs it: the job with rules on the mini-cluster, the store log applied to Redis and HBase,
and the summary, whose totals must equal the generator's ground truth.
"""

from __future__ import annotations

import pytest

from connectors.hbase_store import TABLES, HBaseStore
from connectors.redis_store import RedisStore
from tests.helpers import fresh_names, make_settings
from zhongtai.devtools.demo import run_demo

pytestmark = [pytest.mark.stack, pytest.mark.flink]


def test_demo_prints_exact_totals_and_what_to_do_next(capsys: pytest.CaptureFixture[str]) -> None:
    n = fresh_names()
    settings = make_settings(redis={"prefix": f"zt:demo:{n.tag}"}, hbase={"namespace": f"zt_demo_{n.tag}"})
    try:
        assert run_demo(settings, events=4_000, persons=150) == 0
        out = capsys.readouterr().out
        assert "Every total equals the generator's ground truth: yes" in out
        assert "identifiers linked into" in out
        assert "Next: `zhongtai profile get " in out
        store = RedisStore(settings.redis)
        try:
            stats = store.stats()
        finally:
            store.close()
        assert stats["received"] == 4_000
        hb = HBaseStore(settings.hbase)
        try:
            assert next(iter(hb.conn.table("profile").scan(limit=1)), None) is not None  # profiles reached HBase
        finally:
            hb.close()
    finally:
        store = RedisStore(settings.redis)
        store.delete_prefix()
        store.close()
        hb = HBaseStore(settings.hbase)
        for t in TABLES:
            if t.encode() in hb.conn.tables():
                hb.conn.delete_table(t, disable=True)
        hb.close()
