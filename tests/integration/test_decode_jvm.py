"""The JVM decode (``zt_decode_event`` + the SQL of pipelines/decode.py) against its Python reference.

* the generator's stream (every fault class, compound faults, boundary cases, identity noise) and a
  seeded fuzz of hostile values (lengths to 1 MiB, repeated characters, every JSON type in every field,
  invalid escapes, huge numbers, deep nesting): equal to ``oracle.decode_full`` column by column, no
  exception, and the largest per-record time of both recorded (not asserted);
* the plan: one parse per record even with every consumer of the foundation attached (the ROW-valued
  scalar call behind the barrier; a LATERAL TABLE call was planned nine times);
* negative controls: the readings the session-5 SQL decode relied on (Flink's ``IS JSON``, a
  back-referencing blocklist regex on an uncapped value) really fail on these inputs;
* through Kafka (stack): a dead letter keeps its record key, a tombstone included.
"""

from __future__ import annotations

import json
import random
import re
import time
import uuid

import pytest

from config.settings import load_settings
from pipelines.decode import ID_TYPES, decode_config
from tests.decode_helpers import jvm_table_env, mismatches, oracle_decode, sql_decode

pytestmark = pytest.mark.flink

T0 = 1_795_132_800_000  # record timestamp of the fuzz records (2026-11-20T00:00Z)
MIB = 1 << 20


def _oracle_rows(records, settings):
    from zhongtai.devtools.generator.oracle import _Pseudonyms

    pseudo = _Pseudonyms(settings.pii, settings.identity)
    return [oracle_decode(v, k, ts, settings, pseudo) for v, k, ts in records]


def test_generator_stream_agrees_with_the_oracle() -> None:
    from zhongtai.devtools.generator import GeneratorConfig, fault_rates, generate
    from zhongtai.devtools.generator.model import IDENTITY_NOISE

    s = load_settings()
    stress = GeneratorConfig(seed=11, persons=200, events=4_000, faults=fault_rates(0.3), edge_rate=0.05,
                             compound_share=1.0)
    noisy = GeneratorConfig(seed=12, persons=200, events=3_000, edge_rate=0.05, **IDENTITY_NOISE)
    records = [(r.value, r.key, r.timestamp_ms) for cfg in (stress, noisy) for r in generate(cfg, s.job)]
    want = _oracle_rows(records, s)
    got = sql_decode(records, s)
    assert mismatches(records, got, want) == []
    kinds = {g[0] for g in got}
    assert None in kinds and len(kinds) >= 17  # valid events and every reason the generator makes


# --- fuzz ---------------------------------------------------------------------------------------------

_CHARS = ["a", "Z", "0", "9", "-", ":", ".", " ", "\t", "\n", "\r", "\x0b", "\x1f", "\x7f", "\u0085", "\u00a0",
          "\u2028", "\u3000", "１", "Ａ", "é", "İ", "Σ", "ß", "设", "😀", '"', "\\", "/", "\ufeff", "\ufdfa", "ﬁ"]
_LENGTHS = [0, 1, 2, 3, 4, 5, 11, 15, 16, 17, 63, 64, 65, 127, 128, 129, 255, 256, 257, 1000, 20_000]
_NUMBERS = ["0", "-0", "1", "-1", "12", "1.5", "12.345", "12.355", "-12.345", "0.004", "0.005", "-0.005", "1e3",
            "1E+2", "1.0", "2.0", "1e-400", "1e308", "1.7976931348623157e308", "1e999999999999",
            "1e-999999999999", "9999999999999999", "10000000000000000", "9999999999999999.99",
            "9999999999999999.995", "99999999999999999999", "123456789012345", "1234567890123456",
            "-1234567890123456", "2147483647", "2147483648", "-2147483648", "-2147483649", "00", "0.1e1"]
_STRING_NUMBERS = ["12.50", " 1", "1 ", "+1", "+1.5e3", ".5", "5.", "-", "", "0x10", "NaN", "Infinity", "1e",
                   "١٢", "１２", "1,5", "1_000", "1e999999999999", "-" + "9" * 20, "9" * 5000, "007", "+0"]
