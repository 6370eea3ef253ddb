"""Decode + validate raw Kafka records on the JVM, following docs/semantics.md.

:func:`decode_statements` returns the SQL that defines the view ``zt_decoded`` over a source table with
columns ``payload BYTES, rkey BYTES, topic STRING, part INT, off BIGINT, kts TIMESTAMP_LTZ(3)`` (``rkey``:
the Kafka record key, kept for the DLQ). Every input row comes out once, with ``reason`` NULL for a valid
event and the DLQ reason otherwise.

The record is parsed ONCE, by zhongtai's JVM function ``zt_decode_event`` (``jvm/``, class
``io.zhongtai.flink.decode.DecodeEvent``; docs/jvm.md), called behind the materialisation barrier so the
planner runs it once per record: a strict JSON parse plus the type checks of the contract, returning a ROW with
the reason of the first failing check (up to ``too_long:ids``), the raw field values, the amount and
``props`` as compact JSON. Config reaches it as one literal argument (:func:`decode_config`); the Java
holds no business constants. The first statements register the functions (``CREATE TEMPORARY SYSTEM
FUNCTION IF NOT EXISTS``), so every caller that executes the statements gets them; the jar must be on the
job's class path (``zhongtai.runner.connector_jars`` ships it; tests set ``pipeline.jars``).

What stays SQL: the identifiers' normalisation (``zt_nfkc`` first for phone and e-mail), the keyed hash,
the identity blocklist (``no_identifier``) and the anchor ``person``; the derived fields (campaign,
channel, purchase amount, exposure keys). Every regular expression here runs on values the JVM function
has already capped (identifiers: ``identity.max_identifier_length``; longer ones reject the record as
``too_long:ids``), so none can backtrack without bound.

Each value that later steps use several times is computed once behind a *materialisation barrier*
(:func:`_once`): a ``CASE WHEN RAND() >= 0`` wrapper, always true, which is non-deterministic and
therefore stops the optimiser from inlining (and repeating) the expression into later projections.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from operators.pii import hmac_pads_hex

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import IdentitySettings, JobSettings, PiiSettings

#: Identifier types the decoder reads from ``ids`` (their priority is ``identity.priority`` in config).
ID_TYPES = ("user_id", "unionid", "openid", "phone", "email", "device_id", "cookie_id")

#: ``props`` fields the decode reads (``zt_decode_event``'s ``prop_values``, in this order).
PROP_FIELDS = ("campaign_id", "channel", "item_id", "experiment_id", "variation_id")
#: Contract limits (docs/semantics.md): event_id and event_type length, JSON nesting depth.
EVENT_ID_MAX_CHARS = 128
EVENT_TYPE_MAX_CHARS = 64
MAX_JSON_DEPTH = 64
#: Every DLQ reason the decode gives, in check order (``reason`` is a VARCHAR(24), as it always was).
REASONS = (
    "oversized", "not_utf8", "malformed_json", "missing_field:event_id", "wrong_type:event_id",
    "missing_field:event_type", "wrong_type:event_type", "missing_field:ts", "wrong_type:ts", "missing_field:ids",
    "wrong_type:ids", "too_long:ids", "no_identifier", "wrong_type:props.price", "wrong_type:props.qty",
    "out_of_range:amount", "future_ts", "late",
)
_REASON_TYPE = "VARCHAR(24)"
assert max(map(len, REASONS)) <= 24, "a DLQ reason longer than zt_decoded.reason's VARCHAR(24)"

#: zhongtai's JVM functions the decode calls (jvm/src/main/java/io/zhongtai/flink/decode/).
FUNCTIONS = {
    "zt_decode_event": "io.zhongtai.flink.decode.DecodeEvent",
    "zt_nfkc": "io.zhongtai.flink.decode.Nfkc",
}
#: ASCII white space (operators.pii.ASCII_SPACE), trimmed from e-mails and from values before the blocklist.
_ASCII_WS = "CONCAT(' ', CHR(9), CHR(10), CHR(13), CHR(12), CHR(11))"


def _once(expr: str) -> str:
    """Materialisation barrier: evaluate ``expr`` once even when later steps use it many times."""
    return f"CASE WHEN RAND() >= 0 THEN {expr} END"


def _lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _nonempty(col: str) -> str:
    return f"({col} IS NOT NULL AND {col} <> '')"


def _hmac_sql(id_type: str, value_sql: str, pii: PiiSettings) -> str:
    """HMAC-SHA256(secret, '<type>:<value>') as lower-case hex, on the JVM (see operators/pii.py)."""
    # SQL has no BYTES concatenation: the inner message is a string (the padded key is ASCII because
    # the secret is), the outer one is concatenated as hex and then decoded.
    ipad, opad = hmac_pads_hex(pii.hmac_secret.get_secret_value())
    inner = f"SHA2(CONCAT(DECODE(UNHEX('{ipad}'), 'UTF-8'), '{id_type}:', {value_sql}), 256)"
    return f"SHA2(UNHEX(CONCAT('{opad}', {inner})), 256)"


def _phone_sql(d: str, cc: str) -> str:
    """``operators.pii.normalise_phone`` of ``d``, the ASCII digits of the NFKC form with ``00`` dropped."""
    return (
        f"CONCAT('+', CASE WHEN CHAR_LENGTH({d}) = 11 AND {d} LIKE '1%' "
        f"THEN CONCAT({_lit(cc)}, {d}) ELSE {d} END)"
    )


def _full_match(pattern: str) -> str:
    """Java's ``$`` also matches before a final line break, so the end anchor is ``\\z``; ``(?s)``: ``.``
    matches every character, as with Python's ``re.DOTALL`` in ``IdentityRules``."""
    return "(?s)^(?:" + pattern + ")\\z"


