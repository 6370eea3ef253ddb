"""Security settings (docs/security.md): every Kafka client's properties from ``kafka.security``, credentials per
component, secrets kept out of reprs and errors, and the development HMAC secret refused off this machine."""

from __future__ import annotations

import json

import pytest

from config import ConfigError, load_settings
from config.settings import DEV_HMAC_SECRET, settings_to_json
from connectors.kafka_security import client_config, redact, table_properties
from connectors.kafka_tables import source_ddl, store_log_sink_ddl
from pipelines.actions import actions_sink_ddl

PW = "kafka-pw-4f1e"
SASL = {"kafka": {"security": {"protocol": "SASL_PLAINTEXT", "username": "zt-admin", "password": PW}}}
COMPONENTS = {"security": {"components": {
    "job": {"kafka": {"username": "zt-job", "password": "job-pw-77"}, "redis": {"username": "zt-writer",
                                                                             "password": "writer-pw-31"}},
    "api": {"redis": {"username": "zt-api", "password": "api-pw-90"}},
}}}


def test_plaintext_clients_carry_only_the_bootstrap() -> None:
    s = load_settings(env={})
    assert client_config(s.kafka) == {"bootstrap.servers": "127.0.0.1:9092"}
    assert table_properties(s.kafka) == {"properties.bootstrap.servers": "127.0.0.1:9092"}


def test_sasl_scram_reaches_librdkafka_and_the_flink_tables() -> None:
    s = load_settings(env={}, overrides=SASL)
    assert client_config(s.kafka) == {
        "bootstrap.servers": "127.0.0.1:9092", "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "zt-admin", "sasl.password": PW}
    assert table_properties(s.kafka) == {
        "properties.bootstrap.servers": "127.0.0.1:9092", "properties.security.protocol": "SASL_PLAINTEXT",
        "properties.sasl.mechanism": "SCRAM-SHA-512",
        "properties.sasl.jaas.config": "org.apache.flink.kafka.shaded.org.apache.kafka.common.security.scram."
                                       f'ScramLoginModule required username="zt-admin" password="{PW}";'}
    # every Kafka table of the job carries it (the DDL is the one place the password is unavoidable)
    for ddl in (source_ddl("t", s.kafka), store_log_sink_ddl("t", s.kafka, topic="x", transactional_id_prefix="p"),
                actions_sink_ddl("t", s, "p", "zt.actions.")):
        assert "'properties.security.protocol' = 'SASL_PLAINTEXT'" in ddl and PW in ddl
        assert PW not in redact(ddl) and 'password="****"' in redact(ddl)


def test_tls_adds_the_ca_file() -> None:
    s = load_settings(env={}, overrides={"kafka": {"security": {
        "protocol": "SASL_SSL", "username": "u", "password": PW, "ca_file": "/etc/zt/ca.pem"}}})
    assert client_config(s.kafka)["ssl.ca.location"] == "/etc/zt/ca.pem"
    assert table_properties(s.kafka)["properties.ssl.truststore.location"] == "/etc/zt/ca.pem"


def test_sasl_without_a_password_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="ZT__KAFKA__SECURITY__PASSWORD"):
        load_settings(env={}, overrides={"kafka": {"security": {"protocol": "SASL_SSL", "username": "u"}}})


def test_a_bad_password_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(env={}, overrides={"kafka": {"security": {"protocol": "SASL_SSL", "username": "u",
                                                                "password": 'sec"ret-in-error'}}})
    assert "quotes" in str(e.value) and "sec\"ret-in-error" not in str(e.value)


def test_secrets_stay_out_of_reprs() -> None:
    s = load_settings(env={"ZT__REDIS__PASSWORD": "redis-pw-12"}, overrides={**SASL, **COMPONENTS})
    text = repr(s) + str(s) + s.model_dump_json()
    for secret in (PW, "redis-pw-12", "job-pw-77", "writer-pw-31", "api-pw-90"):
        assert secret not in text


