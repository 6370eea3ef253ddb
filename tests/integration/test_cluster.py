"""The event job on the standalone Flink cluster (``zhongtai.jobs.submit``), checked against the oracle.

A fresh generated stream (own topics ``zt.test.<hex>.events.*``, consumer group, DLQ topic, Redis
prefix, HBase table prefix, job name) is drained by the job submitted with ``flink run -py
zhongtai/jobs/job_main.py``; then every Redis counter, profile and pipeline total, every HBase profile,
and the DLQ topic (read_committed, counted per ``zt.reason`` header) must equal the oracle's
expected JSON exactly. Everything the test created is removed afterwards; the cluster keeps running.

    .venv/bin/python -m pytest -m flink tests/integration/test_cluster.py --durations=0

The helpers here are shared with ``tests/integration/test_fault_tolerance.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from config import load_settings
from config.settings import Settings
from connectors.redis_store import RedisStore
from connectors.store_log import store_log_topic
from tests.helpers import counter_mismatches, profile_mismatches
from zhongtai.devtools.generator import GeneratorConfig
from zhongtai.devtools.generator.produce import ProduceReport, produce
from zhongtai.devtools.stack import create_topics, flink_cluster_up, status, up
from zhongtai.jobs.submit import TERMINAL_STATES, cancel, job_exceptions, rest, submit, wait_finished
from zhongtai.services.applier import ApplierThread, StoreApplier

pytestmark = [pytest.mark.flink, pytest.mark.stack]

NAIVE_FIELDS = ("views", "carts", "purchases", "events")


def _quiet(_msg: str) -> None:
    pass


def cluster_settings(parallelism: int, checkpoint_interval_ms: int = 1000) -> Settings:
    return load_settings(
        overrides={"flink": {"parallelism": parallelism, "checkpoint_interval_ms": checkpoint_interval_ms}}
    )


def ensure_cluster(settings: Settings) -> None:
    """Kafka, Redis, HBase and the standalone Flink cluster up (idempotent; restarts a missing TM)."""
    up(settings, services=("redis", "kafka", "hbase"), log=_quiet)
    flink_cluster_up(settings, log=_quiet)


def taskmanager_pid(settings: Settings) -> int | None:
    tm = next(d for d in status(settings) if d["name"] == "flink-taskmanager")
    return tm["pid"] if tm["state"] == "running" else None


def running_jobs(settings: Settings) -> list[str]:
    jobs = rest(settings, "/jobs/overview")["jobs"]
    return [f"{j['name']} ({j['jid']}, {j['state']})" for j in jobs if j["state"] not in TERMINAL_STATES]


def wait_cluster_idle(settings: Settings, timeout_s: float = 120.0) -> None:
    """The cluster is shared (2 slots): wait until no other job runs before using all of it."""
    deadline = time.monotonic() + timeout_s
    while jobs := running_jobs(settings):
        if time.monotonic() > deadline:
            pytest.fail(f"other jobs still run on the shared Flink cluster after {timeout_s:.0f} s: {jobs}")
        time.sleep(1.0)


def metaspace_share(settings: Settings) -> float:
    """Share of the TaskManager's JVM metaspace in use (0 when unknown)."""
    tms = rest(settings, "/taskmanagers")["taskmanagers"]
    if not tms:
        return 0.0
    got = rest(
        settings,
        f"/taskmanagers/{tms[0]['id']}/metrics"
        "?get=Status.JVM.Memory.Metaspace.Used,Status.JVM.Memory.Metaspace.Max",
    )
    m = {g["id"]: float(g["value"]) for g in got}
    used, cap = m.get("Status.JVM.Memory.Metaspace.Used", 0.0), m.get("Status.JVM.Memory.Metaspace.Max", 0.0)
    return used / cap if cap > 0 else 0.0


