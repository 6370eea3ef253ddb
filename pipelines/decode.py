"""Decode + validate raw Kafka records in Flink SQL (JVM), following docs/semantics.md.

``register_decode(t_env, source, job, pii)`` registers the temporary view ``zt_decoded`` over a
source table with columns ``payload BYTES, topic STRING, part INT, off BIGINT, kts TIMESTAMP_LTZ(3)``.
Every input row comes out once, with ``reason`` NULL for a valid event and the DLQ reason otherwise.

Why SQL and not Python: the per-event hot path stays on the JVM (see docs/performance.md). Each
``JSON_VALUE`` parses its input again and the planner does not share sub-expressions between
merged projections, so each parsed field is computed once behind a *materialisation barrier*
(:func:`_once`): a ``CASE WHEN RAND() >= 0`` wrapper, always true, which is non-deterministic and
therefore stops the optimiser from inlining (and repeating) the expression into later projections.
Measured: one ``JSON_VALUE`` referenced three times cost 2.9 s per 1M events more than referenced
once; with the barrier the cost is that of a single call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from operators.pii import hmac_pads_hex

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import IdentitySettings, JobSettings, PiiSettings

#: Identifier types the decoder reads from ``ids`` (their priority is ``identity.priority`` in config).
ID_TYPES = ("user_id", "unionid", "openid", "phone", "email", "device_id", "cookie_id")

_ISO_TS = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{3})?(Z|[+-][0-9]{2}:[0-9]{2})\z"
_EVENT_TYPE = r"^[a-z][a-z0-9_]{0,63}\z"
#: Java's ``$`` also matches before a final line break, so every anchor at the end is ``\z``.
_EPOCH_MS = r"^-?[0-9]{1,15}\z"
_NUMBER = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?\z"


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


def _phone_sql(raw: str, cc: str) -> str:
    d = f"REGEXP_REPLACE(REGEXP_REPLACE({raw}, '[^0-9]', ''), '^00', '')"
    return (
        f"CONCAT('+', CASE WHEN CHAR_LENGTH({d}) = 11 AND {d} LIKE '1%' "
        f"THEN CONCAT({_lit(cc)}, {d}) ELSE {d} END)"
    )


def _iso_ms(ts: str) -> str:
    """Epoch ms of an ISO-8601 string already known to match ``_ISO_TS``; NULL for impossible dates.

    The parser is lenient (25:00 rolls over to the next day, 30 February to March), so the result is
    formatted back and compared with the input's local date-time: only exact round trips count.
    """
    zone = f"REGEXP_EXTRACT({ts}, '(Z|[+-][0-9]{{2}}:[0-9]{{2}})$', 1)"
    local = f"SUBSTRING({ts} FROM 1 FOR 19)"
    secs = f"UNIX_TIMESTAMP(CONCAT({local}, {zone}), 'yyyy-MM-dd''T''HH:mm:ssXXX')"
    offset = (
        f"(CASE WHEN {zone} = 'Z' THEN 0 ELSE (CAST(SUBSTRING({zone} FROM 2 FOR 2) AS INT) * 3600 "
        f"+ CAST(SUBSTRING({zone} FROM 5 FOR 2) AS INT) * 60) * (CASE WHEN {zone} LIKE '-%' THEN -1 ELSE 1 END) END)"
    )
    roundtrip = f"FROM_UNIXTIME({secs} + {offset}, 'yyyy-MM-dd''T''HH:mm:ss') = {local}"
    frac = f"REGEXP_EXTRACT({ts}, '\\.([0-9]{{3}})', 1)"
    millis = f"COALESCE(CAST({frac} AS BIGINT), 0)"
    return f"(CASE WHEN {roundtrip} THEN {secs} * 1000 + {millis} END)"


def _name_needle(field: str) -> str:
    """The longest piece of ``"field"`` without ``_`` (a LIKE wildcard), e.g. ``"device`` for device_id."""
    return max(f'"{field}"'.split("_"), key=len)


def _full_match(pattern: str) -> str:
    return "^(?:" + pattern + ")\\z"


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


