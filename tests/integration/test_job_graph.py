"""The composition root (``pipelines.job.build_job``) against the catalog (``pipelines.catalog``).

For the default job and the job with rules (and attribution, experiments), the real
job's graph is built over its real connector tables (the runner's DDL, nothing executed): every shared
view the catalog gives a running stage exists with exactly the catalog's columns, in order, and every
other ``zt_*`` view is private to its stage. Negative controls: a stage that reads a view no earlier stage
produced, and a stage that registers a shared view the catalog gives another, are refused.
"""

from __future__ import annotations

import pytest

from pipelines.catalog import CATALOG, CatalogError
from tests.helpers import fresh_names, make_settings

pytestmark = [pytest.mark.stack, pytest.mark.flink]


def _build(**run: object):
    from zhongtai.jobs.runner import RunOptions, connector_jars, make_envs, register_events_job

    settings = make_settings()
    n = fresh_names()
    opts = RunOptions(bounded=True, group=n.group, topic_pattern=n.topic_pattern, dlq_topic=n.dlq,
                      redis_prefix=n.prefix, resume=False, job_name=n.job, actions_prefix=f"zt.t{n.tag}.actions.",
                      **run)
    env, t_env = make_envs(settings, opts, connector_jars(settings))
    register_events_job(t_env, settings, opts)
    return t_env


@pytest.mark.parametrize("run", [{}, {"rules": True}], ids=["default", "rules"])
def test_every_shared_view_has_the_catalog_columns(run: dict) -> None:
    from pipelines.actions import load_ruleset
    from pipelines.job import JobPlan, expected_views

    t_env = _build(**run)
    plan = JobPlan(ruleset=load_ruleset() if run.get("rules") else None, attribution=run.get("attribution", True))
    views = set(t_env.list_temporary_views())
    for name in expected_views(plan):
        assert name in views, f"{name} missing"
        assert tuple(t_env.from_path(name).get_schema().get_field_names()) == CATALOG[name].columns, name


def test_stages_are_checked_against_the_catalog(monkeypatch) -> None:
    from pipelines import job

    # negative control 1: a stage reading something no earlier stage made
    bad = job.Stage("person", ("zt_no_such_view",), lambda b: None)
    monkeypatch.setattr(job, "STAGES", (*job.STAGES[:4], bad))
    with pytest.raises(CatalogError, match="reads \\['zt_no_such_view'\\], which no earlier stage produced"):
        _build()
    # negative control 2: a stage registering a view the catalog gives another stage
    def steal(b):
        b.t_env.execute_sql("CREATE TEMPORARY VIEW zt_tag_changes AS SELECT 1 AS x")

    monkeypatch.setattr(job, "STAGES", (*job.STAGES[:4], job.Stage("people2", (), steal)))
    with pytest.raises(CatalogError, match="registered view 'zt_tag_changes', which the catalog gives to person"):
        _build()