_BAD_ESCAPES = ['"\\ud800"', '"a\\udc00b"', '"\\ud83d\\u0041"', '"\\ud83d"', '"\\x41"', '"\\u12"', '"\\uZZZZ"',
                '"\\ud83d\\ude00"', '"\\u0000"', '"\\u001f\\/"', '"\\U0041"', '"\\\'"']
_FIELDS = ["event_id", "event_type", "ts", "ids", "props", "source", "note"]
_ID_FIELDS = [*ID_TYPES, "imei"]
_PROP_FIELDS = ["price", "qty", "campaign_id", "channel", "item_id", "experiment_id", "variation_id", "granted"]


def _string(rnd: random.Random) -> str:
    n = rnd.choice(_LENGTHS) if rnd.random() > 0.004 else rnd.choice([100_000, MIB])
    how = rnd.random()
    if how < 0.5 or n > 20_000:
        return rnd.choice(_CHARS) * n
    if how < 0.8:
        return "".join(rnd.choice(_CHARS) for _ in range(min(n, 3000)))
    base = rnd.choice(["138-0013-8000", "１３８００１３８０００", " Abc@Example.COM ", "ＡＢＣ@ｅｘ.ｃｏｍ", "u1", "null",
                       "N/A", "0000", "a-a-a-a", "d:d:d", "page_view", "purchase", "exposure",
                       "2026-11-20T00:00:00Z", "2026-11-20T00:00:00.123+08:00", "2026-02-29T00:00:00Z",
                       "2028-02-29T23:59:59.999-23:59", "0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59Z",
                       str(T0), str(T0 - 10 * 3_600_000), "2026-11-20T24:00:00Z"])
    return base


def _nested(rnd: random.Random, depth: int) -> str:
    kinds = [rnd.choice("[{") for _ in range(depth)]
    opens = "".join("[" if k == "[" else '{"k":' for k in kinds)
    return opens + "1" + "".join("]" if k == "[" else "}" for k in reversed(kinds))


def _value(rnd: random.Random) -> str:
    """Raw JSON text of a hostile value (sometimes not valid JSON at all)."""
    how = rnd.random()
    if how < 0.35:
        return json.dumps(_string(rnd), ensure_ascii=rnd.random() < 0.3)
    if how < 0.5:
        return rnd.choice(_NUMBERS)
    if how < 0.58:
        return json.dumps(rnd.choice(_STRING_NUMBERS))
    if how < 0.66:
        return rnd.choice(["true", "false", "null", "{}", "[]", '{"a":1}', "[1,2]", '[""]', '{"":""}'])
    if how < 0.74:
        return _nested(rnd, rnd.choice([1, 2, 10, 61, 62, 63, 64, 65, 2000]))
    if how < 0.82:
        return rnd.choice(_BAD_ESCAPES)
    if how < 0.9:
        return rnd.choice(["1" * rnd.choice([17, 40, 5000]), "-" + "1" * 30, "0." + "0" * 3000 + "1",
                           "1" + "0" * 4000 + ".5", "1e" + "9" * 30])
    return rnd.choice(["NaN", "Infinity", "01", "+1", ".5", "1.", "'x'", "nul", "[1,]", '{"a":1,}', "tru", '"\x01"'])


def _event(rnd: random.Random) -> tuple[dict[str, str | None], dict[str, str], dict[str, str]]:
    """A plausible event as raw JSON texts: top-level fields (``ids``/``props`` None: render the dicts)."""
    ts = T0 - rnd.randrange(0, 3_000_000)
    ids = {"user_id": json.dumps(f"u{rnd.randrange(50)}"), "phone": json.dumps(f"138-0013-{rnd.randrange(100):04d}"),
           "device_id": json.dumps(f"d-{rnd.randrange(10**6)}")}
    props = {"price": rnd.choice(["12.5", '"3.99"', "100"]), "qty": rnd.choice(["1", '"2"']),
             "campaign_id": '"c1"', "channel": '"sms"', "item_id": '"i9"', "experiment_id": '"x1"',
             "variation_id": rnd.choice(["0", "1", '"2"'])}
    top: dict[str, str | None] = {
        "event_id": json.dumps(f"e{rnd.randrange(10**9)}"),
        "event_type": json.dumps(rnd.choice(["page_view", "purchase", "exposure", "consent"])),
        "ts": str(ts), "source": '"web"', "ids": None, "props": None,
    }
    return top, ids, props


