"""Exactness under ``kill -9`` of the TaskManager, with a naive sink as the negative control.

On the standalone cluster the event job runs UNBOUNDED over a generated stream (checkpoints every
second) with the naive control sink (``pipelines.naive_sink``: a blind ``HINCRBY`` per event into
its own Redis prefix) as an extra INSERT of the same job. Mid-stream the TaskManager JVM is killed
with SIGKILL three times; each time a new TaskManager is started and the JobManager restores the
job from its latest completed checkpoint. Once the whole stream is processed and a checkpoint has
completed after that (so the DLQ's Kafka transactions are committed), the job is cancelled and:

* every Redis value of the real job (counters, profiles, totals) equals the oracle exactly;
* the DLQ topic (read_committed) holds exactly the injected bad records, none twice;
* the naive sink's counts are never below the truth and exceed it in total (replays counted twice).

Each kill is timed so that the naive control *must* overcount: the naive writer's progress counter
has advanced since the newest completed checkpoint was seen, i.e. some events reached Redis after
that checkpoint's barrier and will be replayed.

    .venv/bin/python -m pytest -m flink tests/integration/test_fault_tolerance.py --durations=0 -s
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field

import pytest

from config.settings import Settings
from tests.integration.test_cluster import (
    NAIVE_FIELDS,
    Run,
    cluster_settings,
    expected_dlq,
    naive_counts,
    prepare_cluster,
    read_dlq,
    store_mismatches,
    taskmanager_pid,
)
from zhongtai.devtools.stack import flink_cluster_up
from zhongtai.jobs.submit import cancel, checkpoints, job_exceptions, job_state

pytestmark = [pytest.mark.flink, pytest.mark.stack]

EVENTS = 60_000  # the job now also runs identity, tags and experiments: ~4x slower per event
PERSONS = 2_000
KILLS = 3
CHECKPOINT_MS = 1_000
#: Kill only while at least this share of the stream is still ahead (so restores replay real work).
KILL_BEFORE = 0.85


@dataclass
class Probe:
    """One look at the job: REST checkpoint counters plus the Redis progress of both sinks."""

    state: str
    restored: int
    completed: int
    latest_id: int | None
    latest_trigger_ms: int | None
    received: int
    naive_rows: int
    restored_id: int | None = None


@dataclass
class Chaos:
    """Kills the TaskManager and restarts it; watches the job through REST and Redis."""

    run: Run
    job_id: str
    kills: list[dict] = field(default_factory=list)
    unplanned_tm_restarts: int = 0
    tm_pid: int | None = None

    @property
    def settings(self) -> Settings:
        return self.run.settings

    def probe(self) -> Probe:
        try:
            state = job_state(self.settings, self.job_id)
            ck = checkpoints(self.settings, self.job_id)
        except OSError:  # REST hiccup while the JobManager is busy restoring
            state, ck = "?", {}
        counts = ck.get("counts", {})
        latest = (ck.get("latest") or {}).get("completed") or {}
        restored = (ck.get("latest") or {}).get("restored") or {}
        st = self.run.store()
        try:
            received = st.stats().get("received", 0)
            naive_rows = int(st.client.hget(f"{self.run.naive_prefix}:progress", "rows") or 0)
        finally:
            st.close()
        return Probe(
            state,
            int(counts.get("restored", 0)),
            int(counts.get("completed", 0)),
            latest.get("id"),
            latest.get("trigger_timestamp"),
            received,
            naive_rows,
            restored.get("id"),
        )

    def keep_taskmanager(self) -> None:
        """A TaskManager that died on its own (not by us: a fatal error, metaspace) is restarted, counted,
        and its orphaned Python workers are reaped."""
        pid = taskmanager_pid(self.settings)
        if pid is None:
            self.unplanned_tm_restarts += 1
            if self.tm_pid is not None:
                _reap_group(self.tm_pid)
            flink_cluster_up(self.settings, log=lambda _m: None)
            pid = taskmanager_pid(self.settings)
        self.tm_pid = pid

    def fail(self, what: str, p: Probe) -> None:
        pytest.fail(
            f"{what}; last probe {p}; kills so far {self.kills}\n"
            f"job exceptions:\n{job_exceptions(self.settings, self.job_id)}"
        )

    def wait_for_kill_moment(self, restores_before: int, min_share: float, timeout_s: float = 150.0) -> Probe:
        """Wait until the job runs again after the previous restore, a checkpoint completed since,
        ``min_share`` of the stream is processed, and the naive writer has written rows after the
        newest completed checkpoint (so the restore must replay rows it already counted)."""
        deadline = time.monotonic() + timeout_s
        seen_id: int | None = None
        rows_at_seen = 0
        completed_at_restore: int | None = None
        min_received = int(min_share * EVENTS)
        while True:
            self.keep_taskmanager()
            p = self.probe()
            if p.state in ("FAILED", "CANCELED", "FINISHED"):
                self.fail(f"job ended {p.state} before kill {len(self.kills) + 1}", p)
            if p.restored >= restores_before and p.state == "RUNNING":
                if completed_at_restore is None:
                    completed_at_restore = p.completed
                if p.latest_id != seen_id:
                    seen_id, rows_at_seen = p.latest_id, p.naive_rows
                elif (
                    p.completed > completed_at_restore
                    and p.naive_rows > rows_at_seen
                    and min_received <= p.received < KILL_BEFORE * EVENTS
                ):
                    return p
            if p.received >= KILL_BEFORE * EVENTS and p.restored >= restores_before:
                self.fail(
                    f"the stream ran out before kill {len(self.kills) + 1} "
                    f"(make EVENTS larger or the kills quicker)",
                    p,
                )
            if time.monotonic() > deadline:
                self.fail(f"no moment to kill within {timeout_s:.0f} s (kill {len(self.kills) + 1})", p)
            time.sleep(0.1)

    def kill_taskmanager(self, p: Probe) -> None:
        pid = taskmanager_pid(self.settings)
        assert pid is not None, "no TaskManager to kill"
        t0 = time.monotonic()
        kill_ms = int(time.time() * 1000)
        os.kill(pid, signal.SIGKILL)  # the fault: the TaskManager JVM dies without any cleanup
        while taskmanager_pid(self.settings) is not None and time.monotonic() - t0 < 10:
            time.sleep(0.05)
        _reap_group(pid)
        flink_cluster_up(self.settings, log=lambda _m: None)  # a fresh TaskManager (the JobManager stays)
        self.tm_pid = taskmanager_pid(self.settings)
        self.kills.append(
            {
                "pid": pid,
                "kill_ms": kill_ms,
                "received": p.received,
                "naive_rows": p.naive_rows,
                "tm_restart_s": round(time.monotonic() - t0, 1),
            }
        )

    def wait_restored(self, restores: int, timeout_s: float = 120.0) -> Probe:
        t0 = time.monotonic()
        while True:
            self.keep_taskmanager()
            p = self.probe()
            if p.restored >= restores:
                # the newest checkpoint that had completed (triggered) before the kill
                kill_ms = self.kills[-1]["kill_ms"]
                history = checkpoints(self.settings, self.job_id).get("history", [])
                done = [
                    c["id"]
                    for c in history
                    if c.get("status") == "COMPLETED" and c["trigger_timestamp"] < kill_ms
                ]
                self.kills[-1].update(
                    restore_s=round(time.monotonic() - t0, 1),
                    restored_checkpoint=p.restored_id,
                    newest_before_kill=max(done, default=None),
                )
                return p
            if p.state in ("FAILED", "CANCELED", "FINISHED") or time.monotonic() - t0 > timeout_s:
                self.fail(f"the job did not restore after kill {len(self.kills)}", p)
            time.sleep(0.2)

    def wait_drained(self, timeout_s: float = 480.0) -> Probe:
        """All records processed, then a checkpoint triggered after that completed (the DLQ's
        transactions are committed with it), and no restore in between."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.keep_taskmanager()
            p = self.probe()
            if p.state == "RUNNING" and p.received == EVENTS:
                mark_ms, restored = int(time.time() * 1000), p.restored
                while time.monotonic() < deadline:
                    q = self.probe()
                    if q.restored != restored or q.state != "RUNNING":
                        break
                    if q.latest_trigger_ms and q.latest_trigger_ms > mark_ms:
                        if q.received == EVENTS:
                            return q
                        break
                    time.sleep(0.2)
            if p.state in ("FAILED", "CANCELED", "FINISHED"):
                self.fail(f"job ended {p.state} before draining", p)
            if time.monotonic() > deadline:
                self.fail(f"stream not drained within {timeout_s:.0f} s", p)
            time.sleep(0.3)