def test_each_component_gets_its_own_credentials_and_no_other() -> None:
    s = load_settings(env={}, overrides={**SASL, **COMPONENTS})
    job = s.for_component("job")
    assert (job.kafka.security.username, job.redis.username) == ("zt-job", "zt-writer")
    shipped = settings_to_json(job)  # what the job sends to every TaskManager
    assert "job-pw-77" in shipped and "writer-pw-31" in shipped
    assert "api-pw-90" not in shipped and PW not in shipped and json.loads(shipped)["security"]["components"] == {}
    api = s.for_component("api")  # no Kafka principal of its own: the shared one
    assert (api.kafka.security.username, api.redis.username) == ("zt-admin", "zt-api")
    assert api.redis.password is not None and api.redis.password.get_secret_value() == "api-pw-90"
    # no components configured: nothing changes
    assert load_settings(env={}).for_component("worker") == load_settings(env={})


def test_components_come_from_the_environment() -> None:
    s = load_settings(env={"ZT__SECURITY__COMPONENTS__WORKER__REDIS__USERNAME": "zt-ledger",
                           "ZT__SECURITY__COMPONENTS__WORKER__REDIS__PASSWORD": "ledger-pw-5"}).for_component("worker")
    assert s.redis.username == "zt-ledger" and s.redis.password is not None


@pytest.mark.parametrize("where", [
    {"kafka": {"bootstrap": "kafka-1.prod:9092"}},
    {"redis": {"host": "10.0.0.7"}},
    {"redis": {"mode": "cluster", "nodes": "127.0.0.1:7001,redis-b:7002"}},
    {"hbase": {"host": "hbase.prod"}},
])
def test_the_development_hmac_secret_is_refused_off_this_machine(where: dict) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(env={}, overrides=where)
    msg = str(e.value)
    assert "pii.hmac_secret is the built-in development secret" in msg and "ZT__PII__HMAC_SECRET" in msg
    assert "openssl rand -hex 32" in msg and DEV_HMAC_SECRET not in msg
    # negative controls: an own secret, or the explicit demo flag, is accepted there
    assert load_settings(env={"ZT__PII__HMAC_SECRET": "own-secret-1"}, overrides=where)
    assert load_settings(env={"ZT__SECURITY__ALLOW_DEV_SECRETS": "true"}, overrides=where)


def test_the_development_secret_is_fine_on_the_local_stack() -> None:
    assert load_settings(env={}).pii.hmac_secret.get_secret_value() == DEV_HMAC_SECRET
    assert load_settings(env={}, overrides={"kafka": {"bootstrap": "localhost:9092,127.0.0.2:9093"}})


def test_docs_list_the_acls_the_code_grants() -> None:
    """docs/security.md's two tables are exactly what ``component_acls`` and ``component_acl_rules`` grant."""
    from connectors.kafka_admin import component_acls
    from connectors.redis_clients import component_acl_rules
    from tests.helpers import ROOT

    doc = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    s = load_settings(env={})
    for component, rows in component_acls(s).items():
        cell = "<br>".join(f"{r} `{n}` ({p.lower()}): {', '.join(ops)}" for r, n, p, ops in rows)
        assert f"| {component} | {cell} |" in doc
    for component, rules in component_acl_rules(s.redis).items():
        assert f"| {component} | `{rules}` |" in doc


def test_an_api_instance_serves_only_its_tenants_prefix() -> None:
    from zhongtai.services.api.tenant import TenantError, tenant_prefix

    a = load_settings(env={}, overrides={"namespace": "brand-a"})
    assert tenant_prefix(a, None) == "brand-a.zt" and tenant_prefix(a, "brand-a.legacy") == "brand-a.legacy"
    for other in ("brand-b.zt", "zt", "brand-aa.zt"):
        with pytest.raises(TenantError, match=f"tenant 'brand-a' cannot serve the Redis prefix '{other}'"):
            tenant_prefix(a, other)
    assert tenant_prefix(load_settings(env={}), "anything") == "anything"  # no tenant: no binding
