"""Build and run the event job: on the embedded mini-cluster (default) or a Flink cluster.

``run_events_job(settings, ...)`` creates the real connectors and builds the job over them with
``pipelines.job.build_job`` (the composition root):
the Kafka raw source, the transactional Kafka DLQ sink and the store (the transactional store log
plus its applier, ``zhongtai.services.applier``; or the direct Redis/HBase writer). It is
what ``zhongtai run``, ``zhongtai demo``, the bench and the integration tests call, and what
``zhongtai submit`` ships to a cluster (``zhongtai/jobs/job_main.py``).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from config.settings import Settings, settings_to_json

if TYPE_CHECKING:  # pragma: no cover
    from pyflink.common import JobClient
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.table import StatementSet, StreamTableEnvironment

    from zhongtai.services.applier import ApplierThread, StoreApplier

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    """How one run of the event job is wired (names default to the configured ones)."""

    bounded: bool = False  # stop at the offsets that were latest at start (drain)
    group: str | None = None
    topic_pattern: str | None = None
    dlq_topic: str | None = None
    redis_prefix: str | None = None
    hbase_prefix: str | None = None
    hbase: bool = True
    resume: bool = True  # restore from the newest retained checkpoint when one is there
    job_name: str | None = None  # Flink job name (default flink.job_name): names checkpoints and transactional ids
    transactional_id_prefix: str | None = None
    naive_control: bool = False  # also run pipelines.naive_sink (blind HINCRBY; fault-tolerance control)
    naive_prefix: str | None = None  # Redis prefix of the naive sink (default "<redis prefix>:naive")
    identity_topic: str | None = None  # topic of the identity changes (default kafka.topics.identity_changes)
    tag_topic: str | None = None  # tag changes (default kafka.topics.tag_changes)
    experiments: bool = True  # per-variant statistics of experiments.definitions_file (pipelines.experiments)
    rules: bool = False  # the strategy engine in the person operator (pipelines.person; actions: pipelines.actions)
    rules_file: str | None = None  # rule definitions (default config/rules.yaml)
    actions_prefix: str | None = None  # action topics are <prefix><channel> (default kafka.topics.actions_prefix)
    control_topic: str | None = None  # control messages (default kafka.topics.control)
    control_results_topic: str | None = None  # their results (default kafka.topics.control_results)
    attribution: bool = True  # with rules: conversions attributed from the delivery receipts (pipelines.attribution)
    delivery_topic: str | None = None  # the receipts (default kafka.topics.delivery)
    #: test-only negative control: every action also written AT_LEAST_ONCE, non-transactionally, to
    #: <prefix><channel> (JobTables.actions_control; replays after a failure duplicate there)
    actions_control_prefix: str | None = None
    #: restore from this savepoint (or retained checkpoint) URL/path instead of the newest retained checkpoint
    #: (``zhongtai run|submit --from-savepoint``; docs/upgrade.md)
    recover_from: str | None = None

    def job_name_for(self, settings: Settings) -> str:
        """The job's name: ``job_name``, else ``flink.job_name`` (in the settings' namespace)."""
        return self.job_name or settings.flink.job_name


def savepoint_dir(settings: Settings) -> str:
    """Where ``zhongtai stop`` and ``zhongtai run --savepoint-dir`` put savepoints unless told otherwise:
    ``<checkpoint dir>/savepoints`` (a URL the cluster can write to, like the checkpoints), in the settings'
    namespace (``<checkpoint dir>/<namespace>.savepoints``)."""
    return settings.checkpoint_url().rstrip("/") + "/" + settings.in_namespace("savepoints")


def latest_checkpoint(checkpoint_url: str, job_name: str) -> str | None:
    """Newest complete retained checkpoint (``chk-N`` with ``_metadata``) under the job's folder."""
    if not checkpoint_url.startswith("file://"):
        return None
    root = Path(checkpoint_url[len("file://"):]) / job_name
    best: tuple[float, Path] | None = None
    for meta in root.glob("*/chk-*/_metadata"):
        m = meta.stat().st_mtime
        if best is None or m > best[0]:
            best = (m, meta.parent)
    return best[1].as_uri() if best else None


def _site_packages() -> str:
    import site

    return site.getsitepackages()[0]