def prepare_cluster(settings: Settings, max_metaspace_share: float = 0.5) -> None:
    """Stack and cluster up, no other job running, and a TaskManager with metaspace to spare.

    Every PyFlink job loads the flink-python jar (Beam, gRPC ...) into its own user-code class
    loader, which is never unloaded: each job leaves ~30 MiB of metaspace behind, and after ~6 jobs
    the TaskManager dies with ``OutOfMemoryError: Metaspace``. A TaskManager past
    ``max_metaspace_share`` is restarted (SIGTERM, then a fresh one) before the test submits.
    """
    ensure_cluster(settings)
    wait_cluster_idle(settings)
    if metaspace_share(settings) > max_metaspace_share and (pid := taskmanager_pid(settings)) is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while taskmanager_pid(settings) is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        flink_cluster_up(settings, log=_quiet)
        wait_taskmanagers(settings, 1)


def wait_taskmanagers(settings: Settings, n: int, timeout_s: float = 60.0) -> None:
    """Until exactly ``n`` TaskManagers are registered (a killed one is dropped after heartbeats)."""
    deadline = time.monotonic() + timeout_s
    while len(rest(settings, "/taskmanagers")["taskmanagers"]) != n:
        if time.monotonic() > deadline:
            pytest.fail(f"Flink cluster does not show {n} TaskManager(s) after {timeout_s:.0f} s")
        time.sleep(0.5)


# ---- one run's names and the things it creates ---------------------------------------------------
@dataclass
class Run:
    """Fresh names for one test run, and the cleanup of everything it made."""

    settings: Settings
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    job_id: str | None = None
    report: ProduceReport | None = None
    hbase_tables: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    #: the store applier next to the job (``job.store_mode: log``), as ``zhongtai apply`` would run it
    applier: ApplierThread | None = None

    @property
    def topic_prefix(self) -> str:
        return f"zt.test.{self.tag}.events."

    @property
    def topic_pattern(self) -> str:
        return self.topic_prefix.replace(".", r"\.") + ".*"

    @property
    def dlq_topic(self) -> str:
        return f"zt.test.{self.tag}.dlq"

    @property
    def group(self) -> str:
        return f"zt-test-{self.tag}"

    @property
    def redis_prefix(self) -> str:
        return f"zt:test:{self.tag}"

    @property
    def naive_prefix(self) -> str:
        return f"{self.redis_prefix}:naive"

    @property
    def hbase_prefix(self) -> str:
        return f"zt_test_{self.tag}"

    @property
    def job_name(self) -> str:
        return f"zt-test-{self.tag}"

    def store(self) -> RedisStore:
        return RedisStore(self.settings.redis, prefix=self.redis_prefix)

    def naive_store(self) -> RedisStore:
        return RedisStore(self.settings.redis, prefix=self.naive_prefix)

    def mark(self, phase: str, t0: float) -> float:
        now = time.monotonic()
        self.timings[phase] = round(now - t0, 1)
        return now

    # -- setup
    def produce(self, events: int, persons: int, **cfg: Any) -> dict[str, Any]:
        gen = GeneratorConfig(
            events=events,
            persons=persons,
            topic_prefix=self.topic_prefix,
            partitions=self.settings.kafka.partitions,
            **cfg,
        )
        create_topics(self.settings, [self.dlq_topic])
        self.report = produce(self.settings, gen, name=f"zt-test-{self.tag}", progress=False)
        assert self.report.records == events
        return json.loads(Path(self.report.expected_path).read_text(encoding="utf-8"))

    def create_hbase_tables(self) -> None:
        from connectors.hbase_store import HBaseStore

        h = HBaseStore(self.settings.hbase, prefix=self.hbase_prefix)
        try:
            self.hbase_tables = True
            h.ensure_tables()
        finally:
            h.close()

    def submit(self, *, drain: bool, hbase: bool, naive_control: bool = False) -> str:
        self.job_id = submit(
            self.settings,
            drain=drain,
            group=self.group,
            detached=True,
            timeout=240,
            topic_pattern=self.topic_pattern,
            dlq_topic=self.dlq_topic,
            redis_prefix=self.redis_prefix,
            hbase=hbase,
            hbase_prefix=self.hbase_prefix if hbase else None,
            job_name=self.job_name,
            resume=False,
            naive_control=naive_control,
            naive_prefix=self.naive_prefix,
        )
        if self.settings.job.store_mode == "log":
            self.applier = ApplierThread(StoreApplier(self.settings, group=self.group, redis_prefix=self.redis_prefix,
                                                      hbase_prefix=self.hbase_prefix if hbase else None, hbase=hbase))
        return self.job_id

    def settle(self) -> None:
        """Once the job has ended: the applier writes everything the job committed, then stops."""
        if self.applier is not None:
            applier, self.applier = self.applier, None
            stats = applier.finish(timeout_s=120)
            self.timings["applied_rows"] = stats.rows

    # -- teardown
    def cleanup(self) -> None:
        """Cancel the job, keep a TaskManager running, delete topics, group, keys, tables, files."""
        errors: list[str] = []

        def attempt(what: str, fn: Any) -> None:
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - clean up as much as possible, report the rest
                errors.append(f"{what}: {e!r}")

        if self.job_id:
            attempt("cancel job", lambda: cancel(self.settings, self.job_id))
        if self.applier is not None:
            applier, self.applier = self.applier, None
            attempt("applier", applier.stop)
        attempt("taskmanager", lambda: flink_cluster_up(self.settings, log=_quiet))
        attempt("kafka", self._delete_kafka)
        attempt("redis", lambda: self.store().delete_prefix())
        if self.hbase_tables:
            attempt("hbase", self._drop_hbase)
        ck = Path(self.settings.checkpoint_url().removeprefix("file://")) / self.job_name
        attempt("checkpoints", lambda: shutil.rmtree(ck, ignore_errors=True))
        if self.report and self.report.expected_path:
            attempt("expected", lambda: Path(self.report.expected_path).unlink(missing_ok=True))
        assert not errors, "cleanup failed: " + "; ".join(errors)

    def _delete_kafka(self) -> None:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.settings.kafka.bootstrap})
        topics = [*(self.report.topics if self.report else ()), self.dlq_topic, store_log_topic(self.settings, self.group)]
        existing = set(admin.list_topics(timeout=10).topics)
        doomed = [t for t in topics if t in existing]
        for fut in admin.delete_topics(doomed, operation_timeout=30).values() if doomed else ():
            fut.result()
        # the group may not exist (nothing committed) or may not be empty yet: best effort
        with contextlib.suppress(Exception):
            for fut in admin.delete_consumer_groups([self.group, f"{self.group}-store"], request_timeout=15).values():
                fut.result()

    def _drop_hbase(self) -> None:
        import happybase

        conn = happybase.Connection(
            self.settings.hbase.host,
            self.settings.hbase.port,
            table_prefix=self.hbase_prefix,
            table_prefix_separator="_",
        )
        try:
            for t in conn.tables():
                conn.delete_table(t.decode(), disable=True)
        finally:
            conn.close()