def _junk_sql(id_type: str, lowered: str, value: str, identity: IdentitySettings, pii: PiiSettings) -> str:
    """TRUE when an identifier is static junk, exactly as ``operators.identity.rules.IdentityRules.is_junk``.

    Plain types: ``lowered`` (the trimmed, lower-cased value) is a blocklisted value or fully matches a
    blocklisted pattern. Phone and e-mail: the keyed hash equals the hash of a blocklisted value.
    """
    values = sorted({v.strip().lower() for v in identity.blocklist_values})
    if id_type in ("phone", "email"):
        from operators.pii import pseudonymise

        secret, cc = pii.hmac_secret.get_secret_value(), pii.default_country_code
        hashes = sorted({pseudonymise(id_type, v, secret, cc) for v in values})
        return f"({value} IN ({', '.join(_lit(h) for h in hashes)}))"
    v = lowered
    tests = [f"{v} IN ({', '.join(_lit(x) for x in values)})"] if values else []
    tests += [f"REGEXP({v}, {_lit(_full_match(pat))})" for pat in identity.blocklist_patterns]
    return "(" + " OR ".join(tests or ["FALSE"]) + ")"




def decode_config(job: JobSettings, identity: IdentitySettings) -> str:
    """The config argument of ``zt_decode_event`` (``key=value;…``)."""
    return ";".join((
        f"max_bytes={job.max_event_bytes}", f"max_depth={MAX_JSON_DEPTH}", f"event_id_chars={EVENT_ID_MAX_CHARS}",
        f"event_type_chars={EVENT_TYPE_MAX_CHARS}", f"id_chars={identity.max_identifier_length}",
        f"future_skew_ms={job.max_future_skew_ms}", f"lateness_ms={job.allowed_lateness_ms}",
        f"id_types={','.join(ID_TYPES)}", f"prop_fields={','.join(PROP_FIELDS)}",
    ))


def function_statements() -> list[str]:
    """CREATE TEMPORARY SYSTEM FUNCTION for each JVM function of the decode (idempotent)."""
    return [f"CREATE TEMPORARY SYSTEM FUNCTION IF NOT EXISTS {name} AS '{cls}' LANGUAGE JAVA"
            for name, cls in FUNCTIONS.items()]


