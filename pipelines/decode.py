"""Decode + validate raw Kafka records on the JVM, following docs/semantics.md.

:func:`decode_statements` returns the SQL that defines the view ``zt_decoded`` over a source table with
columns ``payload BYTES, rkey BYTES, topic STRING, part INT, off BIGINT, kts TIMESTAMP_LTZ(3)`` (``rkey``:
the Kafka record key, kept for the DLQ). Every input row comes out once, with ``reason`` NULL for a valid
event and the DLQ reason otherwise.

The record is parsed and checked ONCE, by zhongtai's JVM function ``zt_decode_event`` (``jvm/``, class
``io.zhongtai.flink.decode.DecodeEvent``; docs/jvm.md): a strict JSON parse, the type checks of the
contract, the identifiers' normalisation, keyed hash and blocklist, the anchor ``person`` and the range
and time checks, returning one ROW. The SQL keeps what the fields *mean* downstream: ``(none)`` for a
missing campaign or channel, the amount of purchases only, the exposure keys. Config reaches the Java as
one JSON literal (:func:`decode_config`: limits, identifier types, priority, the blocklist, the HMAC
pads); the Java holds no business constants. The first statement registers the function (``CREATE
TEMPORARY SYSTEM FUNCTION IF NOT EXISTS``), so every caller that executes the statements gets it; the jar
must be on the job's class path (``zhongtai.jobs.runner.connector_jars`` ships it; tests set ``pipeline.jars``).

The call sits behind a *materialisation barrier* (:func:`_once`): a ``CASE WHEN RAND() >= 0`` wrapper,
always true, which is non-deterministic and therefore stops the optimiser from inlining (and repeating)
the call into the projections that read its fields. (A ``LATERAL TABLE`` call was tried first: each view
expansion gets its own correlation variable, so the planner could not reuse it across the job's INSERTs:
nine parses per record in the foundation's plan.)
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from operators.pii import hmac_pads_hex

if TYPE_CHECKING:  # pragma: no cover
    from config.schema import EventSchema
    from config.settings import IdentitySettings, JobSettings, PiiSettings

#: The built-in identifier types the decoder reads from ``ids`` (their priority is ``identity.priority`` in
#: config); a schema's custom types follow them (``EventSchema.id_types``).
ID_TYPES = ("user_id", "unionid", "openid", "phone", "email", "device_id", "cookie_id")

#: ``props`` fields the decode reads (``zt_decode_event``'s ``prop_values``, in this order).
PROP_FIELDS = ("campaign_id", "channel", "item_id", "experiment_id", "variation_id")
#: Contract limits (docs/semantics.md): event_id and event_type length, JSON nesting depth.
EVENT_ID_MAX_CHARS = 128
EVENT_TYPE_MAX_CHARS = 64
MAX_JSON_DEPTH = 64
#: Every DLQ reason the decode gives without a declared schema, in check order; a schema adds its own
#: (``config.schema.EventSchema.reasons``: ``wrong_type:props.<name>`` ..., before ``future_ts``).
REASONS = (
    "oversized", "not_utf8", "malformed_json", "missing_field:event_id", "wrong_type:event_id",
    "missing_field:event_type", "wrong_type:event_type", "missing_field:ts", "wrong_type:ts", "missing_field:ids",
    "wrong_type:ids", "too_long:ids", "no_identifier", "wrong_type:props.price", "wrong_type:props.qty",
    "out_of_range:amount", "future_ts", "late",
)
#: ``zt_decoded.reason``: the longest is a schema's ``missing_field:props.<40 characters>`` (60). It was a
#: VARCHAR(24) before schemas; the type's length is not part of any state serializer (docs/upgrade.md).
_REASON_TYPE = "VARCHAR(64)"
assert max(map(len, REASONS)) <= 64, "a DLQ reason longer than zt_decoded.reason's VARCHAR(64)"

#: zhongtai's JVM functions the decode calls (jvm/src/main/java/io/zhongtai/flink/decode/).
FUNCTIONS = {"zt_decode_event": "io.zhongtai.flink.decode.DecodeEvent"}


def _once(expr: str) -> str:
    """Materialisation barrier: evaluate ``expr`` once even when later steps use it many times."""
    return f"CASE WHEN RAND() >= 0 THEN {expr} END"


def _lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _nonempty(col: str) -> str:
    return f"({col} IS NOT NULL AND {col} <> '')"


def decode_config(job: JobSettings, identity: IdentitySettings, pii: PiiSettings,
                  schema: EventSchema | None = None) -> str:
    """The config argument of ``zt_decode_event``: a JSON object (see the Java class's Javadoc). ``schema``:
    the declared props' checks (``prop_checks``) and, with ``undeclared_events: reject``, the declared
    event types (``declared_events``)."""
    from operators.identity import IdentityRules
    from operators.pii import NATIONAL_DIGITS, NATIONAL_PREFIX, PII_TYPES

    rules = IdentityRules.from_settings(identity, pii, schema)
    ipad, opad = hmac_pads_hex(pii.hmac_secret.get_secret_value())
    id_types = schema.id_types() if schema else ID_TYPES
    return json.dumps({
        "max_bytes": job.max_event_bytes, "max_depth": MAX_JSON_DEPTH, "event_id_chars": EVENT_ID_MAX_CHARS,
        "event_type_chars": EVENT_TYPE_MAX_CHARS, "id_chars": identity.max_identifier_length,
        "future_skew_ms": job.max_future_skew_ms, "lateness_ms": job.allowed_lateness_ms,
        # "<type>:<kind>": phone and e-mail are normalised as such and replaced by their keyed hash
        "id_types": list(id_types), "pii_kinds": [f"{t}:{t}" for t in sorted(PII_TYPES)],
        "custom_ids": [{"type": t, "normalise": spec.normalise, "hashed": spec.hashed}
                       for t, spec in (schema.identifiers.items() if schema else ())],
        "priority": [t for t in identity.priority if t in id_types], "prop_fields": list(PROP_FIELDS),
        "hmac_ipad": ipad, "hmac_opad": opad, "country_code": pii.default_country_code,
        "national_digits": NATIONAL_DIGITS, "national_prefix": NATIONAL_PREFIX,
        "blocked_values": sorted(rules.blocked_values), "blocked_hashes": sorted(rules.blocked_hashes),
        "blocked_patterns": list(rules.blocked_patterns),
        "prop_checks": [{"event": et, "name": n, "type": p.type, "required": p.required}
                        for et, n, p in (schema.prop_checks() if schema else [])],
        "declared_events": (sorted(schema.events) if schema and schema.undeclared_events == "reject" else None),
    }, ensure_ascii=False, separators=(",", ":"))


def function_statements() -> list[str]:
    """CREATE TEMPORARY SYSTEM FUNCTION for each JVM function of the decode (idempotent)."""
    return [f"CREATE TEMPORARY SYSTEM FUNCTION IF NOT EXISTS {name} AS '{cls}' LANGUAGE JAVA"
            for name, cls in FUNCTIONS.items()]


def decode_statements(source: str, job: JobSettings, pii: PiiSettings,
                      identity: IdentitySettings | None = None, schema: EventSchema | None = None) -> list[str]:
    """The function registration and the CREATE VIEW statements, in order; the last defines ``zt_decoded``."""
    from config.settings import IdentitySettings

    identity = identity or IdentitySettings()
    ids = ", ".join(f"d.ids[{i + 1}] AS id_{t}" for i, t in enumerate(schema.id_types() if schema else ID_TYPES))
    p = {f: f"d.prop_values[{i + 1}]" for i, f in enumerate(PROP_FIELDS)}
    call = _once(f"zt_decode_event(payload, kts, {_lit(decode_config(job, identity, pii, schema))})")
    # variation_id: an integer of at most 10 digits (JSON integer or [+-]digits string) in INT range.
    var = p["variation_id"]
    variation = (f"CASE WHEN CHAR_LENGTH({var}) <= 11 AND REGEXP({var}, '^[+-]?[0-9]{{1,10}}\\z') "
                 f"THEN TRY_CAST({var} AS INT) END")
    decoded = f"""
CREATE TEMPORARY VIEW zt_decoded AS
SELECT payload, topic, part, off, kts, CAST(d.reason AS {_REASON_TYPE}) AS reason,
  d.event_id AS event_id, d.event_type AS event_type, d.ts_ms AS ts_ms, d.person AS person,
  {ids},
  CASE WHEN {_nonempty(p["campaign_id"])} THEN {p["campaign_id"]} ELSE '(none)' END AS campaign,
  CASE WHEN {_nonempty(p["channel"])} THEN {p["channel"]}
       ELSE COALESCE(NULLIF(d.source, ''), '(none)') END AS channel,
  CASE WHEN d.reason IS NULL AND d.event_type = 'purchase' THEN d.amount END AS amount,
  NULLIF({p["item_id"]}, '') AS item_id,
  CASE WHEN d.event_type = 'exposure' THEN NULLIF({p["experiment_id"]}, '') END AS exp_key,
  CASE WHEN d.event_type = 'exposure' THEN {variation} END AS variation,
  d.props AS props, rkey
FROM (SELECT payload, rkey, topic, part, off, kts, {call} AS d FROM {source})"""
    return [*function_statements(), decoded]
