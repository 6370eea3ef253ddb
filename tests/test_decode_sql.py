"""The SQL decode (pipelines/decode.py) on hand-made edge cases, record by record against the oracle.

The generated streams of tests/test_events_job.py cover the fault mix; these records aim at the parse
shortcuts of session 4: the scalar top-level fields come from one multi-property ``JSON_QUERY`` and the
nested fields are guarded by ``LIKE`` needles (docs/performance.md, "SQL core (session 4)").
"""

from __future__ import annotations

import pytest

from config.settings import load_settings
from pipelines.decode import ID_TYPES, _name_needle

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


def test_name_needles_occur_in_every_field_name_and_have_no_wildcards() -> None:
    fields = (*ID_TYPES, "campaign_id", "channel", "price", "qty", "item_id", "experiment_id", "variation_id")
    for f in fields:
        needle = _name_needle(f)
        assert needle in f'"{f}"'
        assert "_" not in needle and "%" not in needle
        assert len(needle) >= 4
    assert _name_needle("device_id") == '"device'
    assert _name_needle("price") == '"price"'


@pytest.mark.flink
def test_sql_decode_agrees_with_the_oracle_on_edge_cases() -> None:
    from pyflink.table import EnvironmentSettings, TableEnvironment

    from pipelines.decode import decode_statements
    from zhongtai.generator.oracle import ValidEvent, _Pseudonyms, decode

    s = load_settings()
    t_env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
    t_env.get_config().set("table.local-time-zone", "UTC")
    rows = ", ".join("({}, '{}')".format(i, c.replace("'", "''")) for i, c in enumerate(CASES))
    t_env.execute_sql(f"""
CREATE TEMPORARY VIEW src AS
SELECT CAST(p AS BYTES) AS payload, 't' AS topic, 0 AS part, CAST(i AS BIGINT) AS off,
       TO_TIMESTAMP_LTZ({KTS}, 3) AS kts
FROM (VALUES {rows}) AS v(i, p)""")
    for stmt in decode_statements("src", s.job, s.pii, s.identity):
        t_env.execute_sql(stmt)
    got = {}
    with t_env.execute_sql(
        "SELECT off, reason, event_id, event_type, ts_ms, channel, campaign FROM zt_decoded"
    ).collect() as it:
        for r in it:
            got[r[0]] = (r[1], r[2], r[3], r[4], r[5], r[6]) if r[1] is None else (r[1],)
    pseudo = _Pseudonyms(s.pii)
    want = {}
    for i, c in enumerate(CASES):
        d = decode(c.encode(), KTS, s.job, pseudo)
        want[i] = (None, d.event_id, d.event_type, d.ts, d.channel, d.campaign) if isinstance(d, ValidEvent) else (d,)
    assert got == want