#: Restarts on a Flink cluster: a lost TaskManager makes every restart fail for want of slots until a
#: new one has registered, which on a loaded machine took longer than 20 fixed 2 s attempts (the
#: p=2 kill test's job FAILED that way): back off exponentially to 20 s, and give up only after 60
#: attempts without 5 quiet minutes in between. The mini-cluster cannot lose its TaskManager, so
#: there a job that keeps failing fails fast (20 × 2 s).
CLUSTER_RESTARTS = {
    "restart-strategy.type": "exponential-delay",
    "restart-strategy.exponential-delay.initial-backoff": "1 s",
    "restart-strategy.exponential-delay.max-backoff": "20 s",
    "restart-strategy.exponential-delay.backoff-multiplier": "2.0",
    "restart-strategy.exponential-delay.reset-backoff-threshold": "5 min",
    "restart-strategy.exponential-delay.jitter-factor": "0.1",
    "restart-strategy.exponential-delay.attempts-before-reset-backoff": "60",
}


def flink_options(settings: Settings, opts: RunOptions, jars: list[Path], *, cluster: bool = False) -> dict[str, str]:
    f = settings.flink
    job_name = opts.job_name_for(settings)
    ck_root = settings.checkpoint_url().rstrip("/") + "/" + job_name
    conf = {
        "pipeline.name": job_name,
        "parallelism.default": str(f.parallelism),
        "execution.checkpointing.interval": f"{f.checkpoint_interval_ms} ms",
        "execution.checkpointing.mode": "EXACTLY_ONCE",
        "execution.checkpointing.dir": ck_root,
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "execution.checkpointing.num-retained": "2",
        "state.backend.type": f.state_backend,
        # RocksDB: checkpoint only what changed since the last one (hashmap snapshots are always full)
        "execution.checkpointing.incremental": "true" if f.state_backend == "rocksdb" else "false",
        "restart-strategy.type": "fixed-delay",
        "restart-strategy.fixed-delay.attempts": "20",
        "restart-strategy.fixed-delay.delay": "2 s",
        "python.executable": sys.executable,
        "python.client.executable": sys.executable,
        # The identity graph is a keyed Python DataStream function: thread mode runs it inside the JVM
        # (measured ~10.5k new combinations/s vs ~1.5k/s in process mode, docs/performance.md); the
        # vectorised store writer falls back to process mode by itself. The embedded interpreter needs
        # the site-packages of this interpreter on its path.
        "python.execution-mode": "thread",
        "python.pythonpath": _site_packages(),
        "python.fn-execution.arrow.batch.size": "5000",
        "python.fn-execution.bundle.size": "5000",
        "python.fn-execution.bundle.time": "500",
        "pipeline.jars": ";".join(p.resolve().as_uri() for p in jars),
        "table.exec.sink.not-null-enforcer": "DROP",
    }
    # The person operator's bundles flush before every watermark: periodic watermarks at the bundle interval
    # (pipelines/bundles.py; 0 would switch periodic watermarks off).
    conf["pipeline.auto-watermark-interval"] = f"{settings.job.bundle_ms or 200} ms"
    if cluster:
        for k in [k for k in conf if k.startswith("restart-strategy.")]:
            del conf[k]
        conf.update(CLUSTER_RESTARTS)
    conf.update(f.options)
    return conf


def _prepare_mini_cluster_jvm(settings: Settings, job_name: str) -> None:
    """The mini-cluster runs in the JVM PyFlink starts for this process, on first use, configured by the
    environment: bound its heap (``flink.mini_heap_mb``, unless the caller set ``JVM_ARGS``), and log to
    ``<run_dir>/logs/flink-run-<time>-<job>-python-<host>.log`` with ``config/log4j-job.properties`` (one
    file per run; PyFlink's default is a file inside its own package). No effect once the JVM runs (a
    second job in the same process shares it and its log)."""
    import os

    if settings.flink.mode != "mini":
        return
    os.environ.setdefault("JVM_ARGS", f"-Xmx{settings.flink.mini_heap_mb}m -Xms256m")
    logs = settings.run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("FLINK_LOG_DIR", str(logs))
    os.environ.setdefault("FLINK_IDENT_STRING", f"run-{time.strftime('%Y%m%d-%H%M%S')}-{re.sub(r'[^A-Za-z0-9_.-]', '_', job_name)}")
    os.environ.setdefault("LOG4J_PROPERTIES", str(Path(__file__).resolve().parents[2] / "config" / "log4j-job.properties"))


