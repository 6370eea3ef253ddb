"""Zhongtai on a Redis Cluster: the applier writes; the API, the dashboard's reader and ``RedisStore`` read;
the workers' transactions and the experiment scripts run.

The module's fixture starts a three-master cluster with the stack's own code (``zhongtai.devtools.stack.up(...,
redis_cluster=True)``) on free ports in a run directory of its own, and stops only that. Store-log rows
go through the shared Kafka (a fresh transactional topic) and the real ``StoreApplier``, as the job's
rows do (tests/integration/test_store_log.py). Every read is compared with exact values, and with the same rows
written to the standalone Redis of the stack.

The negative control: the identifier update the store used to run as one Lua script (identifier key and
the persons' identifier sets, three keys of three slots) fails on the cluster with CROSSSLOT, or half
applied when the sets are not declared; the same script on keys that share a hash tag runs.
"""

from __future__ import annotations

import logging
import socket
import uuid
from decimal import Decimal
from typing import Any

import pytest
from redis.exceptions import ClusterCrossSlotError, RedisClusterException, ResponseError
from starlette.testclient import TestClient

from config.settings import Settings
from connectors.channels.redis_state import RedisLedger, RedisTokenBucket
from connectors.redis_clients import client_for_key, redis_client
from connectors.redis_experiments import ExperimentRow, RedisExperiments
from connectors.redis_store import RedisStore, StoreRow, minute_label
from connectors.store_log import encode_row
from operators.delivery.ledger import Outcome
from tests.helpers import make_settings
from tests.integration.test_store_log import _fresh_log
from zhongtai.devtools import stack
from zhongtai.services.api.app import create_app
from zhongtai.services.applier import StoreApplier
from zhongtai.services.dashboard.reader import DashboardReader

pytestmark = [pytest.mark.stack]
logger = logging.getLogger(__name__)

P1, P2 = "p" + "1" * 16, "p" + "2" * 16
MINUTE = 29_000_000  # epoch minute 2025-02-19 21:20 UTC
T0 = MINUTE * 60_000


def _row(kind: str, key: str, bucket: int = 0, *counts: int, amount: str = "0",
         ts: tuple[int, int, int] = (0, 0, 0), s1: str | None = None) -> StoreRow:
    n = (*counts, 0, 0, 0, 0, 0)[:5]
    return StoreRow(kind, key, bucket, *n, Decimal(amount), *ts, s1)


#: Two checkpoints of the job: two persons with identifiers, tags, counters and totals; then P2 merges
#: into P1 (its identifier d2 and minute bucket move to P1, its tag goes), d1 loses its person, P1 a tag.
CHECKPOINT_1 = [
    _row("p", P1, MINUTE, 3, 1, 1, 5, amount="12.34", ts=(T0 + 1000, T0 + 50_000, T0 + 40_000)),
    _row("p", P2, MINUTE + 1, 2, 0, 0, 2, ts=(T0 + 61_000, T0 + 90_000, 0)),
    _row("i", "user_id:u1", s1=P1), _row("i", "device_id:d1", s1=P1), _row("i", "device_id:d2", s1=P2),
    _row("t", P1, T0, s1="vip"), _row("t", P1, T0, s1="cart_abandoner"), _row("t", P2, T0, s1="vip"),
    _row("c", "all", MINUTE, 5, 1, 1, 7, 2, amount="12.34"),
    _row("c", "spring|web", MINUTE, 3, 1, 1, 5, 1, amount="12.34"),
    _row("ac", "cart_push|push", 0, 4), _row("cv", "cart_push|push", 0, 1, amount="12.34"),
    _row("s", "valid", 0, 7), _row("s", "unique", 0, 7), _row("s", "dlq:malformed_json", 0, 1),
]
CHECKPOINT_2 = [
    _row("i", "device_id:d2", s1=P1),
    _row("pd", P2, MINUTE + 1, ts=(T0 + 61_000, T0 + 90_000, 0)),
    _row("p", P1, MINUTE + 1, 2, 0, 0, 2, ts=(T0 + 61_000, T0 + 90_000, 0)),
    _row("tr", P2, T0, s1="vip"), _row("tr", P1, T0, s1="cart_abandoner"),
    _row("id", "device_id:d1"),
    _row("s", "valid", 0, 9),
]
PROFILE = {
    "first_seen": T0 + 1000, "last_seen": T0 + 90_000, "last_purchase": T0 + 40_000, "events": 7, "views": 5,
    "carts": 1, "purchases": 1, "gmv": "12.34", "views_1h": 5, "views_24h": 5, "views_7d": 5, "carts_7d": 1,
    "purchases_30d": 1, "gmv_30d": "12.34", "purchases_90d": 1, "gmv_90d": "12.34",
}
COUNTER = {"views": "5", "carts": "1", "purchases": "1", "events": "7", "persons": "2", "revenue": "12.34"}
EXPECTED = {
    "persons": [P1],
    "profile": PROFILE,
    "person_of": {"user_id:u1": P1, "device_id:d1": None, "device_id:d2": P1},
    "identifiers": {P1: ["device_id:d2", "user_id:u1"], P2: []},
    "tags": {P1: ["vip"], P2: []},
    "tag_members": {"vip": {P1}, "cart_abandoner": set()},
    "id_mapping": {"user_id:u1": P1, "device_id:d2": P1},
    "counters": COUNTER,
    "all_counters": {f"all:{minute_label(MINUTE)}": COUNTER,
                     f"spring|web:{minute_label(MINUTE)}": {**COUNTER, "views": "3", "events": "5", "persons": "1"}},
    "stats": {"valid": 9, "unique": 7, "dlq:malformed_json": 1, "dlq": 1, "received": 10, "duplicates": 2},
    "actions": {"cart_push|push": 4},
    "conversions": {"cart_push|push": (1, "12.34")},
}