# ---- checks ---------------------------------------------------------------------------------------
def store_mismatches(run: Run, expected: dict[str, Any], limit: int = 15) -> list[str]:
    """Every difference between Redis (counters, profiles, totals) and the oracle; [] when exact."""
    run.settle()
    st = run.store()
    try:
        bad: list[str] = []
        stats = st.stats()
        want = expected["stats"]
        bad += [
            f"stats {k}: expected {want.get(k)} got {stats.get(k)}"
            for k in sorted(set(want) | set(stats))
            if int(want.get(k, 0)) != int(stats.get(k, 0))
        ]
        bad += counter_mismatches(expected["counters"], st.all_counters())
        persons = set(st.persons())
        bad += [f"profile {p}: in Redis, not expected" for p in sorted(persons - set(expected["profiles"]))]
        bad += profile_mismatches(expected["profiles"], st.profile)
    finally:
        st.close()
    return bad[:limit] + ([f"... {len(bad) - limit} more"] if len(bad) > limit else [])


def hbase_mismatches(run: Run, expected: dict[str, Any]) -> list[str]:
    from connectors.hbase_store import HBaseStore, derive_profile_hash
    from operators import profile_windows

    run.settle()
    h = HBaseStore(run.settings.hbase, prefix=run.hbase_prefix)
    try:
        return profile_mismatches(
            expected["profiles"],
            lambda p: profile_windows.evaluate(derive_profile_hash(h.profile_buckets(p))),
        )
    finally:
        h.close()