def make_envs(settings: Settings, opts: RunOptions, jars: list[Path]) -> tuple[StreamExecutionEnvironment,
                                                                               StreamTableEnvironment]:
    """The stream + table environments of a run (mini-cluster in this process's JVM)."""
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.table import EnvironmentSettings, StreamTableEnvironment

    from zhongtai.jobs.metrics import flink_prometheus_options

    job_name = opts.job_name_for(settings)
    _prepare_mini_cluster_jvm(settings, job_name)
    conf = Configuration()
    # The embedded mini-cluster's metrics through Flink's Prometheus reporter (zhongtai.jobs.metrics).
    options = {**flink_prometheus_options(settings), **flink_options(settings, opts, jars)}
    for k, v in options.items():
        conf.set_string(k, v)
    ck = opts.recover_from or (latest_checkpoint(settings.checkpoint_url(), job_name) if opts.resume else None)
    if ck:
        logger.info("restoring %s from %s", job_name, ck)
        conf.set_string("execution.state-recovery.path", ck)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env_settings = EnvironmentSettings.new_instance().in_streaming_mode().with_configuration(conf).build()
    return env, StreamTableEnvironment.create(env, environment_settings=env_settings)


def make_table_env(settings: Settings, opts: RunOptions, jars: list[Path]) -> StreamTableEnvironment:
    return make_envs(settings, opts, jars)[1]


class RunError(RuntimeError):
    """The run cannot start as asked; the message says what to do."""


def check_drain_topics(settings: Settings, opts: RunOptions) -> list[str]:
    """A bounded run (``--drain``) reads the topics its pattern matches to their current end; with none it
    would never end (a Kafka pattern source waits for topics to appear). Fail before starting instead."""
    from config.namespace import zhongtai_command
    from connectors.kafka_admin import list_topics, matching_topics

    pattern = opts.topic_pattern or settings.kafka.topics.events
    found = matching_topics(settings, pattern)
    if not found:
        existing = list_topics(settings)
        shown = ", ".join(existing[:20]) + (f" … ({len(existing)} in all)" if len(existing) > 20 else "")
        raise RunError(f"no topic matches the events pattern {pattern!r} on {settings.kafka.bootstrap}, so a drained "
                       f"run would wait for ever. Topics that exist: {shown or '(none)'}. Produce events first "
                       f"({zhongtai_command(settings)} produce), or set kafka.topics.events "
                       "(ZT__KAFKA__TOPICS__EVENTS) to a pattern that matches your topics.")
    return found


def transactional_ids(settings: Settings, opts: RunOptions) -> dict[str, str]:
    """The Kafka transactional-id prefix of each exactly-once sink of the job: two jobs that share one fence
    each other, so they derive from the job name (``--txn-prefix`` replaces it)."""
    root = opts.transactional_id_prefix or opts.job_name_for(settings)
    ids = {sink: f"{root}-{sink}" for sink in ("identity", "tags", "control", "store", "actions", "pricing")}
    return {"dlq": opts.transactional_id_prefix or f"{root}-dlq", **ids}


def consumer_groups(settings: Settings, opts: RunOptions) -> dict[str, str]:
    """The Kafka consumer group of each source of the job (the store applier's is ``<events group>-store``)."""
    group = opts.group or settings.kafka.consumer_group
    return {"events": group, "control": f"{group}-control", "delivery": f"{group}-delivery"}