def _read(store: RedisStore) -> dict[str, Any]:
    """Everything the readers of the live store ask for, in the shape of ``EXPECTED``."""
    return {
        "persons": sorted(store.persons()),
        "profile": store.profile(P1),
        "person_of": {i: store.person_of(i) for i in ("user_id:u1", "device_id:d1", "device_id:d2")},
        "identifiers": {p: store.identifiers(p) for p in (P1, P2)},
        "tags": {p: store.tags_of(p) for p in (P1, P2)},
        "tag_members": {t: store.tag_members(t) for t in ("vip", "cart_abandoner")},
        "id_mapping": store.id_mapping(),
        "counters": store.counters("all", minute_label(MINUTE)),
        "all_counters": store.all_counters(),
        "stats": store.stats(),
        "actions": store.action_counters(),
        "conversions": store.conversion_counters(),
    }


def _free_node_ports(n: int) -> list[int]:
    """``n`` ports below 55536 that are free, each with its cluster bus port (+10000) free too."""
    found: list[int] = []
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1] % 30_000 + 20_000
        try:
            for p in (port, port + 10_000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        if port not in found:
            found.append(port)
        if len(found) == n:
            return found
    raise RuntimeError(f"no {n} free port pairs (port, port + 10000) on 127.0.0.1")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Cluster-mode settings whose three nodes the stack's code starts (and stops) in a run dir of its own."""
    nodes = [f"127.0.0.1:{p}" for p in _free_node_ports(3)]
    settings = make_settings(redis={"mode": "cluster", "nodes": nodes},
                             stack={"run_dir": str(tmp_path_factory.mktemp("redis-cluster"))})
    stack.up(settings, services=(), redis_cluster=True, log=logger.info)
    try:
        yield settings
    finally:
        stack.down(settings, services=("redis-cluster",), log=logger.info)


def _prefix(name: str) -> str:
    return f"zt:test:{name}:{uuid.uuid4().hex[:8]}"


def _apply_through_the_store_log(settings: Settings, checkpoints: list[list[StoreRow]]) -> tuple[str, int]:
    """Each list is one committed transaction of a fresh store log; the real applier drains them.
    Returns the Redis prefix written and the rows applied."""
    _, _, group, prefix, topic, p = _fresh_log("rcluster", settings)
    for rows in checkpoints:
        p.begin_transaction()
        for r in rows:
            p.produce(topic, key=r.key.encode(), value=encode_row(r))
        p.commit_transaction(30)
    applier = StoreApplier(settings, group=group, redis_prefix=prefix, hbase=False)
    try:
        return prefix, applier.drain(timeout_s=60)
    finally:
        applier.close()


def test_stack_formed_a_three_master_cluster(cluster: Settings) -> None:
    info = stack.redis_server.cluster_state(cluster)
    assert [(i["cluster_state"], i["cluster_known_nodes"], i["cluster_slots_assigned"]) for i in info] == [
        ("ok", "3", "16384")] * 3
    rows = {r["name"]: r for r in stack.status(cluster) if r["service"] == "redis-cluster"}
    assert sorted(rows) == ["redis-cluster-1", "redis-cluster-2", "redis-cluster-3"]
    assert [rows[f"redis-cluster-{i + 1}"]["ports"][0] for i in range(3)] == [
        int(n.rsplit(":", 1)[1]) for n in cluster.redis.nodes]
    assert all(r["state"] == "running" for r in rows.values())
    # up again: nothing restarted, the cluster kept
    messages: list[str] = []
    stack.up(cluster, services=(), redis_cluster=True, log=messages.append)
    assert messages[-1] == "redis-cluster: cluster of 3 masters already formed"


def test_applier_writes_and_api_reads_exact_values_on_the_cluster(cluster: Settings) -> None:
    prefix, applied = _apply_through_the_store_log(cluster, [CHECKPOINT_1, CHECKPOINT_2])
    assert applied == 22
    store = RedisStore(cluster.redis, prefix=prefix)
    standalone = RedisStore(make_settings().redis, prefix=prefix)
    try:
        assert _read(store) == EXPECTED
        # the keys are spread over the nodes (else the test would prove nothing about slots)
        client = store.client
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        assert len({client.get_node_from_key(k).name for k in keys}) >= 2, keys

        # the API, same numbers
        api = TestClient(create_app(cluster, prefix=prefix))
        body = {"person": P1, "identifiers": ["device_id:d2", "user_id:u1"], "tags": ["vip"], "profile": PROFILE}
        r = api.get("/v1/profiles/user_id:u1")
        assert (r.status_code, r.json()) == (200, {"identifier": "user_id:u1", **body})
        r = api.get(f"/v1/profiles/{P1}")
        assert (r.status_code, r.json()) == (200, {"identifier": P1, **body})
        assert api.get("/v1/profiles/device_id:d1").status_code == 404
        assert api.get(f"/v1/profiles/{P2}").status_code == 404
        assert api.get("/healthz").json() == {"ok": True, "redis": "ok", "kafka": "ok"}

        # the dashboard's reader (SCAN over every node, pipelines split by node)
        reader = DashboardReader(store, discover_every_s=0.0)
        assert reader.totals() == EXPECTED["stats"]
        assert reader.tags() == {"count": 1, "top": [{"tag": "vip", "size": 1}]}
        end, funnels = reader.funnels(T0 + 90_000)
        assert (end, {f.scope: (f.totals["views"], f.revenue) for f in funnels}) == (
            MINUTE + 1, {"all": (5, "12.34"), "spring|web": (3, "12.34")})

        # the same rows on the standalone server read the same (one key layout for both modes)
        standalone.write(CHECKPOINT_1)
        standalone.write(CHECKPOINT_2)
        assert _read(standalone) == EXPECTED

        # a replay of both checkpoints changes nothing
        store.write(CHECKPOINT_1 + CHECKPOINT_2)
        assert _read(store) == EXPECTED
    finally:
        for s in (store, standalone):
            s.delete_prefix()
            s.close()
    assert list(RedisStore(cluster.redis, prefix=prefix).client.scan_iter(match=f"{prefix}:*")) == []


OLD_IDENTIFIER_SCRIPT = """
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
#: The same update with both keys declared, as Redis Cluster asks of a script.
DECLARED = "redis.call('SET', KEYS[1], ARGV[1]); redis.call('SADD', KEYS[2], ARGV[2]); return 1"


def test_negative_control_the_atomic_identifier_update_needs_one_slot(cluster: Settings) -> None:
    prefix = _prefix("rclneg")
    ident = "user_id:u1"
    id_key = f"{prefix}:id:{ident}"
    client = redis_client(cluster.redis)
    store = RedisStore(cluster.redis, prefix=prefix)
    try:
        # a person whose identifier set is on another node than the identifier key
        home = client.get_node_from_key(id_key).name
        pid = next(p for p in (f"p{i:016x}" for i in range(1, 100))
                   if client.get_node_from_key(f"{prefix}:ids:{p}").name != home)
        set_key = f"{prefix}:ids:{pid}"

        # both keys declared: redis-py refuses, and the server answers CROSSSLOT
        with pytest.raises(RedisClusterException, match="EVAL - all keys must map to the same key slot"):
            client.eval(DECLARED, 2, id_key, set_key, pid, ident)
        with pytest.raises(ClusterCrossSlotError, match="Keys in request don't hash to the same slot"):
            client_for_key(client, id_key).eval(DECLARED, 2, id_key, set_key, pid, ident)
        # the script as the store ran it (the sets not declared): fails half way, the key set, the set not
        with pytest.raises(ResponseError, match="Script attempted to access a non local key in a cluster node"):
            client.eval(OLD_IDENTIFIER_SCRIPT, 1, id_key, pid, ident, f"{prefix}:ids:")
        assert (client.get(id_key), client.smembers(set_key)) == (pid, set())
        # the control is the slot: the same script on two keys with one hash tag runs
        tagged = (f"{prefix}:{{{pid}}}:id", f"{prefix}:{{{pid}}}:ids")
        assert client.eval(DECLARED, 2, *tagged, pid, ident) == 1

        # what the store does instead (identifier_moves: the set first, then the key): both keys right
        assert client.delete(id_key, set_key) == 1
        store.write([_row("i", ident, s1=pid)])
        assert (store.person_of(ident), store.identifiers(pid)) == (pid, [ident])
    finally:
        store.delete_prefix()
        store.close()
        client.close()


def test_a_batch_cut_short_before_the_identifier_keys_ends_the_same_when_written_again(
        cluster: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = _prefix("rclcut")
    store = RedisStore(cluster.redis, prefix=prefix)
    try:
        store.write(CHECKPOINT_1)

        def crash(self: RedisStore, persons: dict[str, str]) -> None:
            raise ConnectionError("the applier died before the identifier keys")

        with monkeypatch.context() as m:
            m.setattr(RedisStore, "_set_identifiers", crash)
            with pytest.raises(ConnectionError):
                store.write(CHECKPOINT_2)
        # half written: the sets moved, the identifier keys not yet
        assert (store.person_of("device_id:d2"), store.identifiers(P1)) == (
            P2, ["device_id:d2", "user_id:u1"])
        store.write(CHECKPOINT_2)  # the applier's retry of the same batch
        assert _read(store) == EXPECTED
    finally:
        store.delete_prefix()
        store.close()


def test_workers_transactions_and_experiment_scripts_run_on_the_cluster(cluster: Settings) -> None:
    prefix = _prefix("rclwk")
    client = redis_client(cluster.redis)
    try:
        # why the workers go to the key's node: redis-py's cluster pipeline has no transactions
        with pytest.raises(RedisClusterException, match="transaction is deprecated in cluster mode"):
            client.pipeline(transaction=True)
        ledger = RedisLedger(client, prefix, "push", 3600)
        actions = [f"a{i}" for i in range(12)]
        assert len({client.get_node_from_key(ledger.key(a)).name for a in actions}) >= 2
        assert [ledger.claim(a, "w1", "src", 1_000, 30_000).kind for a in actions] == ["acquired"] * 12
        assert ledger.claim("a0", "w2", "src", 2_000, 30_000).kind == "busy"
        assert ledger.finish("a0", "w1", Outcome("delivered", provider_id="m-1"), 3_000) is not None
        assert ledger.claim("a0", "w2", "src", 4_000, 30_000).kind == "done"
        assert ledger.get("a0").provider_id == "m-1"
        assert sorted(ledger.records()) == sorted(actions)
        bucket = RedisTokenBucket(client, prefix, "push", per_s=1.0, burst=2)
        assert [bucket.try_take(10_000) for _ in range(3)] == [0.0, 0.0, 1.0]

        # experiment statistics; the guarded-definition script after every node forgot its scripts
        exps = RedisExperiments(cluster.redis, prefix=prefix)
        try:
            exps.write([ExperimentRow("banner", v, 10 * (i + 1), i + 1, Decimal("1.00"), Decimal("1.0000"),
                                      Decimal(0), Decimal(0), Decimal(0)) for i, v in enumerate("abcdef")])
            assert {v: s.n for v, s in exps.read_stats("banner", list("abcdef")).items()} == {
                "a": 10, "b": 20, "c": 30, "d": 40, "e": 50, "f": 60}
            for node in client.get_primaries():
                client.get_redis_connection(node).script_flush()
            from operators.experiments.control import packed_row

            assert exps.write_definition_rows([packed_row(f"gone{i}", 2, None) for i in range(6)]) == 6
            assert [client.hget(exps.meta_key(f"gone{i}"), "status") for i in range(6)] == ["deleted"] * 6
            assert exps.delete_experiment("banner") == 6
        finally:
            exps.close()
    finally:
        for k in list(client.scan_iter(match=f"{prefix}:*", count=1000)):
            client.delete(k)
        client.close()
