"""Counter scope keys never collide: ``c|x`` + ``web`` and ``c`` + ``x|web`` are two keys (issue 12).

The Python key (``operators.scopes``: oracle, naive sink, dashboard) and the job's SQL key must be the same
string for every pair: the SQL side runs on the mini-cluster over hostile parts."""

from __future__ import annotations

import pytest

from operators.scopes import scope_key, scope_key_sql, split_scope

PAIRS = [("spring", "email"), ("c|x", "web"), ("c", "x|web"), ("a\\", "|b"), ("a\\|", "b"), ("", ""), ("|", "|"),
         ("中文|活动", "微信"), ("\\\\", "\\")]


def test_keys_are_distinct_and_invertible() -> None:
    keys = [scope_key(c, ch) for c, ch in PAIRS]
    assert len(set(keys)) == len(keys)
    assert [split_scope(k) for k in keys] == PAIRS
    assert scope_key("spring", "email") == "spring|email"  # plain keys keep their names
    # negative control: the old key made the two campaigns one counter
    assert f"{'c|x'}|{'web'}" == f"{'c'}|{'x|web'}"
    with pytest.raises(ValueError):
        split_scope("a|b|c")


@pytest.mark.flink
def test_the_sql_key_is_the_python_key() -> None:
    from tests.helpers import fresh_names, make_settings
    from zhongtai.jobs.runner import RunOptions, make_envs

    settings = make_settings()
    env, t_env = make_envs(settings, RunOptions(resume=False, job_name=fresh_names().job), [])
    def lit(s: str) -> str:
        return "'" + s.replace("'", "''") + "'"

    values = ", ".join(f"({lit(c)}, {lit(ch)})" for c, ch in PAIRS)
    table = t_env.sql_query(f"SELECT {scope_key_sql('c', 'ch')} AS k FROM (VALUES {values}) AS t(c, ch)")
    with table.execute().collect() as rows:
        got = [r[0] for r in rows]
    assert sorted(got) == sorted(scope_key(c, ch) for c, ch in PAIRS)
