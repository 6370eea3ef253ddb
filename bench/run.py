"""``zhongtai bench``: the event job side by side with (a) a naive and (b) a tuned hand-written
consumer, (c) a JVM-only Flink SQL job and (d) raw Kafka consumption, on the same pre-filled topics.

:func:`main` pre-fills fresh topics ``zt.bench.<runid>.{web,app,offline}`` with ``events`` generated
records (the oracle's answer lands in ``<run_dir>/expected/bench-<runid>.json``), runs every contender
in its own child process (wall time measured in the child, peak RSS of the child's process tree
sampled from /proc every 0.5 s by the parent), checks each contender's counters against the oracle
field by field, writes the results to ``out`` (JSON) and prints a table with ratios. See README.md.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Self

import orjson

from config.plugins import channel_names
from config.settings import Settings, settings_to_json
from connectors.store_log import store_log_topic
from zhongtai.devtools.stack._proc import inherited_env

from .check import diff_counters, diff_profiles, diff_stats
from .procs import RssSampler

logger = logging.getLogger(__name__)

CONTENDERS = ("job", "naive", "tuned", "tuned_full", "sql", "raw")
#: Extra contender names accepted in ``only``: the job writing Redis only (no HBase), and the job
#: writing Redis + HBase itself (``job.store_mode: direct``) instead of through its store log, the job on
#: the embedded RocksDB backend, the job with rules, and the full-work hand-written consumer with rules.
EXTRA = ("job-redis", "job-direct", "job-rocksdb", "job_rules", "tuned_full-rules")
HBASE_PREFIX = "ztbench"
ROOT = Path(__file__).resolve().parents[1]


class _StatsPoller:
    """Polls the job's ``{prefix}:stats`` ``received`` every 0.1 s: first and last Redis write times."""

    def __init__(self, settings: Settings, prefix: str, total: int) -> None:
        from connectors.redis_store import RedisStore

        self.store = RedisStore(settings.redis, prefix=prefix)
        self.total = total
        self.first: tuple[float, int] | None = None
        self.last: tuple[float, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            v = self.store.stats().get("received")
            now = time.monotonic()
            if v is not None:
                n = int(v)
                if self.first is None and n > 0:
                    self.first = (now, n)
                if self.last is None and n >= self.total:
                    self.last = (now, n)
                    return
            self._stop.wait(0.1)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.store.close()

    def steady_rate(self) -> float | None:
        if self.first is None or self.last is None or self.last[0] <= self.first[0]:
            return None
        return (self.last[1] - self.first[1]) / (self.last[0] - self.first[0])


#: Operators of the job that run Python: records into them are crossings from the JVM into Python.
PYTHON_OPERATORS = re.compile(r"^identity[-_]graph$|^person$|^rules[-_]budget$|^attribution$|Python|^experiments[-_]control$",
                              re.I)
_RECORDS_IN = re.compile(r'^flink_taskmanager_job_task_operator_numRecords(?P<dir>In|Out)\{(?P<labels>[^}]*)\} '
                         r'(?P<v>[0-9.eE+]+)$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


class _FlinkScraper:
    """Scrapes the mini-cluster's Prometheus reporter (ports 9249-9260) every 5 s while a job runs and
    keeps, per (operator, subtask), the largest ``numRecordsIn`` seen: the records that entered each
    operator (the last seconds of a bounded run can be missed: read the totals as ≥). Not more often: a
    scrape renders every operator's metrics, ~6 % of the job's CPU at one per second."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], float] = {}
        self.source_out: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _scrape(self) -> None:
        import urllib.request

        records: dict[tuple[str, str], float] = {}
        source: dict[str, float] = {}
        for port in range(9249, 9261):  # the mini-cluster's reporter, and any other Flink process's
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=0.5) as r:
                    text = r.read().decode("utf-8", "replace")
            except OSError:
                continue
            for line in text.splitlines():
                m = _RECORDS_IN.match(line)
                if not m:
                    continue
                labels = dict(_LABEL.findall(m.group("labels")))
                op = labels.get("operator_name", "?")
                key = (f"{port}:{labels.get('job_name', '')}:{op}", labels.get("subtask_index", "0"))
                if m.group("dir") == "In":
                    records[key] = float(m.group("v"))
                elif op.startswith("Source") and "zt_source" in op:
                    source[key[0] + "/" + key[1]] = float(m.group("v"))
        if sum(source.values()) >= sum(self.source_out.values()):  # one consistent scrape: the newest
            self.records, self.source_out = records, source

    def _loop(self) -> None:
        while not self._stop.wait(5.0):
            self._scrape()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def rows_per_record(self) -> float | None:
        """Records into the Python operators per record the Kafka source emitted, in the same scrape."""
        n = sum(self.source_out.values())
        return round(sum(self.python_records().values()) / n, 3) if n else None

    def python_records(self) -> dict[str, int]:
        """Records into each Python operator, summed over subtasks."""
        out: dict[str, int] = {}
        for (where, _), v in self.records.items():
            op = where.split(":", 2)[2]
            if PYTHON_OPERATORS.search(op):
                out[op] = out.get(op, 0) + int(v)
        return dict(sorted(out.items()))


def _spawn(name: str, settings: Settings, kwargs: dict[str, Any], work: Path,
           poller: _StatsPoller | None = None) -> dict[str, Any]:
    """Run one contender in a child process; returns its result plus ``peak_rss_mb``."""
    args_path, result_path = work / f"{name}.args.json", work / f"{name}.result.json"
    args_path.write_bytes(orjson.dumps({
        "name": name.split("-")[0], "settings": settings_to_json(settings),
        "kwargs": kwargs, "result": str(result_path),
    }))
    # A process that already ran a PyFlink job carries its runtime variables; a fresh child must not.
    env = inherited_env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    log = (work / f"{name}.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "bench.contender", str(args_path)], cwd=os.getcwd(),
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    scraper = _FlinkScraper() if name.startswith("job") else None
    with RssSampler(proc.pid) as rss:
        if scraper is not None:
            scraper.__enter__()
        try:
            if poller is not None:
                with poller:
                    rc = proc.wait()
            else:
                rc = proc.wait()
        finally:
            if scraper is not None:
                scraper.__exit__()
    log.close()
    if rc != 0 or not result_path.exists():
        tail = (work / f"{name}.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"bench: contender {name!r} failed (exit {rc}); log {work / (name + '.log')}:\n{tail}")
    out = orjson.loads(result_path.read_bytes())
    out["peak_rss_mb"] = round(rss.peak / 2**20, 1)
    out["cpu_s"] = rss.cpu_s
    if scraper is not None:
        out["python_records_in"] = scraper.python_records()
        out["python_rows_per_event"] = scraper.rows_per_record()
    return out


def _redis_store(settings: Settings, prefix: str) -> Any:
    from connectors.redis_store import RedisStore

    return RedisStore(settings.redis, prefix=prefix)


def _ensure_hbase(settings: Settings) -> None:
    """The job's HBase writer expects its tables; the bench writes under the ``ztbench`` prefix."""
    from connectors.hbase_store import HBaseStore

    store = HBaseStore(settings.hbase, prefix=HBASE_PREFIX)
    try:
        have = {t.decode() for t in store.conn.tables()}
        if "profile" not in have:
            store.ensure_tables()
    finally:
        store.conn.close()


def _create_topic(settings: Settings, topic: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    for fut in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]).values():
        fut.result()


def _delete_topics(settings: Settings, topics: list[str]) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    for fut in admin.delete_topics(topics, operation_timeout=30).values():
        try:
            fut.result()
        except Exception as e:  # noqa: BLE001 - cleanup only; a missing topic is fine
            logger.info("bench: deleting topic failed: %s", e)


def run_bench(
    settings: Settings,
    events: int = 1_000_000,
    only: list[str] | None = None,
    *,
    naive_budget_s: float | None = 300.0,
    latency: bool | None = None,
    keep: bool = False,
    persons: int = 2_000,
) -> dict[str, Any]:
    """Run the bench and return the result document (see :func:`main`)."""
    from zhongtai.devtools.generator import GeneratorConfig
    from zhongtai.devtools.generator.produce import produce

    names = list(only) if only else list(CONTENDERS)
    unknown = set(names) - set(CONTENDERS) - set(EXTRA)
    if unknown:
        raise ValueError(f"bench: unknown contenders {sorted(unknown)}; known: {list(CONTENDERS + EXTRA)}")
    runid = time.strftime("%Y%m%d%H%M%S") + "-" + uuid.uuid4().hex[:6]
    topic_prefix = f"zt.bench.{runid}."
    work = settings.run_dir / "bench" / runid
    work.mkdir(parents=True, exist_ok=True)
    cfg = GeneratorConfig(events=events, persons=persons, topic_prefix=topic_prefix,
                          partitions=settings.kafka.partitions)
    print(f"[bench] run {runid}: producing {events:,} events to {topic_prefix}*", flush=True)
    rep = produce(settings, cfg, name=f"bench-{runid}", progress=False)
    assert rep.expected_path is not None
    expected = orjson.loads(rep.expected_path.read_bytes())
    topics = cfg.topics()
    # Exactly the input topics: the bench's own DLQ and output topics share the prefix.
    pattern = "|".join(re.escape(t) for t in topics)
    doc: dict[str, Any] = {
        "runid": runid, "events": events, "topics": topics, "partitions": settings.kafka.partitions,
        "flink_parallelism": settings.flink.parallelism, "cpus": os.cpu_count(),
        "produce": {"seconds": round(rep.seconds, 2), "records_per_s": round(rep.records_per_s)},
        "expected": str(rep.expected_path), "contenders": {},
    }
    extra_topics: list[str] = []
    order = [n for n in ("raw", "tuned", "tuned_full", "tuned_full-rules", "naive", "job", "job_rules", "job-direct",
                         "job-redis", "job-rocksdb", "sql") if n in names]
    for name in order:
        prefix = f"ztbench:{runid}:{name}"
        group = f"zt-bench-{runid}-{name}"
        poller = None
        if name in ("raw", "naive", "tuned", "tuned_full", "tuned_full-rules"):
            kwargs: dict[str, Any] = {"topics": topics, "group": group}
            if name != "raw":
                kwargs["prefix"] = prefix
            if name == "naive":
                kwargs["budget_s"] = naive_budget_s
            if name == "tuned_full-rules":
                kwargs["rules"] = True
        elif name.startswith("job"):
            dlq = f"zt.bench.{runid}.dlq.{name}"
            extra_topics.append(dlq)
            kwargs = {"group": group, "topic_pattern": pattern, "dlq_topic": dlq, "redis_prefix": prefix,
                      "hbase_prefix": HBASE_PREFIX, "hbase": name != "job-redis",
                      "job_name": f"zt-bench-{runid}-{name}"}
            extra_topics.append(store_log_topic(settings, group))
            poller = _StatsPoller(settings, prefix, events)
            if name != "job-redis":
                _ensure_hbase(settings)
        else:  # sql
            out_topic = f"zt.bench.{runid}.sql-counters"
            extra_topics.append(out_topic)
            _create_topic(settings, out_topic)
            kwargs = {"topic_pattern": pattern, "group": group, "out_topic": out_topic,
                      "job_name": f"zt-bench-{runid}-sql"}
        print(f"[bench] {name} ...", flush=True)
        try:
            mode = "direct" if name == "job-direct" else settings.job.store_mode
            run_settings = settings.model_copy(update={"job": settings.job.model_copy(update={"store_mode": mode})})
            if name == "job-rocksdb":
                run_settings = run_settings.model_copy(update={
                    "flink": run_settings.flink.model_copy(update={"state_backend": "rocksdb"})})
            if name == "job_rules":
                kwargs = {**kwargs, "rules": True, "actions_prefix": f"zt.bench.{runid}.actions."}
                extra_topics += [f"zt.bench.{runid}.actions.{c}" for c in channel_names()]
            res = _spawn(name, run_settings, kwargs, work, poller)
        except RuntimeError as e:  # one failing contender must not lose the others' numbers
            logger.error("%s", e)
            doc["contenders"][name] = {"error": str(e)[-1500:], "exact": False, "events_per_s": 0,
                                       "seconds": 0.0, "peak_rss_mb": 0.0}
            print(f"[bench] {name}: FAILED (log {work / (name + '.log')})", flush=True)
            continue
        res["events_per_s"] = round(events / res["seconds"]) if res.get("complete", True) else \
            round(res["records"] / res["seconds"])
        if poller is not None:
            steady = poller.steady_rate()
            res["steady_events_per_s"] = round(steady) if steady else None
            res["startup_s"] = round(poller.first[0] - (poller.last[0] - res["seconds"]), 1) \
                if poller.first and poller.last else None
        res["seconds"] = round(res["seconds"], 2)
        res["cpu_us_per_event"] = round(res["cpu_s"] * 1e6 / events, 1) if res.get("cpu_s") else None
        # exactness
        if name == "raw":
            res["exact"] = None
            res["note"] = f"read {res['records']:,} records (expected {events:,})"
        elif not res.get("complete", True):
            res["exact"] = None
            res["note"] = f"stopped after the {naive_budget_s:.0f} s budget at {res['records']:,} records"
        else:
            if name == "sql":
                from .sql_only import read_counters

                actual = read_counters(settings, out_topic)
            else:
                store = _redis_store(settings, prefix)
                actual = store.all_counters()
            n, shown = diff_counters(actual, expected["counters"])
            problems = shown
            if name.startswith(("job", "tuned_full")):
                problems += diff_stats(store.stats(), expected["stats"])
                pn, pshown = diff_profiles(store, expected["profiles"])
                problems += pshown
                n += pn
                res["profiles_checked"] = len(expected["profiles"])
            if name.startswith("tuned_full"):  # the id map too (the job's is tested in tests/integration/test_job_identity.py)
                from .tuned_full import diff_id_map

                idn, idshown = diff_id_map(store.id_mapping(), expected["identity"])
                problems += idshown
                n += idn
                res["identifiers_checked"] = len(expected["identity"])
            res["counters_checked"] = len(expected["counters"])
            res["exact"] = n == 0 and not problems
            if problems:
                res["differences"] = problems[:20]
        if name not in ("raw", "sql") and not keep:
            _redis_store(settings, prefix).delete_prefix()
        doc["contenders"][name] = res
        print(f"[bench] {name}: {_fmt_row(name, res)}", flush=True)
    if latency if latency is not None else "job" in names:
        from .latency import measure_latency

        print("[bench] latency (live run) ...", flush=True)
        doc["latency"] = measure_latency(settings, runid, work, mode="log")
        extra_topics += doc["latency"].pop("topics", [])
        doc["latency_direct"] = measure_latency(settings, runid, work, mode="direct", timers=False)
        extra_topics += doc["latency_direct"].pop("topics", [])
    doc["ratios"] = _ratios(doc["contenders"])
    if not keep:
        _delete_topics(settings, topics + extra_topics)
    return doc


def _fmt_row(name: str, r: dict[str, Any]) -> str:
    steady = r.get("steady_events_per_s")
    extra = ""
    if r.get("cpu_us_per_event") is not None:
        extra += f"  cpu {r['cpu_us_per_event']:>7.1f} µs/ev"
    if r.get("python_rows_per_event") is not None:
        extra += f"  python rows/ev {r['python_rows_per_event']:.3f} {r.get('python_records_in')}"
    return (f"{r['events_per_s']:>10,} ev/s  steady {steady if steady else '-':>8}  "
            f"{r['seconds']:>8.1f} s  rss {r['peak_rss_mb']:>7.0f} MB  exact {r.get('exact')}{extra}")


def _ratios(c: dict[str, Any]) -> dict[str, Any]:
    job = c.get("job") or c.get("job-redis")
    if not job:
        return {}
    out = {}
    for other in ("naive", "tuned", "tuned_full", "sql", "raw"):
        if other in c:
            o = c[other]["events_per_s"]
            out[f"job_vs_{other}"] = round(job["events_per_s"] / o, 3) if o else None
            if job.get("steady_events_per_s"):
                out[f"job_steady_vs_{other}"] = round(job["steady_events_per_s"] / o, 3) if o else None
    return out


def format_table(doc: dict[str, Any]) -> str:
    head = (f"zhongtai bench {doc['runid']}: {doc['events']:,} events, {doc['partitions']} partitions/topic, "
            f"flink parallelism {doc['flink_parallelism']}, {doc['cpus']} CPUs")
    cols = (f"{'contender':<16} {'events/s':>10} {'steady/s':>10} {'wall s':>8} {'peak RSS MB':>12} {'exact':>6}"
            f" {'job/this':>9}")
    lines = [head, cols]
    job = doc["contenders"].get("job") or doc["contenders"].get("job-redis")
    for name, r in doc["contenders"].items():
        ratio = f"{job['events_per_s'] / r['events_per_s']:.2f}x" if job and r["events_per_s"] else "-"
        steady = r.get("steady_events_per_s")
        lines.append(f"{name:<16} {r['events_per_s']:>10,} {steady or '-':>10} {r['seconds']:>8.1f} "
                     f"{r['peak_rss_mb']:>12.0f} {r.get('exact')!s:>6} {ratio:>9}")
    for key in ("latency", "latency_direct"):
        lat = doc.get(key)
        if lat:
            lines.append(f"job event→Redis latency at {lat['rate']}/s ({lat.get('store_mode', 'log')} mode): "
                         f"p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms, max {lat['max_ms']} ms "
                         f"({lat['samples']} events)")
            for kind in ("action", "tag"):
                t = lat.get(f"timer_{kind}_delay_ms")
                if t:
                    lines.append(f"  timer {kind}: seen {t['seen']}/{t['probes']} after their due time, "
                                 f"p50 {t['p50']} ms, max {t['max']} ms")
    if doc.get("ratios"):
        lines.append("ratios: " + ", ".join(f"{k} {v}" for k, v in doc["ratios"].items()))
    return "\n".join(lines)


def main(settings: Settings, events: int = 1_000_000, out: str = "bench/results/latest.json",
         only: list[str] | None = None) -> int:
    """Run the bench, write ``out`` and print the table. Returns 0 when every checked contender is exact."""
    doc = run_bench(settings, events, only)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    print(format_table(doc))
    print(f"[bench] results written to {path}")
    return 0 if all(r.get("exact") is not False for r in doc["contenders"].values()) else 1
