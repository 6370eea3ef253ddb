"""The job's decode (pipelines/decode.py: zhongtai's JVM parse + SQL) on hand-made records, against the oracle.

Every column of ``zt_decoded`` for valid records, the reason for rejected ones. Three lists: edge cases
of the envelope (:data:`CASES`), the strictness of the JSON reading (:data:`STRICTNESS`: each lenient
parse pinned, docs/semantics.md "What JSON is") and the issue-12 cases of the oracle's tests
(``tests/unit/test_oracle.py::ISSUE12_CASES``), each of which the session-5 SQL decode got wrong.
"""

from __future__ import annotations

import pytest

from config.settings import load_settings

KTS = 1_764_000_000_000  # record timestamp of every case (2025-11-24T16:00Z)
TS = KTS - 1_000

CASES = [
    f'{{"event_id":"a1","event_type":"page_view","ts":{TS},"ids":{{"user_id":"u1"}},"source":"web"}}',
    # a field named twice: the last one wins, as in the oracle
    f'{{"event_id":"x","event_id":"a2","event_type":"page_view","ts":{TS},"ids":{{"device_id":"d1"}}}}',
    # escaped characters in values and an escaped key name at the top level
    f'{{"event\\u005fid":"\\u00e9v\\"3","event_type":"purchase","ts":{TS},"ids":{{"cookie_id":"c1"}},'
    '"props":{"price":"12.345","qty":2,"channel":"sms"}}',
    # event_id of other JSON types
    f'{{"event_id":{{"k":1}},"event_type":"page_view","ts":{TS},"ids":{{"user_id":"u1"}}}}',
    f'{{"event_id":[1],"event_type":"page_view","ts":{TS},"ids":{{"user_id":"u1"}}}}',
    f'{{"event_id":42,"event_type":"page_view","ts":{TS},"ids":{{"user_id":"u1"}}}}',
    f'{{"event_id":null,"event_type":"page_view","ts":{TS},"ids":{{"user_id":"u1"}}}}',
    f'{{"event_id":"","event_type":"page_view","ts":{TS},"ids":{{"user_id":"u1"}}}}',
    f'{{"event_type":"page_view","ts":{TS},"ids":{{"user_id":"u1"}}}}',
    # event_type and ts of other JSON types
    f'{{"event_id":"b1","event_type":{{"a":1}},"ts":{TS},"ids":{{"user_id":"u1"}}}}',
    f'{{"event_id":"b2","event_type":"Page","ts":{TS},"ids":{{"user_id":"u1"}}}}',
    '{"event_id":"b3","event_type":"page_view","ts":[1],"ids":{"user_id":"u1"}}',
    '{"event_id":"b4","event_type":"page_view","ts":null,"ids":{"user_id":"u1"}}',
    f'{{"event_id":"b5","event_type":"page_view","ts":{TS}.5,"ids":{{"user_id":"u1"}}}}',
    '{"event_id":"b6","event_type":"page_view","ts":"2025-11-24T15:59:59.250Z","ids":{"user_id":"u1"}}',
    '{"event_id":"b7","event_type":"page_view","ts":"2025-11-24T17:59:59+02:00","ids":{"user_id":"u1"}}',
    # ids and props: absent, wrong types, names that contain another field's needle
    f'{{"event_id":"c1","event_type":"page_view","ts":{TS}}}',
    f'{{"event_id":"c2","event_type":"page_view","ts":{TS},"ids":["u1"]}}',
    f'{{"event_id":"c3","event_type":"page_view","ts":{TS},"ids":{{"user_idx":"u1","user":"u2"}}}}',
    f'{{"event_id":"c4","event_type":"page_view","ts":{TS},"ids":{{"device":"x","device_id":"d9"}}}}',
    f'{{"event_id":"c5","event_type":"purchase","ts":{TS},"ids":{{"user_id":"u1"}},"props":{{"price":{{}}}}}}',
    f'{{"event_id":"c6","event_type":"purchase","ts":{TS},"ids":{{"user_id":"u1"}},"props":{{"qty":"1.5"}}}}',
    f'{{"event_id":"c7","event_type":"page_view","ts":{TS},"ids":{{"user_id":"u1"}},"props":{{"campaign":"no",'
    '"campaign_id":"cmp","channelx":"no"},"source":"app"}',
    f'{{"event_id":"c8","event_type":"page_view","ts":{TS},"ids":{{"user_id":"u1"}},"source":""}}',
    '[1,2]',
    '{"event_id":"d1",',
]