def naive_counts(run: Run) -> dict[str, dict[str, int]]:
    st = run.naive_store()
    try:
        return {k: {f: int(v.get(f, 0)) for f in NAIVE_FIELDS} for k, v in st.all_counters().items()}
    finally:
        st.close()


def expected_dlq(expected: dict[str, Any]) -> Counter:
    return Counter(
        {k.removeprefix("dlq:"): v for k, v in expected["stats"].items() if k.startswith("dlq:") and v}
    )


def read_dlq(
    settings: Settings, topic: str, expect_total: int, timeout_s: float = 60.0, quiet_s: float = 3.0
) -> tuple[Counter, int]:
    """Committed DLQ records per ``zt.reason`` (read_committed, from the beginning) and the number of
    source coordinates seen more than once. Reads until ``expect_total`` records arrived and nothing
    more came for ``quiet_s`` (so an excess shows), or until ``timeout_s``."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap,
            "group.id": f"zt-test-dlq-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    reasons: Counter = Counter()
    coords: set[tuple[str, str, str]] = set()
    repeated = 0
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        deadline = time.monotonic() + timeout_s
        last = time.monotonic()
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None or m.error() is not None:
                if sum(reasons.values()) >= expect_total and time.monotonic() - last > quiet_s:
                    break
                continue
            last = time.monotonic()
            h = {k: (v or b"").decode() for k, v in (m.headers() or [])}
            reasons[h.get("zt.reason", "?")] += 1
            key = (
                h.get("zt.source.topic", ""),
                h.get("zt.source.partition", ""),
                h.get("zt.source.offset", ""),
            )
            repeated += key in coords
            coords.add(key)
    finally:
        c.close()
    return reasons, repeated


# ---- the test -----------------------------------------------------------------------------------
@pytest.mark.parametrize("parallelism,naive", [(1, False), (2, True)], ids=["p1", "p2-with-naive-control"])
def test_cluster_job_drains_exactly(parallelism: int, naive: bool) -> None:
    """Drain mode on the standalone cluster: Redis, HBase and the DLQ equal the oracle exactly.

    The p=2 run also carries the naive control sink (``pipelines.naive_sink``): without failures
    its blind increments must equal the truth too (so its overcount in the fault-tolerance test is
    the replay, not a bug of the control), and its worker must have run the shipped code.
    """
    settings = cluster_settings(parallelism)
    prepare_cluster(settings)
    run = Run(settings)
    t0 = t = time.monotonic()
    try:
        expected = run.produce(events=3_000, persons=300)
        run.create_hbase_tables()
        t = run.mark("produce", t)
        job_id = run.submit(drain=True, hbase=True, naive_control=naive)
        t = run.mark("submit", t)
        try:
            wait_finished(settings, job_id, timeout=240)
        finally:
            t = run.mark("run", t)
        assert store_mismatches(run, expected) == []
        assert hbase_mismatches(run, expected) == []
        want = expected_dlq(expected)
        got, repeated = read_dlq(settings, run.dlq_topic, sum(want.values()))
        assert (dict(sorted(got.items())), repeated) == (dict(sorted(want.items())), 0)
        if naive:
            truth = {k: {f: v[f] for f in NAIVE_FIELDS} for k, v in expected["counters"].items()}
            assert naive_counts(run) == truth
            st = run.naive_store()
            worker = st.client.hgetall(f"{run.naive_prefix}:worker")
            st.close()
            # the TaskManager's Python worker ran the zip `submit` shipped (-pyfs), with the venv's python
            assert "/python-files/" in worker.get("module_file", ""), worker
            assert worker.get("python") == sys.executable, worker
        run.mark("verify", t)
    except Exception:
        if run.job_id:
            print(f"job {run.job_id} exceptions:\n{job_exceptions(settings, run.job_id)}")
        raise
    finally:
        run.cleanup()
        run.timings["total"] = round(time.monotonic() - t0, 1)
        print(f"\n[test_cluster p={parallelism}] timings (s): {run.timings}")
    assert taskmanager_pid(settings) is not None