def decode_statements(source: str, job: JobSettings, pii: PiiSettings,
                      identity: IdentitySettings | None = None) -> list[str]:
    """The function registrations and CREATE VIEW statements, in order; the last defines ``zt_decoded``."""
    from config.settings import IdentitySettings

    identity = identity or IdentitySettings()
    # Stage 1: one parse per record: the ROW-valued call behind the barrier, its fields read from the one
    # column. (A LATERAL TABLE call gets a fresh correlation variable per view expansion, so the planner
    # could not reuse it across the job's INSERTs: nine parses per record in the foundation's plan.)
    ids = ",\n  ".join(f"d.ids[{i + 1}] AS raw_{t}" for i, t in enumerate(ID_TYPES))
    props = ",\n  ".join(f"d.prop_values[{i + 1}] AS p_{f}" for i, f in enumerate(PROP_FIELDS))
    call = _once(f"zt_decode_event(payload, kts, {_lit(decode_config(job, identity))})")
    s1 = f"""
CREATE TEMPORARY VIEW zt_d1 AS
SELECT payload, rkey, topic, part, off, kts,
  d.reason AS r_head, d.reason_after AS r_after, d.event_id AS j_event_id, d.event_type AS j_event_type,
  d.ts_ms AS ts_ms, d.source AS j_source, d.amount AS j_amount, d.props AS j_props,
  {ids},
  {props}
FROM (SELECT payload, rkey, topic, part, off, kts, {call} AS d FROM {source})"""

    # Stage 2: identifiers. Phone and e-mail: NFKC, normalised and replaced by their keyed hash (once
    # each); then static junk (config identity.blocklist_*) dropped, exactly as operators.identity.rules.
    # Every value here is at most identity.max_identifier_length long (the JVM function rejects longer).
    phone_digits = _once("CASE WHEN raw_phone <> '' THEN "
                         "REGEXP_REPLACE(REGEXP_REPLACE(zt_nfkc(raw_phone), '[^0-9]', ''), '^00', '') END")

    def stored(t: str) -> str:
        if t == "phone":
            return _hmac_sql("phone", _phone_sql("n_phone", pii.default_country_code), pii)
        if t == "email":
            return _hmac_sql("email", f"LOWER(TRIM(BOTH {_ASCII_WS} FROM zt_nfkc(raw_{t})))", pii)
        return f"raw_{t}"

    stored_cols = ", ".join(
        _once("CASE WHEN raw_%s <> '' THEN %s END" % (t, stored(t))) + f" AS s_{t}" for t in ID_TYPES
    )
    # Plain identifiers are compared trimmed and lower-cased (computed once per identifier).
    plain = [t for t in ID_TYPES if t not in ("phone", "email")]
    lc_cols = ", ".join(_once(f"LOWER(TRIM(BOTH {_ASCII_WS} FROM s_{t}))") + f" AS lc_{t}" for t in plain)
    clean_cols = ", ".join(
        _once(f"CASE WHEN s_{t} IS NULL OR {_junk_sql(t, f'lc_{t}', f's_{t}', identity, pii)} "
              f"THEN CAST(NULL AS STRING) ELSE s_{t} END") + f" AS id_{t}"
        for t in ID_TYPES
    )
    s2 = f"""
CREATE TEMPORARY VIEW zt_d2 AS
SELECT *, {clean_cols}
FROM (
SELECT *, {lc_cols}
FROM (
SELECT *, {stored_cols}
FROM (
SELECT *, {phone_digits} AS n_phone
FROM zt_d1)))"""
    any_id = " OR ".join(f"id_{t} IS NOT NULL" for t in ID_TYPES)
    reason = (f"CAST(CASE WHEN r_head IS NOT NULL THEN r_head WHEN NOT ({any_id}) THEN 'no_identifier' "
              f"ELSE r_after END AS {_REASON_TYPE})")
    # The anchor: the event's strongest clean identifier (identity.priority), "<type>:<stored value>".
    person = "CASE " + " ".join(
        f"WHEN id_{t} IS NOT NULL THEN CONCAT('{t}:', id_{t})" for t in identity.priority if t in ID_TYPES
    ) + " END"
    # variation_id: an integer of at most 10 digits (JSON integer or [+-]digits string) in INT range.
    variation = (f"CASE WHEN CHAR_LENGTH(p_variation_id) <= 11 AND REGEXP(p_variation_id, '^[+-]?[0-9]{{1,10}}\\z') "
                 f"THEN TRY_CAST(p_variation_id AS INT) END")
    s3 = f"""
CREATE TEMPORARY VIEW zt_decoded AS
SELECT payload, topic, part, off, kts, reason,
  j_event_id AS event_id, j_event_type AS event_type, ts_ms,
  CASE WHEN reason IS NULL THEN {person} END AS person,
  {", ".join(f"id_{t}" for t in ID_TYPES)},
  CASE WHEN {_nonempty("p_campaign_id")} THEN p_campaign_id ELSE '(none)' END AS campaign,
  CASE WHEN {_nonempty("p_channel")} THEN p_channel ELSE COALESCE(NULLIF(j_source, ''), '(none)') END AS channel,
  CASE WHEN reason IS NULL AND j_event_type = 'purchase' THEN j_amount END AS amount,
  NULLIF(p_item_id, '') AS item_id,
  CASE WHEN j_event_type = 'exposure' THEN NULLIF(p_experiment_id, '') END AS exp_key,
  CASE WHEN j_event_type = 'exposure' THEN {variation} END AS variation,
  j_props AS props, rkey
FROM (SELECT *, {_once(reason)} AS reason FROM zt_d2)"""
    return [*function_statements(), s1, s2, s3]
