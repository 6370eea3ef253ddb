"""Kafka client security from the one config tree (``kafka.security``; docs/security.md).

Every Kafka client of zhongtai starts from :func:`client_config` (librdkafka: the admin client, the applier,
the workers, the API, the collector's producer, the control producers) or :func:`table_properties` (the Java
client inside Flink's Kafka connector: the job's Kafka tables). Both carry the same protocol, SCRAM
mechanism, principal and CA file, so no client can be left unsecured by forgetting a key.

The password leaves its ``SecretStr`` only here, into the client's configuration. The job's tables cannot
avoid carrying it: Flink's Kafka connector takes credentials only as the ``properties.sasl.jaas.config``
option of the table, so the job's DDL holds it. Flink masks that key wherever it prints options (its
sensitive keys include ``jaas.config`` and ``password``), the Kafka clients log it as ``[hidden]``, the
plan (``EXPLAIN``) names tables without their options, and :func:`redact` replaces it in any DDL zhongtai
itself prints or puts in an error.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import KafkaSettings

#: The login module of SCRAM in the Kafka clients; Flink's SQL connector jar relocates it.
SCRAM_LOGIN_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
FLINK_SHADED_PREFIX = "org.apache.flink.kafka.shaded."
_JAAS_PASSWORD = re.compile(r'(password=")[^"]*(")')


def client_config(kafka: KafkaSettings) -> dict[str, Any]:
    """``bootstrap.servers`` and the security properties of a librdkafka client (confluent-kafka)."""
    sec = kafka.security
    out: dict[str, Any] = {"bootstrap.servers": kafka.bootstrap}
    if sec.protocol == "PLAINTEXT":
        return out
    out["security.protocol"] = sec.protocol
    if sec.sasl:
        assert sec.password is not None  # KafkaSecurity's validator
        out |= {"sasl.mechanism": sec.sasl_mechanism, "sasl.username": sec.username,
                "sasl.password": sec.password.get_secret_value()}
    if sec.protocol.endswith("SSL") and sec.ca_file:
        out["ssl.ca.location"] = sec.ca_file
    return out


def jaas_config(username: str, password: str, shaded: bool = True) -> str:
    """The JAAS line of a SCRAM login (Java clients); ``shaded``: the login module as Flink's SQL connector
    jar names it. ``Credentials`` refuses quotes and backslashes in a password, so quoting is plain."""
    module = (FLINK_SHADED_PREFIX if shaded else "") + SCRAM_LOGIN_MODULE
    return f'{module} required username="{username}" password="{password}";'


def table_properties(kafka: KafkaSettings) -> dict[str, str]:
    """``properties.*`` options of a Flink Kafka table: the bootstrap servers and the same security as
    :func:`client_config` (Java client names)."""
    sec = kafka.security
    out = {"properties.bootstrap.servers": kafka.bootstrap}
    if sec.protocol == "PLAINTEXT":
        return out
    out["properties.security.protocol"] = sec.protocol
    if sec.sasl:
        assert sec.password is not None
        out["properties.sasl.mechanism"] = sec.sasl_mechanism
        out["properties.sasl.jaas.config"] = jaas_config(sec.username, sec.password.get_secret_value())
    if sec.protocol.endswith("SSL") and sec.ca_file:
        out |= {"properties.ssl.truststore.type": "PEM", "properties.ssl.truststore.location": sec.ca_file}
    return out


def redact(text: str) -> str:
    """``text`` (a DDL, an error) with every JAAS password replaced by ``****``."""
    return _JAAS_PASSWORD.sub(r"\1****\2", text)
