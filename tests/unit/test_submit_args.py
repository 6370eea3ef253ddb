"""``zhongtai submit`` hands the job to ``job_main`` on the cluster with every option ``zhongtai run`` has:
the arguments it writes parse back, in job_main, to the same run options (rules, attribution,
experiments, topics...). A cluster run used to lose the rules, attribution and experiment switches."""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path

from zhongtai.jobs.job_main import build_parser, run_options
from zhongtai.jobs.runner import RunOptions
from zhongtai.jobs.submit import _job_args

# everything a cluster run can carry (the test-only negative control of the kill test aside)
CARRIED = {f.name for f in fields(RunOptions)} - {"actions_control_prefix"}


def _round_trip(opts: RunOptions) -> RunOptions:
    args = _job_args(opts, Path("/tmp/settings.json"), ["file:///x.jar"])
    return run_options(build_parser().parse_args(args))


def test_every_run_option_survives_the_trip_to_the_cluster() -> None:
    opts = RunOptions(bounded=True, group="g1", topic_pattern="t.*", dlq_topic="d", redis_prefix="rp", hbase_prefix="hp",
                      hbase=False, resume=False, job_name="j1", transactional_id_prefix="tx", naive_control=True,
                      naive_prefix="np", identity_topic="it", tag_topic="tt", experiments=False, rules=True,
                      rules_file=str(Path("config/rules.yaml").resolve()), actions_prefix="ap.", control_topic="ct",
                      control_results_topic="crt", attribution=False, delivery_topic="dt")
    back = _round_trip(opts)
    assert {k: v for k, v in asdict(back).items() if k in CARRIED} == {k: v for k, v in asdict(opts).items()
                                                                       if k in CARRIED}
    # the defaults too (rules off, attribution and experiments on)
    plain = RunOptions(job_name="j2")
    assert _round_trip(plain) == plain


def test_a_run_option_job_main_does_not_carry_is_found() -> None:
    # negative control: the comparison sees a difference when an option is dropped on the way
    opts = RunOptions(job_name="j3", rules=True)
    args = [a for a in _job_args(opts, Path("/tmp/s.json"), []) if a != "--rules"]
    assert run_options(build_parser().parse_args(args)).rules is False
