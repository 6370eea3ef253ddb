"""Recommendations in Redis and the API (docs/recommendations.md), against the real Redis.

The rows are the ones the job's recommender stage emits (kinds ``ri`` / ``rp``, built here from the pure
steps), written by the job's own writer (``RedisStore.write``) under a fresh prefix; the API is Starlette's
TestClient over ``create_app``. tests/integration/test_recs_job.py runs the real job.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from starlette.testclient import TestClient

from connectors.redis_store import RedisStore, StoreRow
from operators.recs.cooccurrence import ItemEvent, RecsConfig
from operators.recs.recommend import InProcessRecommender
from state.recs import encode_neighbours_row, encode_window_row
from tests.helpers import make_settings
from zhongtai.services.api.app import create_app

pytestmark = [pytest.mark.stack]

PID = "p00000000000000aa"
CFG = RecsConfig(half_life_ms=0)
STREAM = [("p", "A", "page_view", 0), ("p", "B", "page_view", 1), ("q", "A", "page_view", 2),
          ("q", "B", "add_to_cart", 3), ("q", "C", "page_view", 4), (PID, "A", "page_view", 5),
          (PID, "D", "purchase", 6)]


def _row(kind: str, key: str, s1: str) -> StoreRow:
    return StoreRow(kind, key, 0, 0, 0, 0, 0, 0, Decimal(0), 0, 0, 0, s1)


@pytest.fixture
def settings():
    return make_settings()


@pytest.fixture
def store(settings):
    s = RedisStore(settings.redis, prefix=f"trecs{uuid.uuid4().hex[:8]}")
    yield s
    s.delete_prefix()
    s.close()


def _rows(r: InProcessRecommender) -> list[StoreRow]:
    out = [_row("ri", item, encode_neighbours_row(r.similar(item))) for item in sorted(r.neighbours)]
    return out + [_row("rp", person, encode_window_row(w)) for person, w in sorted(r.persons.items())]


def test_item_lists_and_the_api_answer_exactly(settings, store) -> None:
    r = InProcessRecommender(CFG)
    for person, item, etype, ts in STREAM:
        r.update(ItemEvent(person, item, etype, ts))
    store.write(_rows(r))
    # A→B = 4/√30, A→C = 1/√3, A→D = 5/√75 (tests/unit/test_recs.py)
    assert store.similar_items("A") == [("B", 0.730297), ("C", 0.57735), ("D", 0.57735)]
    assert store.client.zscore(store.rec_item_key("A"), "B") == 0.730297
    client = TestClient(create_app(settings, prefix=store.prefix, token="s3cret"))
    auth = {"Authorization": "Bearer s3cret"}
    res = client.get(f"/v1/recommendations/{PID}?k=10", headers=auth)
    assert res.status_code == 200
    assert res.json() == {"identifier": PID, "person": PID,
                          "items": [{"item": "B", "score": 0.730297}, {"item": "C", "score": 0.57735}]}
    assert client.get(f"/v1/recommendations/{PID}?k=1", headers=auth).json()["items"] == [
        {"item": "B", "score": 0.730297}]
    assert client.get(f"/v1/recommendations/{PID}").status_code == 401
    assert client.get("/v1/recommendations/p00000000000000bb", headers=auth).json()["items"] == []
    assert client.get(f"/v1/recommendations/{PID}?k=ten", headers=auth).status_code == 400
    bad = client.get(f"/v1/recommendations/{PID}?k=0", headers=auth)
    assert bad.status_code == 400 and "k must be between 1 and 100" in bad.json()["error"]
    assert client.get("/v1/recommendations/user_id:nobody", headers=auth).status_code == 404
    assert client.get("/v1/recommendations/nonsense", headers=auth).status_code == 400


def test_a_list_is_replaced_whole_and_a_replay_writes_the_same(store) -> None:
    store.write([_row("ri", "A", encode_neighbours_row((("B", 0.5), ("C", 0.25), ("E", 0.125))))])
    store.write([_row("ri", "A", encode_neighbours_row((("C", 0.75), ("B", 0.5))))])
    assert store.similar_items("A") == [("C", 0.75), ("B", 0.5)]  # E left the list
    # negative control: a ZADD of the new list alone (no replace) keeps E
    store.client.zadd(store.rec_item_key("X"), {"B": 0.5, "C": 0.25, "E": 0.125})
    store.client.zadd(store.rec_item_key("X"), {"C": 0.75, "B": 0.5})
    assert store.similar_items("X") == [("C", 0.75), ("B", 0.5), ("E", 0.125)]
    # a replay of the same rows ends the same; an empty list deletes the key, "" the person's window
    rows = [_row("ri", "A", encode_neighbours_row((("C", 0.75), ("B", 0.5)))), _row("rp", "p1", '{"recent":[],"purchased":[]}')]
    store.write(rows)
    store.write(rows)
    assert store.similar_items("A") == [("C", 0.75), ("B", 0.5)] and store.rec_window("p1") is not None
    store.write([_row("ri", "A", "[]"), _row("rp", "p1", "")])
    assert not store.client.exists(store.rec_item_key("A")) and store.rec_window("p1") is None


def test_the_dashboard_lists_the_top_pairs_once_each(settings, store) -> None:
    from zhongtai.services.dashboard import DashboardOptions
    from zhongtai.services.dashboard import create_app as dashboard_app
    from zhongtai.services.dashboard.recs import top_pairs

    store.write([_row("ri", "A", encode_neighbours_row((("B", 0.9), ("C", 0.5)))),
                 _row("ri", "B", encode_neighbours_row((("A", 0.9), ("C", 0.7)))),
                 _row("ri", "C", encode_neighbours_row((("B", 0.7), ("A", 0.5))))])
    expected = [{"item": "A", "similar": "B", "score": 0.9}, {"item": "B", "similar": "C", "score": 0.7},
                {"item": "A", "similar": "C", "score": 0.5}]
    with TestClient(dashboard_app(settings, DashboardOptions(prefix=store.prefix, lag=False))) as client:
        res = client.get("/api/recs/pairs")
        assert res.status_code == 200
        assert res.json() == {"pairs": expected, "scanned": 3, "complete": True}
        assert 'id="recs"' in client.get("/").text
    assert top_pairs(store, 1) == {"pairs": expected[:1], "scanned": 3, "complete": True}
    # the scan limit is said, not hidden (negative control: a limit below the item count)
    assert top_pairs(store, 5, scan_limit=2)["complete"] is False