T0 = 1_795_132_800_000
_E = f'"event_id":"s1","event_type":"page_view","ts":{T0},"ids":{{"device_id":"d1"}}'

#: (record, the reason or "ok"): how strictly JSON is read. Each was checked by hand against RFC 8259.
STRICTNESS = [
    ("{" + _E + "}", "ok"),  # negative control
    (" \t\r\n{" + _E + "} \n", "ok"),  # JSON white space around the value
    ("{" + _E + "}garbage", "malformed_json"),  # trailing bytes (accepted by IS JSON before)
    ("{" + _E + "}{" + _E + "}", "malformed_json"),  # two objects in one record
    ("{" + _E + "}\x00", "malformed_json"),  # a NUL after the object
    ("{" + _E + ',"x":1,}', "malformed_json"),  # trailing comma in an object
    ("{" + _E + ',"x":[1,]}', "malformed_json"),  # trailing comma in an array
    ("{" + _E + ',"x":[,1]}', "malformed_json"),
    ("{" + _E + ",}", "malformed_json"),
    ("{" + _E + ' /* c */}', "malformed_json"),  # comments
    ("{" + _E + "} // c", "malformed_json"),
    ("{" + _E + ',"x":NaN}', "malformed_json"),
    ("{" + _E + ',"x":Infinity}', "malformed_json"),
    ("{" + _E + ',"x":-Infinity}', "malformed_json"),
    ("{" + _E + ',"x":01}', "malformed_json"),  # leading zero
    ("{" + _E + ',"x":-01}', "malformed_json"),
    ("{" + _E + ',"x":+1}', "malformed_json"),
    ("{" + _E + ',"x":.5}', "malformed_json"),
    ("{" + _E + ',"x":1.}', "malformed_json"),
    ("{" + _E + ',"x":1e}', "malformed_json"),
    ("{" + _E + ',"x":0x10}', "malformed_json"),
    ("{" + _E + ',"x":-0}', "ok"),
    ("{" + _E + ',"x":1E+2}', "ok"),
    ("{" + _E + ',"x":"a\tb"}', "malformed_json"),  # a raw control character in a string
    ("{" + _E + ',"x":"a\nb"}', "malformed_json"),
    ("{" + _E + ',"x":"a\x1fb"}', "malformed_json"),
    ("{" + _E + ',"x":"a\x7fb"}', "ok"),  # DEL is not a control character for JSON
    ("{" + _E + ',"x":"\\t\\n\\u001f\\/"}', "ok"),  # escaped ones are fine
    ("{" + _E + ',"x":"\\x41"}', "malformed_json"),  # unknown escape
    ("{" + _E + ',"x":"\\u12"}', "malformed_json"),
    ("{" + _E + ',"x":"\\ud800"}', "malformed_json"),  # lone surrogates, in a field nobody reads
    ("{" + _E + ',"x":"\\udfff\\ud800"}', "malformed_json"),
    ("{" + _E + ',"x":"\\ud800\\u0041"}', "malformed_json"),
    ("{" + _E + ',"x":"\\uD83D\\uDE00"}', "ok"),  # a pair
    ("{" + _E + ",'x':1}", "malformed_json"),  # single quotes
    ("{" + _E + ",x:1}", "malformed_json"),  # bare key
    ("{" + _E + ',"x":True}', "malformed_json"),
    ("{" + _E + ',"x":nul}', "malformed_json"),
    ("{" + _E + ',"x":undefined}', "malformed_json"),
    ("\ufeff{" + _E + "}", "malformed_json"),  # BOM
    ("{" + _E + ',"x":1 2}', "malformed_json"),
    ("{" + _E + ',"x":{"a":1 "b":2}}', "malformed_json"),
    ("{" + _E + ',"x":{"a"}}', "malformed_json"),
    ("{" + _E + ',"x":[1 2]}', "malformed_json"),
    ("{" + _E + ',"x":"unterminated}', "malformed_json"),
    ("{" + _E, "malformed_json"),
    ("{" + _E + "}}", "malformed_json"),
    ("{" + _E + ',"x":[[[]]]}', "ok"),
    # duplicate keys: the last wins, everywhere (top level, ids, props)
    ('{"event_id":"x",' + _E + "}", "ok"),
    ('{' + _E + ',"ids":{"user_id":"u1","user_id":"u2"}}', "ok"),
    ('{' + _E + ',"props":{"price":"x","price":"1.5","a":{"b":1,"b":2}},"event_type":"purchase"}', "ok"),
    ('{' + _E + ',"props":{"c":1,"b":2,"c":3}}', "ok"),  # props text keeps c first, with 3
    ('{' + _E + ',"event_type":"Page"}', "wrong_type:event_type"),
    ("[" + "{" + _E + "}" + "]", "malformed_json"),
    ("", "malformed_json"),
    ("   ", "malformed_json"),
    ("null", "malformed_json"),
    ('"{}"', "malformed_json"),
]


