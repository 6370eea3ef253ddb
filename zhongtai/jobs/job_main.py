"""Entry point a Flink cluster runs: ``flink run -py zhongtai/jobs/job_main.py --settings-file F [options]``.

``zhongtai submit`` (``zhongtai.jobs.submit``) builds that command line. Under ``flink run`` the client
starts this script with a Java gateway whose execution environment is the cluster's context
environment, so ``TableEnvironment.create`` here does *not* start a mini-cluster: ``execute()``
submits the job graph to the cluster the CLI points at (``-m host:port``).

The statement set is exactly the one of ``zhongtai run`` (``zhongtai.jobs.runner.register_events_job``)
with the options of ``zhongtai.jobs.runner.flink_options``. Nothing happens at import time.

The FIRST argument must be ``--settings-file`` or ``--config``: the Flink CLI stops parsing its own
options at the first token it does not know, and long options are matched by prefix, so the
script's options must never start with a Flink option's name (``--parallelism`` would be Flink's).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger("zhongtai.jobs.job_main")

#: Printed on stdout once the job is submitted; ``zhongtai.jobs.submit`` parses it.
JOB_ID_MARKER = "zhongtai-job-id:"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="job_main.py", description="zhongtai event job, as run by `flink run -py`"
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--settings-file", help="JSON written by zhongtai.jobs.submit (config.settings_to_json)")
    src.add_argument("--config", help="YAML file merged over config/defaults.yaml (+ ZT__ variables)")
    p.add_argument(
        "--drain", action="store_true", help="bounded: stop at the offsets that are latest at start"
    )
    p.add_argument("--group", default=None, help="Kafka consumer group")
    p.add_argument("--topic-pattern", default=None, help="regular expression of the event topics")
    p.add_argument("--dlq-topic", default=None)
    p.add_argument("--redis-prefix", default=None)
    p.add_argument("--hbase-prefix", default=None, help="HBase table prefix (the tables must exist)")
    p.add_argument("--no-hbase", action="store_true", help="write Redis only")
    p.add_argument("--job-name", default=None)
    p.add_argument("--txn-prefix", default=None, help="transactional-id prefix of the DLQ sink")
    p.add_argument(
        "--naive-control",
        action="store_true",
        help="add the naive per-event HINCRBY sink (negative control of the fault-tolerance test)",
    )
    p.add_argument("--naive-prefix", default=None, help="Redis prefix of the naive control sink")
    p.add_argument("--rules", action="store_true", help="with the strategy engine (as `zhongtai run --rules`)")
    p.add_argument("--rules-file", default=None, help="rule definitions (default config/rules.yaml)")
    p.add_argument("--actions-prefix", default=None, help="action topics are <prefix><channel>")
    p.add_argument("--no-attribution", action="store_true", help="with --rules: no conversion attribution")
    p.add_argument("--no-experiments", action="store_true", help="without the experiment statistics")
    for flag, what in (("--control-topic", "control messages"), ("--control-results-topic", "control results"),
                       ("--delivery-topic", "delivery receipts (attribution)"),
                       ("--identity-topic", "identity changes"), ("--tag-topic", "tag changes")):
        p.add_argument(flag, default=None, help=f"topic of the {what} (default: the configured one)")
    p.add_argument("--fresh", action="store_true", help="do not restore from the newest retained checkpoint")
    p.add_argument("--recover-from", default=None,
                   help="savepoint (or retained checkpoint) path/URL to restore from (zhongtai submit --from-savepoint)")
    p.add_argument(
        "--jars",
        default=None,
        help="';'-separated file:// URLs for pipeline.jars (default: the "
        "Kafka connector jar of the local cache)",
    )
    p.add_argument(
        "--wait", action="store_true", help="block until the job ends (else return once submitted)"
    )
    return p


def _settings(args: argparse.Namespace):
    from config import load_settings
    from config.settings import Settings

    if args.settings_file:
        return Settings.model_validate_json(Path(args.settings_file).read_text(encoding="utf-8"))
    return load_settings(args.config).for_component("job")


def run_options(args: argparse.Namespace):
    from zhongtai.jobs.runner import RunOptions

    kw = {
        "bounded": args.drain,
        "group": args.group,
        "topic_pattern": args.topic_pattern,
        "dlq_topic": args.dlq_topic,
        "redis_prefix": args.redis_prefix,
        "hbase_prefix": args.hbase_prefix,
        "hbase": not args.no_hbase,
        "resume": not args.fresh,
        "transactional_id_prefix": args.txn_prefix,
        "naive_control": args.naive_control,
        "naive_prefix": args.naive_prefix,
        "rules": args.rules,
        "rules_file": args.rules_file,
        "actions_prefix": args.actions_prefix,
        "attribution": not args.no_attribution,
        "experiments": not args.no_experiments,
        "control_topic": args.control_topic,
        "control_results_topic": args.control_results_topic,
        "delivery_topic": args.delivery_topic,
        "identity_topic": args.identity_topic,
        "tag_topic": args.tag_topic,
        "recover_from": args.recover_from,
    }
    if args.job_name:
        kw["job_name"] = args.job_name
    return RunOptions(**kw)


def _split_jars(value: object) -> list[str]:
    if not value:
        return []
    if isinstance(value, list | tuple):
        return [str(v) for v in value if v]
    # the client's value reads like "['file:/a.jar', 'file:/b.jar']" or "file:/a.jar;file:/b.jar"
    parts = str(value).strip().strip("[]").replace(",", ";").split(";")
    return [q for q in (j.strip().strip("'\"").strip() for j in parts) if q]


def _merge_jars(existing: object, ours: Sequence[str]) -> list[str]:
    """``pipeline.jars`` = what the client set (``flink run`` adds the flink-python jar; without it
    the JobManager cannot load the Python operators) + the flink-python jar of this wheel + ours."""
    import pyflink

    out = _split_jars(existing)
    if not any("flink-python" in j for j in out):
        out += [
            p.resolve().as_uri()
            for p in sorted((Path(pyflink.__file__).parent / "opt").glob("flink-python*.jar"))
        ]
    for j in ours:
        if j not in out:
            out.append(j)
    logger.info("pipeline.jars: client had %r; using %s", existing, out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    from pyflink.common import Configuration
    from pyflink.table import EnvironmentSettings

    from zhongtai.jobs.runner import flink_options, latest_checkpoint, register_events_job

    settings = _settings(args)
    opts = run_options(args)
    if args.jars:
        jars = [j for j in args.jars.split(";") if j]
    else:
        from zhongtai.jobs.runner import connector_jars

        jars = [p.resolve().as_uri() for p in connector_jars(settings)]

    conf = Configuration()
    for k, v in flink_options(settings, opts, [], cluster=True).items():
        if k != "pipeline.jars":  # merged below with what `flink run` put there (flink-python)
            conf.set_string(k, v)
    job_name = opts.job_name_for(settings)
    recover = opts.recover_from or (
        latest_checkpoint(settings.checkpoint_url(), job_name) if opts.resume else None
    )
    if recover:
        logger.info("restoring %s from %s", job_name, recover)
        conf.set_string("execution.state-recovery.path", recover)
    # Under `flink run` this attaches to the cluster's context environment: no mini-cluster.
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.table import StreamTableEnvironment

    env = StreamExecutionEnvironment.get_execution_environment(conf)
    # Under `flink run` the context environment keeps the CLI's configuration: apply ours explicitly,
    # or the Python DataStream operators (identity graph, tags) fall back to process mode (~20x slower).
    env.configure(conf)
    env_settings = EnvironmentSettings.new_instance().in_streaming_mode().with_configuration(conf).build()
    t_env = StreamTableEnvironment.create(env, environment_settings=env_settings)
    t_env.get_config().set(
        "pipeline.jars", ";".join(_merge_jars(t_env.get_config().get("pipeline.jars", ""), jars))
    )
    from zhongtai.jobs.runner import execute

    client = execute(env, register_events_job(t_env, settings, opts), job_name)
    job_id = str(client.get_job_id()) if client is not None else ""
    print(f"{JOB_ID_MARKER} {job_id}", flush=True)
    if args.wait:
        client.get_job_execution_result().result()
        logger.info("job %s (%s) ended", job_name, job_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