def decode_statements(source: str, job: JobSettings, pii: PiiSettings,
                      identity: IdentitySettings | None = None) -> list[str]:
    """The CREATE VIEW statements, in order; the last defines ``zt_decoded``."""
    from config.settings import IdentitySettings

    identity = identity or IdentitySettings()
    max_b = job.max_event_bytes
    b64 = "TO_BASE64(payload)"
    exact_len = (
        f"(CHAR_LENGTH({b64}) / 4 * 3 - CASE WHEN {b64} LIKE '%==' THEN 2 "
        f"WHEN {b64} LIKE '%=' THEN 1 ELSE 0 END)"
    )
    # Stage 1: the string once, its size class and UTF-8 validity.
    s1 = f"""
CREATE TEMPORARY VIEW zt_d1 AS
SELECT payload, topic, part, off, kts, s,
  CASE
    WHEN CHAR_LENGTH(s) > {max_b} THEN TRUE
    WHEN CHAR_LENGTH(s) * 4 <= {max_b} THEN FALSE
    ELSE {exact_len} > {max_b}
  END AS oversized,
  ENCODE(s, 'UTF-8') = payload AS utf8
FROM (SELECT payload, topic, part, off, kts, {_once("CAST(payload AS STRING)")} AS s FROM {source})"""
    # Stage 2: is it a JSON object (one parse), only when size and encoding passed.
    s2 = f"""
CREATE TEMPORARY VIEW zt_d2 AS
SELECT *, {_once("CASE WHEN oversized OR NOT utf8 THEN FALSE ELSE s IS JSON OBJECT END")} AS obj
FROM zt_d1"""
    # Stage 3: the top-level fields, each parsed once, only for objects.
    def jv(path: str) -> str:
        return _once(f"CASE WHEN obj THEN JSON_VALUE(s, '{path}') END")

    def jq(path: str) -> str:
        return _once(f"CASE WHEN obj THEN JSON_QUERY(s, '{path}') END")

    s3 = f"""
CREATE TEMPORARY VIEW zt_d3 AS
SELECT payload, topic, part, off, kts, s, oversized, utf8, obj,
  {jv("$.event_id")} AS j_event_id,
  {jv("$.event_type")} AS j_event_type,
  {jv("$.ts")} AS j_ts,
  {jq("$.ids")} AS j_ids,
  {jq("$.props")} AS j_props
FROM zt_d2"""

    # Stage 4: the small nested objects. A field is only parsed when its name occurs in the text
    # (a substring search in a short string costs a fraction of a JSON parse); absent names stay NULL.
    # The search is a LIKE '%...%' without wildcards inside, which the code generator turns into a
    # byte search (first-byte scan); POSITION walks the string character by character and compared a
    # whole needle at every position (10 % of the job's CPU, docs/performance.md "SQL core (session 4)").
    # '_' is a LIKE wildcard, so the needle is the field name's longest '_'-free piece (with the quote
    # that opens or closes the name): it occurs whenever the name does, so the guard never drops a field.
    def small(obj: str, field: str) -> str:
        return _once(f"CASE WHEN {obj} LIKE '%{_name_needle(field)}%' THEN JSON_VALUE({obj}, '$.{field}') END")

    ids_cols = ",\n  ".join(f"{small('j_ids', t)} AS raw_{t}" for t in ID_TYPES)
    ts_expr = _once(
        f"CASE WHEN REGEXP(j_ts, '{_EPOCH_MS}') THEN CAST(j_ts AS BIGINT) "
        f"WHEN REGEXP(j_ts, '{_ISO_TS}') THEN {_iso_ms('j_ts')} END"
    )
    # Identifiers: phone and e-mail normalised and replaced by their keyed hash (once each), then
    # static junk (config identity.blocklist_*) dropped, exactly as operators.identity.rules does.
    def stored(t: str) -> str:
        if t == "phone":
            return _hmac_sql("phone", _phone_sql(f"raw_{t}", pii.default_country_code), pii)
        if t == "email":
            ws = "'^[ \\t\\n\\r\\f\\x0B]+|[ \\t\\n\\r\\f\\x0B]+$'"
            return _hmac_sql("email", f"LOWER(REGEXP_REPLACE(raw_{t}, {ws}, ''))", pii)
        return f"raw_{t}"

    stored_cols = ", ".join(
        _once(f"CASE WHEN raw_{t} <> '' THEN {stored(t)} END") + f" AS s_{t}" for t in ID_TYPES
    )
    # Plain identifiers are compared trimmed and lower-cased (computed once per identifier).
    plain = [t for t in ID_TYPES if t not in ("phone", "email")]
    lc_cols = ", ".join(
        _once(f"LOWER(REGEXP_REPLACE(s_{t}, '^[ \\t\\n\\r\\f\\x0B]+|[ \\t\\n\\r\\f\\x0B]+$', ''))") + f" AS lc_{t}"
        for t in plain
    )
    clean_cols = ", ".join(
        f"CASE WHEN s_{t} IS NULL OR {_junk_sql(t, f'lc_{t}', f's_{t}', identity, pii)} THEN CAST(NULL AS STRING) "
        f"ELSE s_{t} END AS id_{t}"
        for t in ID_TYPES
    )
    s4 = f"""
CREATE TEMPORARY VIEW zt_d4 AS
SELECT *, {clean_cols}
FROM (
SELECT *, {lc_cols}
FROM (
SELECT *, {stored_cols}
FROM (
SELECT *,
  {ids_cols},
  {small("j_props", "campaign_id")} AS p_campaign,
  {small("j_props", "channel")} AS p_channel,
  {small("j_props", "price")} AS p_price,
  {small("j_props", "qty")} AS p_qty,
  {small("j_props", "item_id")} AS p_item,
  {small("j_props", "experiment_id")} AS p_exp,
  {small("j_props", "variation_id")} AS p_var,
  {ts_expr} AS ts_ms
FROM zt_d3)))"""
    any_id = " OR ".join(f"id_{t} IS NOT NULL" for t in ID_TYPES)
    # JSON_VALUE returns NULL both for a missing field and for an object/array; the extra parse that
    # tells them apart sits inside a THEN (evaluated only on that failure path), never in a WHEN.
    def absent_but_present(obj: str, field: str, query: str) -> str:
        return f"(CASE WHEN {obj} LIKE '%{_name_needle(field)}%' THEN {query} IS NOT NULL ELSE FALSE END)"

    reason = f"""
  CASE
    WHEN oversized THEN 'oversized'
    WHEN NOT utf8 THEN 'not_utf8'
    WHEN NOT obj THEN 'malformed_json'
    WHEN j_event_id IS NULL OR j_event_id = '' THEN
      CASE WHEN j_event_id IS NULL AND JSON_QUERY(s, '$.event_id') IS NOT NULL THEN 'wrong_type:event_id'
           ELSE 'missing_field:event_id' END
    WHEN CHAR_LENGTH(j_event_id) > 128 THEN 'wrong_type:event_id'
    WHEN j_event_type IS NULL OR j_event_type = '' THEN
      CASE WHEN j_event_type IS NULL AND JSON_QUERY(s, '$.event_type') IS NOT NULL THEN 'wrong_type:event_type'
           ELSE 'missing_field:event_type' END
    WHEN NOT REGEXP(j_event_type, '{_EVENT_TYPE}') THEN 'wrong_type:event_type'
    WHEN j_ts IS NULL THEN
      CASE WHEN JSON_QUERY(s, '$.ts') IS NULL THEN 'missing_field:ts' ELSE 'wrong_type:ts' END
    WHEN ts_ms IS NULL THEN 'wrong_type:ts'
    WHEN j_ids IS NULL THEN
      CASE WHEN JSON_VALUE(s, '$.ids') IS NULL AND NOT JSON_EXISTS(s, '$.ids[0]') THEN 'missing_field:ids'
           ELSE 'wrong_type:ids' END
    WHEN SUBSTRING(j_ids FROM 1 FOR 1) <> '{{' THEN 'wrong_type:ids'
    WHEN NOT ({any_id}) THEN 'no_identifier'
    WHEN j_props LIKE '{{%' AND p_price IS NOT NULL AND NOT REGEXP(p_price, '{_NUMBER}') THEN 'wrong_type:props.price'
    WHEN j_props LIKE '{{%' AND p_price IS NULL
         AND {absent_but_present("j_props", "price", "JSON_QUERY(j_props, '$.price')")} THEN 'wrong_type:props.price'
    WHEN j_props LIKE '{{%' AND p_qty IS NOT NULL AND NOT REGEXP(p_qty, '^[+-]?[0-9]+\\z') THEN 'wrong_type:props.qty'
    WHEN j_props LIKE '{{%' AND p_qty IS NULL
         AND {absent_but_present("j_props", "qty", "JSON_QUERY(j_props, '$.qty')")} THEN 'wrong_type:props.qty'
    WHEN TO_TIMESTAMP_LTZ(ts_ms - {job.max_future_skew_ms}, 3) > kts THEN 'future_ts'
    WHEN TO_TIMESTAMP_LTZ(ts_ms + {job.allowed_lateness_ms}, 3) < kts THEN 'late'
  END"""
    # The anchor: the event's strongest clean identifier (identity.priority), "<type>:<stored value>".
    person = "CASE " + " ".join(
        f"WHEN id_{t} IS NOT NULL THEN CONCAT('{t}:', id_{t})" for t in identity.priority if t in ID_TYPES
    ) + " END"
    s5 = f"""
CREATE TEMPORARY VIEW zt_decoded AS
SELECT payload, topic, part, off, kts, reason,
  j_event_id AS event_id, j_event_type AS event_type, ts_ms,
  CASE WHEN reason IS NULL THEN {person} END AS person,
  {", ".join(f"id_{t}" for t in ID_TYPES)},
  CASE WHEN {_nonempty("p_campaign")} THEN p_campaign ELSE '(none)' END AS campaign,
  CASE WHEN {_nonempty("p_channel")} THEN p_channel
       ELSE COALESCE(NULLIF(JSON_VALUE(s, '$.source'), ''), '(none)') END AS channel,
  CASE WHEN reason IS NULL AND j_event_type = 'purchase'
       THEN CAST(COALESCE(TRY_CAST(p_price AS DECIMAL(18, 2)), 0) * COALESCE(TRY_CAST(p_qty AS BIGINT), 1) AS DECIMAL(18, 2))
  END AS amount,
  NULLIF(p_item, '') AS item_id,
  CASE WHEN j_event_type = 'exposure' THEN NULLIF(p_exp, '') END AS exp_key,
  CASE WHEN j_event_type = 'exposure' THEN TRY_CAST(p_var AS INT) END AS variation
FROM (SELECT *, {_once(reason)} AS reason FROM zt_d4)"""
    return [s1, s2, s3, s4, s5]