def _reap_group(pid: int) -> None:
    """SIGKILL what is left of the process group a dead TaskManager led (its Python workers).

    The stack starts the TaskManager in a session of its own, so its PID is the group id; the group
    holds only the processes that TaskManager started."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@pytest.mark.parametrize("parallelism", [1, 2], ids=["p1", "p2"])
def test_exact_after_taskmanager_kills_while_naive_sink_overcounts(parallelism: int) -> None:
    settings = cluster_settings(parallelism, checkpoint_interval_ms=CHECKPOINT_MS)
    prepare_cluster(settings)
    run = Run(settings)
    t0 = t = time.monotonic()
    chaos: Chaos | None = None
    try:
        expected = run.produce(events=EVENTS, persons=PERSONS)
        t = run.mark("produce", t)
        job_id = run.submit(drain=False, hbase=False, naive_control=True)
        t = run.mark("submit", t)
        chaos = Chaos(run, job_id, tm_pid=taskmanager_pid(settings))
        restores = 0
        for k in range(KILLS):
            # spread over the stream: kill k once (5 + 20k) % of it is processed
            p = chaos.wait_for_kill_moment(restores_before=restores, min_share=0.05 + 0.2 * k)
            chaos.kill_taskmanager(p)
            # Flink counts every restore ATTEMPT: while the new TaskManager registers, a restart can
            # fail for want of slots and be retried, each attempt restoring the same checkpoint.
            restores = chaos.wait_restored(p.restored + 1).restored
            # restored from the newest checkpoint completed before the TaskManager died
            assert chaos.kills[-1]["restored_checkpoint"] == chaos.kills[-1]["newest_before_kill"], (
                chaos.kills
            )
        t = run.mark("kill_phase", t)
        final = chaos.wait_drained()
        t = run.mark("drain", t)
        assert cancel(settings, job_id) == "CANCELED"
        assert final.restored >= KILLS

        # the real job: exact
        assert store_mismatches(run, expected) == []
        want = expected_dlq(expected)
        got, repeated = read_dlq(settings, run.dlq_topic, sum(want.values()))
        assert (dict(sorted(got.items())), repeated) == (dict(sorted(want.items())), 0)

        # the naive control: at least once, so never under the truth, and over it after the kills
        truth = {k: {f: v[f] for f in NAIVE_FIELDS} for k, v in expected["counters"].items()}
        naive = naive_counts(run)
        assert set(naive) == set(truth)
        under = [k for k in truth if any(naive[k][f] < truth[k][f] for f in NAIVE_FIELDS)]
        assert under == []
        excess = sum(naive[k][f] - truth[k][f] for k in truth for f in NAIVE_FIELDS)
        over_keys = sum(naive[k] != truth[k] for k in truth)
        replayed_rows = final.naive_rows - expected["stats"]["unique"]
        run.timings.update(naive_excess=excess, naive_keys_over=over_keys, naive_replayed_rows=replayed_rows)
        assert excess > 0 and replayed_rows > 0, (
            "the naive sink did not overcount: the kills replayed nothing"
        )
        run.mark("verify", t)
    finally:
        try:
            run.cleanup()
        finally:
            run.timings["total"] = round(time.monotonic() - t0, 1)
            if chaos is not None:
                run.timings.update(kills=chaos.kills, unplanned_tm_restarts=chaos.unplanned_tm_restarts)
            print(f"\n[test_fault_tolerance p={parallelism}] {run.timings}")
    assert taskmanager_pid(settings) is not None
