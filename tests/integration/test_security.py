"""A secured run (docs/security.md): the job through a SASL/SCRAM listener with ACLs, Redis with ACL users.

A private Kafka (SASL_PLAINTEXT, SCRAM-SHA-512, ``StandardAuthorizer``, one principal per component with the
grants of ``connectors.kafka_admin.component_acls``) and a private Redis (ACL users of
``connectors.redis_clients.component_acl_rules``, the default user off) on free ports; the shared stack is
untouched (its HBase serves, under a fresh tenant namespace). The job runs as the ``job`` component end to end
(events → job → store log → applier → Redis) with exact outputs, then every topic the job wrote, every Redis
key and value, every HBase cell and every log line is searched for the secrets and the raw PII. Negative
controls: a wrong password is refused with a clear error, the API's read-only user cannot write, and one
tenant's users cannot read another tenant's keys or topics.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import happybase
import pytest
import redis
from pydantic import SecretStr

from config.settings import Settings
from connectors.hbase_store import TABLES
from connectors.kafka_admin import KafkaAdminError, list_topics
from connectors.kafka_security import client_config, redact
from connectors.redis_clients import redis_client
from connectors.redis_store import RedisStore, StoreRow
from tests.helpers import load_expected, profile_mismatches, read_topics
from tests.private_services import private_secured
from zhongtai.devtools.generator import GeneratorConfig
from zhongtai.devtools.generator.produce import produce
from zhongtai.jobs.runner import RunOptions, explain, run_events_job
from zhongtai.names import EVENTS_TOPIC_PREFIX

pytestmark = [pytest.mark.stack]

TAG = uuid.uuid4().hex[:6]
TENANT, OTHER = f"t{TAG}", f"o{TAG}"
SECRETS = {name: f"{name}-{uuid.uuid4().hex[:12]}" for name in
           ("kafka-admin", "kafka-job", "kafka-other", "redis-admin", "redis-writer", "redis-api", "redis-other", "hmac")}


def _creds(user: str, secret: str) -> dict[str, str]:
    return {"username": user, "password": SECRETS[secret]}


CREDENTIALS = {
    "kafka": {"security": {"protocol": "SASL_PLAINTEXT", **_creds("zt-admin", "kafka-admin")}},
    "redis": _creds("zt-admin", "redis-admin"),
    "pii": {"hmac_secret": SECRETS["hmac"]},
    "namespace": TENANT,
    "security": {"components": {
        "job": {"kafka": _creds("zt-job", "kafka-job"), "redis": _creds("zt-writer", "redis-writer")},
        "api": {"redis": _creds("zt-api", "redis-api")},
    }},
}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with private_secured(tmp_path_factory.mktemp("secured"), **CREDENTIALS) as s:
        yield s


def _with_password(s: Settings, password: str) -> Settings:
    sec = s.kafka.security.model_copy(update={"password": SecretStr(password)})
    return s.model_copy(update={"kafka": s.kafka.model_copy(update={"security": sec})})


def test_a_wrong_kafka_password_is_refused_with_a_clear_error(secured: Settings) -> None:
    with pytest.raises(KafkaAdminError) as e:
        list_topics(_with_password(secured, "not-the-password"), timeout_s=5)
    msg = str(e.value)
    assert "refused the credentials of user 'zt-admin' (SCRAM-SHA-512)" in msg and "ZT__KAFKA__SECURITY__PASSWORD" in msg
    assert "not-the-password" not in msg
    assert list_topics(secured) is not None  # negative control: the right password is let in


def test_redis_users_have_least_privilege_within_their_tenant(secured: Settings) -> None:
    writer = redis_client(secured.for_component("job").redis)
    api = redis_client(secured.for_component("api").redis)
    key = f"{secured.redis.prefix}:profile:acl-check"
    try:
        writer.hset(key, "n", "1")  # the writer writes (the negative control of the API's refusal)
        assert api.hgetall(key) == {"n": "1"}
        # the API writes only its keys' token buckets (the gateway's rate limit), nothing of the store
        with pytest.raises(redis.exceptions.NoPermissionError, match="permissions to access one of the keys"):
            api.hset(key, "n", "2")
        bucket = f"{secured.redis.prefix}:apirate:acl-check"
        assert api.hset(bucket, "tokens", "1") == 1
        api.delete(bucket)
        for user in (api, writer):  # another tenant's keys are out of reach, for reading and writing
            with pytest.raises(redis.exceptions.NoPermissionError, match="keys"):
                user.get(f"{OTHER}.zt:profile:p1")
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=secured.redis.port).get("x")  # the default user is off
    finally:
        redis_client(secured.redis).delete(key)


def test_a_tenants_job_principal_cannot_read_another_tenants_topics(secured: Settings) -> None:
    from confluent_kafka import Producer

    theirs = f"{OTHER}.zt.events.web"
    p = Producer(client_config(secured.kafka))  # the super user
    p.produce(theirs, b"{}")
    p.produce(f"{TENANT}.zt.acl-check", b"{}")
    assert p.flush(30) == 0
    assert theirs in list_topics(secured)
    visible = list_topics(secured.for_component("job"))
    assert f"{TENANT}.zt.acl-check" in visible and theirs not in visible  # metadata hides what it may not describe


def _raw_pii(settings: Settings) -> tuple[set[str], set[str]]:
    """The raw e-mail addresses (trimmed, lower case) and phone numbers (their last 11 digits) the generator put
    in the events: the forms a leak would take, whatever spacing or case the stream gave them."""
    import orjson

    topics = [t for t in list_topics(settings) if t.startswith(settings.in_namespace(EVENTS_TOPIC_PREFIX))]
    emails: set[str] = set()
    phones: set[str] = set()
    for m in read_topics(settings, topics):
        try:
            ids = orjson.loads(m.value()).get("ids") or {}
        except (orjson.JSONDecodeError, AttributeError):
            continue
        email, phone = str(ids.get("email") or "").strip().lower(), re.sub(r"\D", "", str(ids.get("phone") or ""))
        if "@" in email and len(email) > 5:
            emails.add(email)
        if len(phone) >= 11:
            phones.add(phone[-11:])
    return emails, phones


def _leaks(blob: bytes, emails: set[str], phones: set[str], secrets: set[str]) -> list[str]:
    """What of ``secrets``, ``emails`` and ``phones`` is in ``blob`` (case-insensitive; a phone only as a number of
    its own, not as 11 digits inside a hexadecimal hash)."""
    low = blob.lower()
    found = [s for s in secrets if s.encode() in blob] + [e for e in emails if e.encode() in low]
    return found + [p for p in phones if re.search(rb"(?<![0-9a-f])" + p.encode() + rb"(?![0-9a-f])", low)]


def test_the_leak_search_finds_what_it_looks_for() -> None:
    """The negative control of the search below: each kind of leak in a blob is found."""
    blob = b'{"email":" Fang.Wang22@126.COM "}\n+86 177 8721 7192 is not 17787217192; secret-x\nab17787217192cd'
    assert sorted(_leaks(blob, {"fang.wang22@126.com"}, {"17787217192"}, {"secret-x"})) == [
        "17787217192", "fang.wang22@126.com", "secret-x"]
    assert _leaks(b"ab17787217192cd", set(), {"17787217192"}, set()) == []  # inside a hash: not a phone


@pytest.mark.flink
def test_the_job_runs_through_sasl_and_acl_users_and_leaks_nothing(secured: Settings, caplog) -> None:
    caplog.set_level(logging.INFO)
    report = produce(secured, GeneratorConfig(seed=15, persons=30, events=300, partitions=2,
                                              topic_prefix=secured.in_namespace(EVENTS_TOPIC_PREFIX)),
                     name=secured.in_namespace(f"sec-{TAG}"), progress=False)
    expected = load_expected(report.expected_path)
    job = secured.for_component("job")
    opts = RunOptions(bounded=True, resume=False)
    plan = explain(job, opts)
    assert SECRETS["kafka-job"] not in plan and "Sink" in plan  # the plan names tables, not their options
    run_events_job(job, opts)

    store = RedisStore(secured.redis, prefix=secured.redis.prefix)
    try:
        assert store.stats() == expected["stats"]
        assert sorted(store.persons()) == sorted(expected["profiles"])
        assert profile_mismatches(expected["profiles"], store.profile) == []

        # every place a secured run leaves data: the topics the job wrote, Redis, HBase, the logs
        emails, phones = _raw_pii(secured)
        # the stream carries raw identities the search could find (seed 15: two addresses, three numbers)
        assert (len(emails), len(phones)) == (2, 3)
        # the events topics and the DLQ hold the producers' original bytes (a rejected event is kept as it came,
        # docs/semantics.md): they are input, not something the job wrote about a person
        events, dlq = secured.in_namespace(EVENTS_TOPIC_PREFIX), secured.kafka.topics.dlq
        written = [t for t in list_topics(secured)
                   if t.startswith(f"{TENANT}.") and not t.startswith(events) and t != dlq]
        assert any(".store." in t for t in written)
        haystack: list[tuple[str, bytes]] = [
            (f"topic {m.topic()}", bytes(m.value() or b"") + bytes(m.key() or b"")
             + b"".join(v for _, v in (m.headers() or []))) for m in read_topics(secured, written)]
        r = redis_client(secured.redis)
        haystack += [(f"redis {key}", key.encode() + repr(_redis_value(r, key)).encode())
                     for key in r.scan_iter(f"{secured.redis.prefix}:*")]
        conn = happybase.Connection(secured.hbase.host, secured.hbase.port)
        try:
            for table in TABLES:
                name = f"{secured.hbase.namespace}_{table}"
                if name.encode() in conn.tables():
                    haystack += [(f"hbase {name}", row + repr(cells).encode()) for row, cells in conn.table(name).scan()]
        finally:
            conn.close()
        logs = [f for f in (Path(secured.stack.run_dir) / "logs").rglob("*") if f.is_file()]
        assert {f.name for f in logs} >= {"kafka.log", "redis.log"}
        haystack += [(f"log {f}", f.read_bytes()) for f in logs]
        haystack += [(f"log record {rec.name}", rec.getMessage().encode()) for rec in caplog.records]
        assert len(haystack) > 100 and any(where.startswith("hbase") for where, _ in haystack)
        leaks = [(where, found) for where, blob in haystack
                 for found in _leaks(blob, emails, phones, set(SECRETS.values()))]
        assert leaks == []
        assert redact(f'password="{SECRETS["kafka-job"]}"') == 'password="****"'
    finally:
        store.delete_prefix()
        store.close()


def _redis_value(r: redis.Redis, key: str) -> object:
    kind = r.type(key)
    return {"hash": r.hgetall, "set": r.smembers, "zset": lambda k: r.zrange(k, 0, -1, withscores=True),
            "string": r.get, "list": lambda k: r.lrange(k, 0, -1)}.get(kind, lambda k: None)(key)


def _person(settings: Settings, prefix: str, pid: str, user: str) -> None:
    store = RedisStore(settings.redis, prefix=prefix)
    try:
        store.write([StoreRow("i", f"user_id:{user}", 0, 0, 0, 0, 0, 0, Decimal(0), 0, 0, 0, pid)])
    finally:
        store.close()


def test_an_api_of_one_tenant_reads_nothing_of_another(secured: Settings) -> None:
    from starlette.testclient import TestClient

    from zhongtai.services.api.app import create_app
    from zhongtai.services.api.tenant import TenantError

    ours, theirs = secured.redis.prefix, f"{OTHER}.zt"
    _person(secured, ours, "p00000000000000a1", "u-ours")  # written as the super user
    _person(secured, theirs, "p00000000000000b1", "u-theirs")
    api = secured.for_component("api")
    try:
        client = TestClient(create_app(api))
        assert client.get("/v1/profiles/user_id:u-ours").json()["person"] == "p00000000000000a1"
        assert client.get("/v1/profiles/user_id:u-theirs").status_code == 404
        with pytest.raises(TenantError, match=f"tenant '{TENANT}' cannot serve the Redis prefix '{theirs}'"):
            create_app(api, prefix=theirs)
        # without the API's check (no namespace), the tenant's Redis user is still refused by Redis itself ...
        unbound = api.model_copy(update={"namespace": ""})
        r = TestClient(create_app(unbound, prefix=theirs)).get("/v1/profiles/user_id:u-theirs")
        assert r.status_code == 503 and r.json()["error"].startswith("Redis refused the API's user")
        # ... while a user of every key (the negative control of that ACL) reads the other tenant's person
        admin = secured.model_copy(update={"namespace": ""})
        r = TestClient(create_app(admin, prefix=theirs)).get("/v1/profiles/user_id:u-theirs")
        assert (r.status_code, r.json()["person"]) == (200, "p00000000000000b1")
    finally:
        for prefix in (ours, theirs):
            RedisStore(secured.redis, prefix=prefix).delete_prefix()