def _render_obj(fields: dict[str, str]) -> str:
    return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in fields.items()) + "}"


def fuzz_records(seed: int, n: int) -> list[tuple[bytes | None, bytes | None, int]]:
    """``n`` seeded hostile records: a plausible event with one to three fields replaced by hostile values,
    sometimes mutated as a whole (trailing bytes, a second object, cut short, invalid UTF-8, duplicates)."""
    rnd = random.Random(seed)
    out: list[tuple[bytes | None, bytes | None, int]] = []
    for i in range(n):
        top, ids, props = _event(rnd)
        for _ in range(rnd.choice([1, 1, 1, 2, 3])):
            where = rnd.random()
            if where < 0.35:
                top[rnd.choice(_FIELDS)] = _value(rnd)
            elif where < 0.65:
                ids[rnd.choice(_ID_FIELDS)] = _value(rnd)
            else:
                props[rnd.choice(_PROP_FIELDS)] = _value(rnd)
        if rnd.random() < 0.3:  # fewer identifiers, so that a hostile one is often the anchor
            for t in rnd.sample(["user_id", "phone"], rnd.randrange(1, 3)):
                ids.pop(t, None)
        top["ids"] = top["ids"] or _render_obj(ids)
        top["props"] = top["props"] or _render_obj(props)
        text = _render_obj({k: v for k, v in top.items() if v is not None})
        whole = rnd.random()
        if whole < 0.03:
            text += rnd.choice(["garbage", " {}", "\n", "}", ",", "\x00", " \t"])
        elif whole < 0.05:
            text = text[: rnd.randrange(len(text))]
        elif whole < 0.07:
            text = text[:-1] + ',"event_id":' + _value(rnd) + "}"  # a duplicate key
        raw: bytes | None = text.encode("utf-8")
        if rnd.random() < 0.02:
            at = rnd.randrange(len(raw) + 1)
            bad = rnd.choice([b"\xff", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\xe4\xb8"])
            raw = raw[:at] + bad + raw[at:]
        if rnd.random() < 0.005:
            raw = None  # a tombstone
        out.append((raw, b"k%d" % i if rnd.random() < 0.9 else None, T0))
    return out


def test_fuzz_agrees_with_the_oracle_in_bounded_time(record_property) -> None:
    from pyflink.java_gateway import get_gateway

    from zhongtai.devtools.generator.oracle import _Pseudonyms

    s = load_settings(overrides={"job": {"max_event_bytes": 4 * MIB}})
    records = fuzz_records(seed=20261207, n=3_000)
    pseudo = _Pseudonyms(s.pii, s.identity)
    want, slowest_py = [], 0.0
    for v, k, ts in records:
        t0 = time.perf_counter()
        want.append(oracle_decode(v, k, ts, s, pseudo))
        slowest_py = max(slowest_py, time.perf_counter() - t0)
    t_env = jvm_table_env(s)
    t0 = time.monotonic()
    got = sql_decode(records, s, t_env)
    sql_s = time.monotonic() - t0
    assert mismatches(records, got, want) == []
    # the JVM function alone, record by record (parse, checks, identifiers)
    decoder = get_gateway().jvm.io.zhongtai.flink.decode.DecodeEvent
    config = decode_config(s.job, s.identity, s.pii)
    for v, _, ts in records[:50]:  # warm-up
        decoder.decodeNanos(None if v is None else bytearray(v), ts, config)
    nanos = [decoder.decodeNanos(None if v is None else bytearray(v), ts, config) for v, _, ts in records]
    worst = max(range(len(records)), key=lambda i: nanos[i])
    kinds = {g[0] for g in got}
    sizes = [len(v) for v, _, _ in records if v is not None]
    report = {"records": len(records), "max_bytes": max(sizes), "reasons": len(kinds),
              "valid": sum(g[0] is None for g in got), "sql_job_s": round(sql_s, 1),
              "jvm_max_ms": round(nanos[worst] / 1e6, 2), "jvm_max_record_bytes": len(records[worst][0] or b""),
              "oracle_max_ms": round(slowest_py * 1e3, 2)}
    print("fuzz:", report)
    for k, v in report.items():
        record_property(k, v)
    # the fuzz reaches valid events, every check, and values far over every limit
    assert report["valid"] > 100 and len(kinds) >= 15 and max(sizes) > MIB


# --- the plan -------------------------------------------------------------------------------------------

def _foundation_plan(reuse: bool) -> str:
    from pipelines.events import dlq_insert, job_options, view_statements

    s = load_settings()
    t_env = jvm_table_env(s)
    for k, v in job_options(s).items():
        t_env.get_config().set(k, v)
    t_env.get_config().set("table.optimizer.reuse-optimize-block-with-digest-enabled", str(reuse).lower())
    t_env.execute_sql("""
CREATE TEMPORARY TABLE zt_source (payload BYTES, rkey BYTES, topic STRING, part INT, off BIGINT,
  kts TIMESTAMP_LTZ(3)) WITH ('connector' = 'datagen', 'number-of-rows' = '1')""")
    for stmt in view_statements("zt_source", s):
        t_env.execute_sql(stmt)
    t_env.execute_sql("""CREATE TEMPORARY TABLE zt_dlq (payload BYTES, rkey BYTES, headers MAP<STRING, BYTES>,
  ts TIMESTAMP_LTZ(3)) WITH ('connector' = 'blackhole')""")
    stmt_set = t_env.create_statement_set()
    for i, q in enumerate(["SELECT n_events AS n FROM zt_counters", "SELECT n_events AS n FROM zt_anchor_minutes",
                           "SELECT ts_ms AS n FROM zt_combos", "SELECT n FROM zt_totals"]):
        t_env.execute_sql(f"CREATE TEMPORARY TABLE zt_hole_{i} (n BIGINT) WITH ('connector' = 'blackhole')")
        stmt_set.add_insert_sql(f"INSERT INTO zt_hole_{i} {q}")
    stmt_set.add_insert_sql(dlq_insert("zt_dlq"))
    return stmt_set.explain()


def test_one_parse_per_record_with_every_consumer_attached() -> None:
    optimized = _foundation_plan(reuse=True).split("== Optimized Execution Plan ==")[1]
    assert optimized.count("zt_decode_event(") == 1  # one call, in one Calc, for every consumer
    assert optimized.count("Deduplicate(") == 2  # the event_id dedup and the (scope, minute, person) one
    assert "JSON_VALUE" not in optimized and "JSON_QUERY" not in optimized and "IS JSON" not in optimized
    # negative control: without the planner's block reuse each consumer gets its own decode
    naive = _foundation_plan(reuse=False).split("== Optimized Execution Plan ==")[1]
    assert naive.count("zt_decode_event(") > 1


# --- negative controls: what the session-5 decode did on these inputs -------------------------------------

def test_flink_is_json_accepts_what_the_contract_rejects() -> None:
    """Session 5 decided 'is a JSON object' with Flink's IS JSON OBJECT: these pass it, the decode rejects them."""
    t_env = jvm_table_env()
    cases = ['{"a":1}garbage', '{"a":1}{"b":2}']
    rows = ", ".join(f"('{c}')" for c in cases)
    with t_env.execute_sql(f"SELECT s IS JSON OBJECT FROM (VALUES {rows}) AS t(s)").collect() as it:
        lenient = [r[0] for r in it]
    assert lenient == [True, True]


def test_uncapped_back_reference_regex_overflows_the_stack() -> None:
    """The blocklist's back-referencing pattern on a 20 kB value of one character: java.util.regex recurses
    per repetition and throws StackOverflowError (the job died). The decode caps identifiers first."""
    t_env = jvm_table_env()
    pattern = r"(?s)^(?:(.)(?:\1|[\-:.]){3,})\z"
    with pytest.raises(Exception, match="StackOverflowError"):
        with t_env.execute_sql(f"SELECT REGEXP(REPEAT('a', 20000), '{pattern}')").collect() as it:
            list(it)
    with t_env.execute_sql(f"SELECT REGEXP(REPEAT('a', 256), '{pattern}')").collect() as it:
        assert [r[0] for r in it] == [True]  # capped: fine


# --- through Kafka ---------------------------------------------------------------------------------------

@pytest.mark.stack
def test_dead_letters_keep_their_key_tombstones_included() -> None:
    from confluent_kafka import Producer

    from connectors.jvm import zhongtai_jar
    from connectors.kafka_tables import dlq_sink_ddl, source_ddl
    from pipelines.decode import decode_statements
    from pipelines.events import dlq_insert
    from tests.helpers import read_topics
    from zhongtai.devtools.stack import kafka_connector_jars

    s = load_settings()
    tag = uuid.uuid4().hex[:10]
    topic, dlq = f"zt.t{tag}.events", f"zt.t{tag}.dlq"
    good = json.dumps({"event_id": "e1", "event_type": "page_view", "ts": T0, "ids": {"device_id": "d1"}}).encode()
    sent = [(b"k-good", good), (b"k-bad", b'{"event_id":'), (b"k-tomb", None), (None, b"[]"),
            (b"k-trail", good + b"garbage")]
    p = Producer({"bootstrap.servers": s.kafka.bootstrap})
    for key, value in sent:
        p.produce(topic, value=value, key=key, timestamp=T0)
    assert p.flush(30) == 0
    t_env = jvm_table_env(s)
    t_env.get_config().set("pipeline.jars", ";".join(j.as_uri() for j in [*kafka_connector_jars(s), zhongtai_jar(s)]))
    t_env.execute_sql(source_ddl("zt_source", s.kafka, topic_pattern=topic.replace(".", "\\."), group=f"g{tag}",
                                 bounded=True, key_column=True))
    t_env.execute_sql(dlq_sink_ddl("zt_dlq", s.kafka, topic=dlq, exactly_once=False, key_column=True))
    for stmt in decode_statements("zt_source", s.job, s.pii, s.identity):
        t_env.execute_sql(stmt)
    t_env.execute_sql(dlq_insert("zt_dlq")).wait()
    got = sorted(((m.key(), m.value(), dict(m.headers())["zt.reason"]) for m in read_topics(s, [dlq])),
                 key=repr)
    assert got == sorted([(b"k-bad", b'{"event_id":', b"malformed_json"), (b"k-tomb", None, b"malformed_json"),
                          (None, b"[]", b"malformed_json"), (b"k-trail", good + b"garbage", b"malformed_json")],
                         key=repr)


# --- a declared schema (config/schema.yaml) ---------------------------------------------------------------

SCHEMA = """
common_props:
  store_id: {type: string, required: true}
  tier: {type: integer}
events:
  purchase:
    props:
      order_id: {type: string, required: true}
      discount: {type: decimal}
      paid_at: {type: timestamp}
      gift: {type: boolean}
      tags: {type: list}
  page_view:
    props:
      section: {type: string}
  consent: {}
  exposure: {}
undeclared_events: reject
"""

_GOOD = {"store_id": ['"s1"', "12", "true"], "tier": ["3", '"-4"', "0"], "order_id": ['"o-1"', "7"],
         "discount": ["1.5", '"0.25"', "1e3"], "paid_at": ["1795132800000", '"2026-11-20T00:00:00Z"'],
         "gift": ["true", "false"], "tags": ['["a","b"]', "[]"], "section": ['"home"']}


def schema_records(seed: int, n: int) -> list[tuple[bytes | None, bytes | None, int]]:
    """Plausible events of the declared (and one undeclared) types whose declared props are good, absent,
    null, or hostile values."""
    rnd = random.Random(seed)
    out: list[tuple[bytes | None, bytes | None, int]] = []
    for i in range(n):
        top, ids, props = _event(rnd)
        top["event_type"] = json.dumps(rnd.choice(["purchase", "purchase", "page_view", "consent", "exposure",
                                                   "add_to_cart"]))
        for name, good in _GOOD.items():
            how = rnd.random()
            if how < 0.6:
                props[name] = rnd.choice(good)
            elif how < 0.7:
                props[name] = "null"
            elif how < 0.8:
                props[name] = rnd.choice(['""', "[1]", "{}", '[""]', "1.5", '"x"', "9" * 17, "-1e16", '"1e2"'])
            elif how < 0.9:
                props[name] = _value(rnd)
        top["ids"], top["props"] = _render_obj(ids), _render_obj(props)
        out.append((_render_obj({k: v for k, v in top.items() if v is not None}).encode(), b"k%d" % i, T0))
    return out


def test_declared_schema_agrees_with_the_oracle() -> None:
    from config.schema import parse_schema
    from zhongtai.devtools.generator.oracle import _Pseudonyms

    schema = parse_schema(SCHEMA, "test-schema.yaml")
    s = load_settings(overrides={"event_schema": schema.model_dump()})
    records = schema_records(seed=20261208, n=2_000)
    pseudo = _Pseudonyms(s.pii, s.identity, s.event_schema)
    want = [oracle_decode(v, k, ts, s, pseudo) for v, k, ts in records]
    got = sql_decode(records, s)
    assert mismatches(records, got, want) == []
    reasons = {g[0] for g in got}
    # every check of the schema is reached, and valid events of declared types come through
    assert set(schema.reasons()) <= reasons, sorted(set(schema.reasons()) - reasons)
    assert sum(g[0] is None for g in got) > 100
    # negative control: without the schema the same records never fail on a declared prop
    plain = load_settings()
    without = sql_decode(records, plain)
    assert not {g[0] for g in without} & set(schema.reasons())
    assert sum(g[0] is None for g in without) > sum(g[0] is None for g in got)


IDS_SCHEMA = """
identifiers:
  member_card: {normalise: none}
  alipay_uid: {normalise: lower, hashed: true}
"""


def test_custom_identifier_types_agree_with_the_oracle() -> None:
    """Custom identifier types (one stored as sent, one lower-cased and keyed-hashed), ranked between the
    built-in ones: stored forms, junk (blocked values also as hashes), anchors and hostile values."""
    from config.schema import parse_schema
    from zhongtai.devtools.generator.oracle import _Pseudonyms

    schema = parse_schema(IDS_SCHEMA, "ids.yaml")
    priority = ["user_id", "member_card", "unionid", "phone", "email", "alipay_uid", "openid", "device_id",
                "cookie_id"]
    s = load_settings(overrides={"event_schema": schema.model_dump(), "identity": {
        "priority": priority, "max_per_person": {"member_card": 1, "alipay_uid": 2}}})
    rnd = random.Random(20261209)
    values = ['"MC-001"', '"mc-001"', '" Ab@Pay "', '"AB@PAY"', '"test"', '" NULL "', '"0000"', "12", "true",
              '""', "null", "{}", '"１２３"', '"\\u00e9X"',
              '"a0\\u03a3\\u000bfi"']  # a sigma Java's toLowerCase took for final, Python's not
    records = []
    for i in range(1_500):
        top, ids, props = _event(rnd)
        for t in ("member_card", "alipay_uid"):
            if rnd.random() < 0.7:
                ids[t] = rnd.choice(values) if rnd.random() < 0.6 else _value(rnd)
        for t in rnd.sample(["user_id", "phone", "device_id"], rnd.randrange(0, 4)):
            ids.pop(t, None)
        top["ids"], top["props"] = _render_obj(ids), _render_obj(props)
        records.append((_render_obj({k: v for k, v in top.items() if v is not None}).encode(), b"k%d" % i, T0))
    pseudo = _Pseudonyms(s.pii, s.identity, s.event_schema)
    want = [oracle_decode(v, k, ts, s, pseudo) for v, k, ts in records]
    got = sql_decode(records, s)
    assert mismatches(records, got, want) == []
    anchors = {g[4].split(":", 1)[0] for g in got if g[0] is None}
    assert {"member_card", "alipay_uid"} <= anchors, anchors  # custom types anchor persons
    # the stored forms: member_card as sent, alipay_uid hashed (64 hex) whatever its case and blanks
    cols = [f"id_{t}" for t in s.event_schema.id_types()]
    mc, ali = 5 + cols.index("id_member_card"), 5 + cols.index("id_alipay_uid")
    assert {g[mc] for g in got if g[0] is None} >= {"MC-001", "mc-001"}
    hashed = {g[ali] for g in got if g[0] is None and g[ali] is not None}
    assert hashed and all(re.fullmatch("[0-9a-f]{64}", h) for h in hashed)
    assert len({pseudo("alipay_uid", " Ab@Pay "), pseudo("alipay_uid", "AB@PAY")}) == 1
    # negative control: junk values are dropped as such ("test" hashed is in the blocked hashes)
    assert pseudo.rules.is_junk("alipay_uid", pseudo("alipay_uid", "test"))
    assert not pseudo.rules.is_junk("alipay_uid", pseudo("alipay_uid", "ab@pay"))