def _records() -> list[tuple[bytes | None, bytes | None, int]]:
    from tests.unit.test_oracle import ISSUE12_CASES

    return ([(c.encode(), None, KTS) for c in CASES]
            + [(c.encode("utf-8", "surrogatepass"), b"s%d" % i, T0) for i, (c, _) in enumerate(STRICTNESS)]
            + [(v, b"k%d" % i, T0) for i, (v, _) in enumerate(ISSUE12_CASES)])


def test_strictness_cases_say_what_they_expect() -> None:
    """The expected reasons above are the oracle's (so the SQL test below checks the job against them)."""
    from zhongtai.devtools.generator.oracle import _Pseudonyms, decode

    s = load_settings()
    pseudo = _Pseudonyms(s.pii, s.identity)
    got = []
    for c, _ in STRICTNESS:
        d = decode(c.encode("utf-8", "surrogatepass"), T0, s.job, pseudo)
        got.append(d if isinstance(d, str) else "ok")
    assert got == [k for _, k in STRICTNESS]


def test_props_text_keeps_first_positions_and_last_values() -> None:
    from zhongtai.devtools.generator.oracle import _Pseudonyms, decode_full

    s = load_settings()
    d = decode_full(('{' + _E + ',"props":{"c":1,"b":"\\u00e9\\n","c":1.50e1,"d":[true,null]}}').encode(), T0, s.job,
                    _Pseudonyms(s.pii, s.identity))
    assert not isinstance(d, str)
    assert d.props == '{"c":1.50e1,"b":"é\\n","d":[true,null]}'


@pytest.mark.flink
def test_sql_decode_agrees_with_the_oracle_on_hand_made_records() -> None:
    from tests.decode_helpers import mismatches, oracle_decode, sql_decode
    from tests.unit.test_oracle import ISSUE12_CASES
    from zhongtai.devtools.generator.oracle import _Pseudonyms

    s = load_settings()
    records = _records()
    pseudo = _Pseudonyms(s.pii, s.identity)
    want = [oracle_decode(v, k, ts, s, pseudo) for v, k, ts in records]
    got = sql_decode(records, s)
    assert mismatches(records, got, want) == []
    # the expectations of the two lists hold (and so the comparison is not vacuous)
    kinds = [r[0] or "ok" for r in got]
    n = len(CASES)
    assert kinds[n:n + len(STRICTNESS)] == [k for _, k in STRICTNESS]
    assert kinds[n + len(STRICTNESS):] == [k for _, k in ISSUE12_CASES]
