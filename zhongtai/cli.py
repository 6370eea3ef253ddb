"""The ``zhongtai`` command line. Every verb has ``--help``; nothing happens at import time."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from collections.abc import Sequence

from config import ConfigError, load_settings
from config.settings import Settings
from zhongtai.names import EVENTS_TOPIC_PREFIX
from zhongtai.names import zhongtai_command as _zhongtai

#: Whose credentials a verb uses (``security.components``; docs/security.md); every other verb: ``admin``.
VERB_COMPONENT = {"run": "job", "submit": "job", "replay": "job", "apply": "applier", "api": "api", "dashboard": "api",
                  "worker": "worker", "collect": "collector"}


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict = {}
    if getattr(args, "parallelism", None):
        overrides.setdefault("flink", {})["parallelism"] = args.parallelism
    if getattr(args, "namespace", None) is not None:
        overrides["namespace"] = args.namespace
    settings = load_settings(args.config, overrides=overrides)
    if getattr(args, "verb", "") == "stack":  # the local stack creates every component's users
        return settings
    return settings.for_component(VERB_COMPONENT.get(getattr(args, "verb", ""), "admin"))  # type: ignore[arg-type]


# ---- stack ------------------------------------------------------------------------------------
def cmd_stack(args: argparse.Namespace) -> int:
    from zhongtai.devtools import stack

    s = _settings(args)
    if args.action == "up":
        services = tuple(args.services) if args.services else ("redis", "kafka", "hbase")
        stack.up(s, services=services, flink_cluster=args.flink_cluster,
                 redis_cluster=args.redis_cluster or (not args.services and s.redis.mode == "cluster"))
    elif args.action == "down":
        stack.down(s, services=tuple(args.services) if args.services else None)
    else:
        rows = stack.status(s)
        for r in rows:
            ports = ",".join(str(p) for p in r.get("ports") or [])
            print(f"{r['name']:<18} {r['state']:<8} pid={r.get('pid') or '-':<8} ports={ports:<16} log={r.get('log')}")
    return 0


# ---- produce ----------------------------------------------------------------------------------
def cmd_produce(args: argparse.Namespace) -> int:
    from zhongtai.devtools.generator import GeneratorConfig, fault_rates
    from zhongtai.devtools.generator.produce import produce

    s = _settings(args)
    cfg = GeneratorConfig(
        seed=args.seed, persons=args.persons, events=args.events, partitions=s.kafka.partitions,
        topic_prefix=args.topic_prefix or s.in_namespace(EVENTS_TOPIC_PREFIX), faults=fault_rates(total=args.bad_rate),
    )
    report = produce(s, cfg, name=args.name or s.in_namespace(cfg.default_name()), progress=not args.quiet)
    print(json.dumps(report.summary() if hasattr(report, "summary") else str(report), indent=2, default=str))
    return 0


# ---- run / submit -----------------------------------------------------------------------------
def _drain_total(s: Settings, topics: list[str]) -> int:
    from connectors.kafka_admin import records_in

    return records_in(s, topics)


class _RunProgress:
    """While a drained run works: records read (the job's ``stats.received``, written with each checkpoint),
    the rate and what is left of the topics, on the CLI's progress display."""

    def __init__(self, s: Settings, prefix: str | None, total: int, *, enabled: bool) -> None:
        import threading

        from zhongtai.progress import Bar

        self.s, self.prefix = s, prefix
        self.bar = Bar("run", total, enabled=enabled)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        from connectors.redis_store import RedisStore

        store = RedisStore(self.s.redis, prefix=self.prefix)
        try:
            while not self.stop.wait(1.0):
                try:
                    got = int(store.stats().get("received", 0))
                except Exception:  # noqa: BLE001 - progress only: Redis busy or not up yet
                    continue
                left = (self.bar.total or 0) - got
                self.bar.update(got, f"lag {left:,}" if left > 0 else "")
        finally:
            store.close()

    def __enter__(self) -> _RunProgress:
        self.bar.__enter__()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.bar.__exit__()


def _print_counts(s: Settings, prefix: str | None) -> None:
    """What the run wrote: the pipeline totals of docs/semantics.md."""
    from connectors.redis_store import RedisStore

    store = RedisStore(s.redis, prefix=prefix)
    try:
        st = store.stats()
    finally:
        store.close()
    if st:
        reasons = ", ".join(f"{k[4:]} {v:,}" for k, v in sorted(st.items()) if k.startswith("dlq:"))
        print(f"read {st.get('received', 0):,} records: {st.get('valid', 0):,} valid ({st.get('unique', 0):,} unique, "
              f"{st.get('duplicates', 0):,} duplicates), {st.get('dlq', 0):,} to the DLQ ({reasons or 'none'})")


def _run_until_stopped(s: Settings, opts: object, directory: str) -> str | None:
    """``zhongtai run --savepoint-dir``: run until SIGTERM / Ctrl-C, then stop the job with a savepoint
    through its JobClient and return the savepoint's path (None when the job ended by itself)."""
    import signal
    import threading

    from zhongtai.jobs.runner import RunOptions, start_events_job

    assert isinstance(opts, RunOptions)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    job = start_events_job(s, opts)
    print(f"job {job.job_name} running; SIGTERM or Ctrl-C stops it with a savepoint in {directory}", file=sys.stderr)
    while not stop.wait(1.0):
        if job.ended():
            job.wait()  # raises the job's failure
            return None
    print(f"stopping {job.job_name} with a savepoint ...", file=sys.stderr, flush=True)
    return job.stop(directory)


_RESTORE_HINT = ("The savepoint's state does not map onto this job: docs/upgrade.md lists what may change across "
                 "a savepoint; for anything else replay (--fresh, a new group, zhongtai apply --from-start).")


def _restore_refused(e: BaseException) -> str | None:
    """Flink's reason when a savepoint's state does not map onto the job (``Cannot map ... state``), else None."""
    m = re.search(r"Failed to rollback to checkpoint/savepoint [^\n]*", str(e))
    return m.group(0) if m else None


def cmd_run(args: argparse.Namespace) -> int:
    from zhongtai.jobs.runner import RunOptions, latest_checkpoint, run_events_job, savepoint_dir

    s = _settings(args)
    opts = RunOptions(bounded=args.drain, group=args.group, resume=not args.fresh, hbase=not args.no_hbase,
                      rules=args.rules, rules_file=args.rules_file, recover_from=args.from_savepoint,
                      job_name=args.job_name)
    job_name = opts.job_name_for(s)
    if args.drain and (args.from_savepoint or args.savepoint_dir is not None):
        print("zhongtai run: --drain reads to the current end and stops by itself; a savepoint is for a job that "
              "goes on (its Kafka splits keep the end of the run that wrote it). Run without --drain.",
              file=sys.stderr)
        return 2
    ck = latest_checkpoint(s.checkpoint_url(), job_name) if args.drain and opts.resume else None
    if ck:
        # Kafka splits restored from a checkpoint keep the stopping offsets of the run that wrote it
        # (none for an unbounded run): a restored --drain run would never end, or end at once.
        print(f"zhongtai run --drain: job {job_name} has a retained checkpoint ({ck}); a drained run "
              "cannot continue it (its Kafka splits keep the end of the run that wrote it). Run without "
              "--drain to continue that job, or add --fresh (and --group NEW) to drain from scratch.",
              file=sys.stderr)
        return 2
    t0 = time.monotonic()
    from zhongtai.jobs.runner import RunError, check_drain_topics

    try:
        if args.drain:
            total = _drain_total(s, check_drain_topics(s, opts))
            with _RunProgress(s, opts.redis_prefix, total, enabled=not args.quiet):
                run_events_job(s, opts, wait=True)
        elif args.savepoint_dir is not None:
            path = _run_until_stopped(s, opts, args.savepoint_dir or savepoint_dir(s))
            if path:
                print(f"savepoint: {path}", flush=True)
                print(f"continue with: {_zhongtai(s)} run --from-savepoint {path}"
                      + (f" --job-name {job_name}" if args.job_name else ""), file=sys.stderr)
        else:
            run_events_job(s, opts, wait=True)
    except RunError as e:
        print(f"zhongtai run: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        if (why := _restore_refused(e)) is None:
            raise
        print(f"zhongtai run: {why}\n{_RESTORE_HINT}", file=sys.stderr)
        return 2
    print(f"job {job_name} {'drained' if args.drain else 'ended'} after {time.monotonic() - t0:.1f} s")
    _print_counts(s, opts.redis_prefix)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from zhongtai.jobs.submit import submit

    s = _settings(args)
    job_id = submit(s, drain=args.drain, group=args.group, detached=not args.wait, rules=args.rules,
                    rules_file=args.rules_file, recover_from=args.from_savepoint, job_name=args.job_name)
    print(job_id)
    if args.from_savepoint and not args.wait:
        # the JobManager maps the savepoint's state onto the new graph when the job starts: say it if it cannot
        from zhongtai.jobs.submit import job_exceptions, wait_state

        state = wait_state(s, job_id, {"RUNNING"}, timeout=300)
        if state != "RUNNING":
            print(f"zhongtai submit: job {job_id} is {state} instead of restoring {args.from_savepoint}:\n"
                  f"{job_exceptions(s, job_id)}\n{_RESTORE_HINT}", file=sys.stderr)
            return 2
    if s.job.store_mode == "log":
        group = f" --group {args.group}" if args.group else ""
        print(f"the job writes Redis/HBase through its store log: keep `{_zhongtai(s)} apply{group}` running next to it",
              file=sys.stderr)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    """Stop the cluster's job with a savepoint (REST); print the savepoint's path on stdout."""
    from zhongtai.jobs.runner import savepoint_dir
    from zhongtai.jobs.submit import SubmitError, find_job, stop_with_savepoint

    s = _settings(args)
    directory = args.savepoint or savepoint_dir(s)
    try:
        # in a namespace the default is the namespace's job (several namespaces may run on one cluster)
        job_id = find_job(s, args.job or (s.flink.job_name if s.namespace else None))
        print(f"stopping job {job_id} with a savepoint in {directory} ...", file=sys.stderr, flush=True)
        path = stop_with_savepoint(s, job_id, directory, drain=args.drain, timeout=args.timeout)
    except (SubmitError, OSError) as e:
        print(f"zhongtai stop: {e}", file=sys.stderr)
        return 2
    print(path)
    print(f"continue with: {_zhongtai(s)} submit --from-savepoint {path} (same --group, --job-name and options)",
          file=sys.stderr)
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    """Write the job's committed store log to Redis/HBase (``zhongtai.services.applier``)."""
    import signal
    import threading

    from connectors.store_log import store_log_topic
    from zhongtai.services.applier import ApplierError, ApplierMetrics, StoreApplier

    s = _settings(args)
    metrics = None
    if args.metrics_port is not None:
        metrics = ApplierMetrics(store_log_topic(s, args.group))
        port = metrics.serve(args.metrics_port, addr=args.metrics_host)
        print(f"metrics on http://{args.metrics_host}:{port}/metrics", file=sys.stderr)
    applier = StoreApplier(s, group=args.group, redis_prefix=args.redis_prefix, hbase_prefix=args.hbase_prefix,
                           hbase=not args.no_hbase, from_start=args.from_start, metrics=metrics)
    try:
        applier.open(wait_s=args.wait_topic)
        if args.drain:
            n = applier.drain(timeout_s=args.timeout)
            print(f"applied {n} rows from {applier.topic}")
            return 0
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        print(f"applying {applier.topic} (consumer group {applier.consumer_group}); Ctrl-C to stop", file=sys.stderr)
        try:
            applier.run(stop)
        except KeyboardInterrupt:
            pass
        print(f"applied {applier.stats.rows} rows in {applier.stats.batches} batches", file=sys.stderr)
        return 0
    except ApplierError as e:
        print(f"zhongtai apply: {e}", file=sys.stderr)
        return 2
    finally:
        applier.close()


# ---- names / demo / profile / bench --------------------------------------------------------------
def cmd_names(args: argparse.Namespace) -> int:
    """Every shared name of this configuration (and ``--namespace``): topics, groups, transactional ids..."""
    from zhongtai.names import shared_names

    names = shared_names(_settings(args))
    if args.json:
        print(json.dumps(names, indent=2))
    else:
        for role, name in names.items():
            print(f"{role:<28} {name}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from zhongtai.devtools.demo import run_demo

    return run_demo(_settings(args), events=args.events, persons=args.persons)


def cmd_profile(args: argparse.Namespace) -> int:
    from zhongtai.services.profiles import get_profile

    s = _settings(args)
    out = get_profile(s, args.identifier, as_of=args.as_of)
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0 if out else 1


def cmd_bench(args: argparse.Namespace) -> int:
    """``python -m bench`` in this interpreter: the benchmark is a tool beside the product, not part of it
    (the application never imports ``bench``). ``--namespace`` reaches it as ``ZT__NAMESPACE`` (its own
    topics, groups and prefixes are fresh per run anyway)."""
    import os
    import subprocess

    cmd = [sys.executable, "-m", "bench", "--events", str(args.events), "--out", args.out]
    if args.config:
        cmd += ["--config", args.config]
    if args.only:
        cmd += ["--only", *args.only]
    env = {**os.environ, "ZT__NAMESPACE": args.namespace} if getattr(args, "namespace", None) else None
    return subprocess.run(cmd, check=False, env=env).returncode


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zhongtai", description="zhongtai: real-time marketing platform on Flink.")
    p.add_argument("--config", help="YAML file merged over config/defaults.yaml (env ZT__SECTION__KEY overrides)")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    p.add_argument("--namespace", default=None, metavar="NAME", help=NAMESPACE_HELP)
    sub = p.add_subparsers(dest="verb", required=True)

    st = sub.add_parser("stack", help="start/stop/show the local stack (Kafka, HBase+Thrift, Redis, Flink)")
    st.add_argument("action", choices=["up", "down", "status"])
    st.add_argument("services", nargs="*",
                    help="redis redis-cluster kafka hbase flink (default: redis kafka hbase)")
    st.add_argument("--flink-cluster", action="store_true", help="also start a standalone Flink cluster")
    st.add_argument("--redis-cluster", action="store_true",
                    help="also start a 3-master Redis Cluster on redis.nodes (implied by redis.mode: cluster)")
    st.set_defaults(func=cmd_stack)

    pr = sub.add_parser("produce", help="write a seeded synthetic clickstream (+ ground truth) to Kafka")
    pr.add_argument("--events", type=int, default=100_000)
    pr.add_argument("--persons", type=int, default=2_000)
    pr.add_argument("--seed", type=int, default=42)
    pr.add_argument("--bad-rate", type=float, default=0.02, help="share of injected bad events (all DLQ reasons)")
    pr.add_argument("--topic-prefix", default=None,
                    help=f"topics are <prefix><source> (default {EVENTS_TOPIC_PREFIX}, in the namespace)")
    pr.add_argument("--name", default=None,
                    help="name of the expected-results file under .zt/expected/ (default gen-s<seed>-n<events>, "
                         "in the namespace)")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(func=cmd_produce)

    ru = sub.add_parser("run", help="run the event job on the embedded Flink mini-cluster")
    ru.add_argument("--drain", action="store_true", help="stop once the topics are read to their current end")
    ru.add_argument("--quiet", action="store_true", help="no progress display")
    ru.add_argument("--group", default=None, help="Kafka consumer group (default from config)")
    ru.add_argument("--fresh", action="store_true", help="do not restore from the newest retained checkpoint")
    ru.add_argument("--no-hbase", action="store_true", help="write Redis only")
    ru.add_argument("-p", "--parallelism", type=int, default=None)
    ru.add_argument("--rules", action="store_true",
                    help="also run the strategy engine (actions to zt.actions.<channel>; ~2k events/s)")
    ru.add_argument("--rules-file", default=None, help="rule definitions (default config/rules.yaml)")
    ru.add_argument("--job-name", default=None, help="Flink job name (names its checkpoints and transactional ids)")
    ru.add_argument("--from-savepoint", default=None, metavar="PATH",
                    help="restore from this savepoint (an upgrade: docs/upgrade.md) instead of the newest checkpoint")
    ru.add_argument("--savepoint-dir", nargs="?", const="", default=None, metavar="DIR",
                    help="run until SIGTERM / Ctrl-C, then stop with a savepoint in DIR (default "
                         "<checkpoint dir>/savepoints) and print its path")
    ru.set_defaults(func=cmd_run)

    su = sub.add_parser("submit", help="submit the event job to a Flink cluster (flink.rest_url)")
    su.add_argument("--drain", action="store_true")
    su.add_argument("--group", default=None)
    su.add_argument("--wait", action="store_true", help="wait for the job to finish")
    su.add_argument("-p", "--parallelism", type=int, default=None)
    su.add_argument("--rules", action="store_true", help="with the strategy engine (rules, patterns, journeys)")
    su.add_argument("--rules-file", default=None, help="rule definitions (default config/rules.yaml)")
    su.add_argument("--job-name", default=None, help="Flink job name (zhongtai stop --job finds it by this name)")
    su.add_argument("--from-savepoint", default=None, metavar="PATH",
                    help="restore from this savepoint (zhongtai stop printed it; docs/upgrade.md)")
    su.set_defaults(func=cmd_submit)

    so = sub.add_parser("stop", help="stop the cluster's job with a savepoint (for an upgrade) and print its path")
    so.add_argument("--job", default=None, metavar="NAME|ID",
                    help="the job's name or id (default: the one running job)")
    so.add_argument("--savepoint", default=None, metavar="DIR",
                    help="directory of the savepoint (default <checkpoint dir>/savepoints; the cluster writes it)")
    so.add_argument("--drain", action="store_true",
                    help="advance event time to the end first (every timer fires): only for a job you will not resume")
    so.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    so.set_defaults(func=cmd_stop)

    ap = sub.add_parser("apply", help="write the job's committed store log to Redis/HBase (job.store_mode: log)")
    ap.add_argument("--group", default=None, help="the job's Kafka consumer group (default from config)")
    ap.add_argument("--redis-prefix", default=None, help="the job's Redis key prefix (default from config)")
    ap.add_argument("--hbase-prefix", default=None, help="the job's HBase table prefix (default from config)")
    ap.add_argument("--no-hbase", action="store_true", help="write Redis only (as a job run with --no-hbase)")
    ap.add_argument("--drain", action="store_true", help="apply what is committed now, then exit")
    ap.add_argument("--from-start", action="store_true",
                    help="apply the whole retained log again (rebuild Redis/HBase after losing them)")
    ap.add_argument("--timeout", type=float, default=300.0, help="--drain: give up after this many seconds")
    ap.add_argument("--wait-topic", type=float, default=120.0,
                    help="wait this long for the job to create its store log")
    ap.add_argument("--metrics-port", type=int, default=None,
                    help="serve Prometheus /metrics here (rows, batches, write time, lag; 0 = any free port)")
    ap.add_argument("--metrics-host", default="127.0.0.1", help="address of /metrics (0.0.0.0 in a container)")
    ap.set_defaults(func=cmd_apply)

    na = sub.add_parser("names", help="print every topic, group, transactional id, Redis prefix, HBase table and "
                                      "job name this configuration (and --namespace) uses")
    na.add_argument("--json", action="store_true", help="as one JSON object role -> name")
    na.set_defaults(func=cmd_names)

    de = sub.add_parser("demo", help="stack + sample stream + job + summary read back from Redis")
    de.add_argument("--events", type=int, default=50_000)
    de.add_argument("--persons", type=int, default=1_000)
    de.set_defaults(func=cmd_demo)

    pf = sub.add_parser("profile", help="look up a person's live profile")
    pf_sub = pf.add_subparsers(dest="action", required=True)
    pg = pf_sub.add_parser("get", help="profile of an identifier, e.g. user_id:u42 or phone:+8613800000000")
    pg.add_argument("identifier")
    pg.add_argument("--as-of", type=int, default=None, help="evaluate windows at this epoch ms (default last_seen)")
    pg.set_defaults(func=cmd_profile)

    be = sub.add_parser("bench", help="throughput benchmark: job vs naive/tuned consumers, SQL-only, raw consume")
    be.add_argument("--events", type=int, default=1_000_000)
    be.add_argument("--out", default="bench/results/latest.json")
    be.add_argument("--only", nargs="*", default=None, help="subset: job naive tuned sql raw")
    be.set_defaults(func=cmd_bench)

    import importlib

    for name in _EXTENSIONS:
        importlib.import_module(name).register(sub, _settings)
    _accept_namespace_everywhere(p)
    return p


NAMESPACE_HELP = ("put every topic, consumer group, transactional id, Redis prefix, HBase table and job name in "
                  "namespace NAME (config key namespace, env ZT__NAMESPACE; docs/deploy.md, 'Isolating a run')")


def _accept_namespace_everywhere(parser: argparse.ArgumentParser) -> None:
    """``--namespace`` after any verb too (``zhongtai run --namespace a``), not only before it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.add_argument("--namespace", default=argparse.SUPPRESS, metavar="NAME", help=NAMESPACE_HELP)
                _accept_namespace_everywhere(sub)


#: Modules that add verbs: each has ``register(subparsers, settings_of)`` where ``settings_of(args)``
#: loads the validated config tree. Kept out of this file so that each area owns its verbs.
_EXTENSIONS: tuple[str, ...] = (
    "zhongtai.cli_workers",
    "zhongtai.cli_experiments",
    "zhongtai.cli_dashboard",
    "zhongtai.cli_identity",
    "zhongtai.cli_rules",
    "zhongtai.cli_api",
    "zhongtai.cli_collect",
    "zhongtai.cli_keys",
    "zhongtai.cli_plugins",
    "zhongtai.cli_warehouse",
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"zhongtai: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