def register_events_job(t_env: StreamTableEnvironment, settings: Settings, opts: RunOptions):
    """Create the real connectors (topics, Kafka tables, the store sink) and build the whole job over them
    (``pipelines.job.build_job``, the composition root); return the statement set."""
    from connectors.kafka_admin import create_topics
    from connectors.kafka_tables import dlq_sink_ddl, source_ddl
    from pipelines.job import JobPlan, JobTables, build_job
    from pipelines.store_sink import store_udf

    job = settings.job
    txn, groups = transactional_ids(settings, opts), consumer_groups(settings, opts)
    t_env.execute_sql(source_ddl(
        "zt_source", settings.kafka, topic_pattern=opts.topic_pattern, group=groups["events"], bounded=opts.bounded,
        idle_timeout_ms=job.source_idle_timeout_ms, key_column=True,
    ))
    t_env.execute_sql(dlq_sink_ddl(
        "zt_dlq", settings.kafka, topic=opts.dlq_topic,
        transactional_id_prefix=txn["dlq"], key_column=True,
    ))
    t_env.execute_sql(dlq_sink_ddl(
        "zt_identity_out", settings.kafka, topic=opts.identity_topic or settings.kafka.topics.identity_changes,
        transactional_id_prefix=txn["identity"],
    ))
    t_env.execute_sql(dlq_sink_ddl(
        "zt_tags_out", settings.kafka, topic=opts.tag_topic or settings.kafka.topics.tag_changes,
        transactional_id_prefix=txn["tags"],
    ))
    # The control topic (rules, tags, experiments, identity commands), read from its start by every
    # run: control messages are versioned and idempotent, so replaying them is safe.
    control_topic = opts.control_topic or settings.kafka.topics.control
    results_topic = opts.control_results_topic or settings.kafka.topics.control_results
    ensure_control_topics(settings, control_topic, results_topic)
    t_env.execute_sql(source_ddl(
        "zt_control_source", settings.kafka, topic_pattern=re.escape(control_topic),
        group=groups["control"], bounded=opts.bounded,
        idle_timeout_ms=job.source_idle_timeout_ms,
    ))
    t_env.execute_sql(dlq_sink_ddl(
        "zt_control_results", settings.kafka,
        topic=results_topic,
        transactional_id_prefix=txn["control"],
    ))
    if job.store_mode == "log":
        from connectors.kafka_tables import store_log_sink_ddl
        from connectors.store_log import store_log_topic

        topic = store_log_topic(settings, opts.group)
        create_topics(settings, [topic])
        t_env.execute_sql(store_log_sink_ddl(
            "zt_store_sink", settings.kafka, topic=topic,
            transactional_id_prefix=txn["store"],
        ))
        store_fn = None
    else:
        t_env.execute_sql("CREATE TEMPORARY TABLE zt_store_sink (written BIGINT) WITH ('connector' = 'blackhole')")
        t_env.create_temporary_function("zt_store", store_udf(
            settings_to_json(settings), redis_prefix=opts.redis_prefix, hbase_prefix=opts.hbase_prefix,
            hbase=opts.hbase,
        ))
        store_fn = "zt_store"
    ruleset = None
    actions = actions_control = delivery = None
    prefix = opts.actions_prefix or settings.kafka.topics.actions_prefix
    if opts.rules:
        from pipelines.actions import CHANNELS, actions_sink_ddl, load_ruleset

        ruleset = load_ruleset(opts.rules_file)
        create_topics(settings, [f"{prefix}{c}" for c in CHANNELS])
        actions = "zt_actions_out"
        t_env.execute_sql(actions_sink_ddl(
            actions, settings, txn["actions"], prefix))
        if opts.actions_control_prefix:  # the kill test's negative control: the same actions, at least once
            create_topics(settings, [f"{opts.actions_control_prefix}{c}" for c in CHANNELS])
            actions_control = "zt_actions_control_out"
            t_env.execute_sql(actions_sink_ddl(actions_control, settings, "", opts.actions_control_prefix,
                                               delivery="at-least-once"))
        if opts.attribution:
            from pipelines.attribution import delivery_source_ddl

            topic = opts.delivery_topic or settings.kafka.topics.delivery
            create_topics(settings, [topic])  # a bounded run over a pattern that matches no topic never ends
            delivery = "zt_delivery_source"
            t_env.execute_sql(delivery_source_ddl(delivery, settings, topic=topic, bounded=opts.bounded,
                                                  group=groups["delivery"]))
    pricing_out = None
    if settings.pricing.enabled:  # docs/pricing.md: every price change and offer decision on a topic
        create_topics(settings, [settings.kafka.topics.pricing])
        pricing_out = "zt_pricing_topic"
        t_env.execute_sql(dlq_sink_ddl(pricing_out, settings.kafka, topic=settings.kafka.topics.pricing,
                                       transactional_id_prefix=txn["pricing"]))
    tables = JobTables(source="zt_source", dlq="zt_dlq", store="zt_store_sink", store_udf=store_fn,
                       identity_changes="zt_identity_out", tag_changes="zt_tags_out",
                       control_source="zt_control_source", control_results="zt_control_results",
                       actions=actions, actions_prefix=prefix, actions_control=actions_control,
                       actions_control_prefix=opts.actions_control_prefix, delivery_source=delivery,
                       pricing=pricing_out)
    plan = JobPlan(ruleset=ruleset, attribution=opts.attribution, experiments=opts.experiments,
                   redis_prefix=opts.redis_prefix,
                   naive_prefix=(opts.naive_prefix or f"{opts.redis_prefix or settings.redis.prefix}:naive")
                   if opts.naive_control else None)
    reset_sql_node_ids(t_env)
    return build_job(t_env, settings, tables, plan)


def reset_sql_node_ids(t_env: StreamTableEnvironment) -> None:
    """Number the planner's nodes from 1 again, so that the SQL operators' uids (``<node id>_<transformation>``,
    ``pipelines.events.sql_uid_options``) depend only on the job being built, not on what this JVM planned
    before: without it a second build in the same process (a test, a restart in-process) got other uids and
    could not restore its own savepoint. The counter is a static of the planner (``ExecNodeContext``), reached
    through the planner's class loader; a Flink without it only logs (restore in a fresh process then)."""
    try:
        loader = t_env._j_tenv.getPlanner().getClass().getClassLoader()
        cls = loader.loadClass("org.apache.flink.table.planner.plan.nodes.exec.ExecNodeContext")
        from pyflink.java_gateway import get_gateway

        gw = get_gateway()
        cls.getMethod("resetIdCounter", gw.new_array(gw.jvm.java.lang.Class, 0)).invoke(
            None, gw.new_array(gw.jvm.java.lang.Object, 0))
    except Exception as e:  # noqa: BLE001 - py4j raises its own types; the job still runs
        logger.warning("could not reset the planner's node ids (%s): SQL operator uids depend on what this JVM "
                       "planned before; restore savepoints in a fresh process", e)


def ensure_control_topics(settings: Settings, control: str, results: str) -> None:
    """The control topic has ONE partition (its messages are ordered commands); a bounded run needs
    it to exist (a pattern that matches no topic never finishes)."""
    from connectors.kafka_admin import create_topics

    create_topics(settings, [control], partitions=1)
    create_topics(settings, [results])


def connector_jars(settings: Settings) -> list[Path]:
    """The jars every run ships: the Flink Kafka connector and zhongtai's own JVM module (connectors.jvm), and
    with ``archive.enabled`` the Parquet format (connectors.archive)."""
    from connectors.archive import archive_jars
    from connectors.jars import kafka_connector_jars
    from connectors.jvm import zhongtai_jar

    archive = archive_jars(settings) if settings.archive.enabled else []
    return [*kafka_connector_jars(settings), zhongtai_jar(settings), *archive]


def execute(env: StreamExecutionEnvironment, stmt_set: StatementSet, job_name: str) -> JobClient:
    """Submit the job (SQL statements + the Python DataStream operators between them)."""
    stmt_set.attach_as_datastream()
    return env.execute_async(job_name)


def store_applier(settings: Settings, opts: RunOptions) -> StoreApplier:
    """The applier of this run's store log (``job.store_mode: log``), with the run's prefixes."""
    from zhongtai.services.applier import StoreApplier

    return StoreApplier(settings, group=opts.group, redis_prefix=opts.redis_prefix, hbase_prefix=opts.hbase_prefix,
                        hbase=opts.hbase)


def run_events_job(settings: Settings, opts: RunOptions, *, wait: bool = True) -> JobClient:
    """Run the event job on the mini-cluster (in this process's JVM). Blocks until done if ``wait``.

    With ``job.store_mode: log`` a store applier runs on a thread of this process: it writes each
    completed checkpoint's rows to Redis/HBase while the job runs, and everything the job committed
    before this call returns (``wait``), or before the thread ends by itself once the job has ended.
    """
    from zhongtai.services.applier import ApplierThread

    t0 = time.monotonic()
    if opts.bounded:
        check_drain_topics(settings, opts)
    job_name = opts.job_name_for(settings)
    env, t_env = make_envs(settings, opts, connector_jars(settings))
    client = execute(env, register_events_job(t_env, settings, opts), job_name)
    if settings.job.store_mode != "log":
        if wait:
            client.get_job_execution_result().result()
            logger.info("%s finished in %.1f s", job_name, time.monotonic() - t0)
        return client
    if not wait:
        ApplierThread(store_applier(settings, opts), job_done=lambda: _ended(client))
        return client
    applier = ApplierThread(store_applier(settings, opts))
    try:
        client.get_job_execution_result().result()
    except BaseException:
        applier.stop()
        raise
    stats = applier.finish()
    logger.info("%s finished in %.1f s (store log: %d rows applied)", job_name, time.monotonic() - t0, stats.rows)
    return client


def stop_with_savepoint(client: JobClient, directory: str, *, drain: bool = False, timeout_s: float = 600.0) -> str:
    """Stop the job of ``client`` with a savepoint in ``directory`` and return the savepoint's path.

    ``drain`` advances the event time to its end first (every event-time timer fires: pending attribution
    decisions, patterns, held actions), for a job that will not be resumed; an upgrade keeps it off, so the
    restored job carries the timers on. The sinks commit with the savepoint (its data is in Kafka before this
    returns). PyFlink's ``JobClient.stop_with_savepoint`` calls a Java method Flink 2 no longer has, so the
    Java client is called directly (canonical format: portable between state backends)."""
    from pyflink.java_gateway import get_gateway

    fmt = get_gateway().jvm.org.apache.flink.core.execution.SavepointFormatType.CANONICAL
    future = client._j_job_client.stopWithSavepoint(drain, directory, fmt)
    unit = get_gateway().jvm.java.util.concurrent.TimeUnit.MILLISECONDS
    return str(future.get(int(timeout_s * 1000), unit))


@dataclass
class RunningJob:
    """An event job started on the mini-cluster by :func:`start_events_job`, with its store applier."""

    client: JobClient
    applier: ApplierThread | None
    job_name: str

    def ended(self) -> bool:
        return _ended(self.client)

    def stop(self, directory: str | None, *, drain: bool = False, timeout_s: float = 600.0) -> str | None:
        """Stop with a savepoint in ``directory`` (``None``: cancel, no savepoint), wait until the job has
        ended and the applier has written everything the job committed; return the savepoint path."""
        path = None
        try:
            if directory is not None:
                path = stop_with_savepoint(self.client, directory, drain=drain, timeout_s=timeout_s)
                logger.info("%s stopped with savepoint %s", self.job_name, path)
            else:
                self.client.cancel().result()
        except BaseException:
            if self.applier is not None:
                self.applier.stop()
            raise
        self.finish()
        return path

    def wait(self) -> None:
        """Until the job ends (a bounded run, a failure, a stop from elsewhere); then :meth:`finish`."""
        try:
            self.client.get_job_execution_result().result()
        except BaseException:
            if self.applier is not None:
                self.applier.stop()
            raise
        self.finish()

    def finish(self) -> None:
        """The job has ended: the applier writes the rest of the committed store log and stops."""
        if self.applier is not None:
            applier, self.applier = self.applier, None
            stats = applier.finish()
            logger.info("%s: store log applied (%d rows)", self.job_name, stats.rows)


def start_events_job(settings: Settings, opts: RunOptions) -> RunningJob:
    """Start the event job on the mini-cluster (in this process's JVM) and return at once, with the store
    applier on a thread of this process (``job.store_mode: log``). End it with :meth:`RunningJob.stop`
    (savepoint) or wait for it with :meth:`RunningJob.wait` (``zhongtai run``)."""
    from zhongtai.services.applier import ApplierThread

    if opts.bounded:
        check_drain_topics(settings, opts)
    job_name = opts.job_name_for(settings)
    env, t_env = make_envs(settings, opts, connector_jars(settings))
    client = execute(env, register_events_job(t_env, settings, opts), job_name)
    applier = ApplierThread(store_applier(settings, opts)) if settings.job.store_mode == "log" else None
    return RunningJob(client, applier, job_name)


def _ended(client: JobClient) -> bool:
    try:
        return client.get_job_status().result().is_globally_terminal_state()
    except Exception:  # noqa: BLE001 - a mini-cluster that is gone has no job either
        return True


def explain(settings: Settings, opts: RunOptions) -> str:
    t_env = make_table_env(settings, opts, connector_jars(settings))
    return register_events_job(t_env, settings, opts).explain()
