"""The pure parts of ``bench.restore_time``: kill thresholds, the private cluster's conf, the REST readers
and the per-kill timings read from the probe's samples. No cluster, no timing."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.restore_time import (
    CONFIGS,
    Sample,
    all_subtasks_running,
    checkpoint_sizes,
    cluster_conf,
    first_at_or_after,
    kill_thresholds,
    resumed_after,
    summary,
    table,
)


def test_kill_thresholds_are_shares_of_the_stream_in_order() -> None:
    assert kill_thresholds(1_000_000, [0.95, 0.25, 0.5, 0.75]) == [250_000, 500_000, 750_000, 950_000]
    for bad in ([0.0], [1.0], [1.5], [-0.1]):
        with pytest.raises(ValueError, match="between 0 and 1"):
            kill_thresholds(100, bad)


def test_cluster_conf_replaces_the_stacks_nested_keys_and_leaves_the_stack_tree_alone() -> None:
    stack = {"jobmanager": {"rpc": {"port": 6123, "address": "127.0.0.1"}}, "rest": {"port": 8081},
             "taskmanager": {"numberOfTaskSlots": 2, "memory": {"process": {"size": "4096m"}}},
             "heartbeat": {"timeout": 15000}}
    tree = cluster_conf(stack, host="127.0.0.1", rest_port=18081, rpc_port=16123, tm_memory="5120m",
                        local_recovery=True, work=Path("/w"))
    assert tree["jobmanager.rpc.port"] == 16123 and tree["rest.port"] == 18081
    assert tree["taskmanager.numberOfTaskSlots"] == 1 and tree["taskmanager.memory.process.size"] == "5120m"
    assert tree["execution.state-recovery.from-local"] is True
    assert tree["taskmanager.memory.managed.fraction"] == 0.2
    # the nested forms are gone (no key spelled twice), the rest of the stack's conf is kept
    assert "port" not in tree["jobmanager"]["rpc"] and "port" not in tree["rest"]
    assert "numberOfTaskSlots" not in tree["taskmanager"] and tree["heartbeat"] == {"timeout": 15000}
    assert stack["taskmanager"]["numberOfTaskSlots"] == 2  # a copy: the input is untouched
    off = cluster_conf(stack, host="h", rest_port=1, rpc_port=2, tm_memory="1g", local_recovery=False, work=Path("/w"))
    assert off["execution.state-recovery.from-local"] is False


def test_configs_cover_both_backends_with_and_without_local_recovery() -> None:
    assert {(c.backend, c.local_recovery) for c in CONFIGS.values()} == {
        ("hashmap", False), ("hashmap", True), ("rocksdb", False), ("rocksdb", True)}
    assert all(c.incremental == (c.backend == "rocksdb") for c in CONFIGS.values())


def test_restored_means_every_subtask_running() -> None:
    running = {"state": "RUNNING", "vertices": [{"status": "RUNNING"}, {"status": "RUNNING"}]}
    assert all_subtasks_running(running)
    # the job is RUNNING while a vertex still restores its state (INITIALIZING): not restored yet
    assert not all_subtasks_running({"state": "RUNNING", "vertices": [{"status": "RUNNING"}, {"status": "INITIALIZING"}]})
    assert not all_subtasks_running({"state": "RESTARTING", "vertices": running["vertices"]})
    assert not all_subtasks_running({"state": "RUNNING", "vertices": []})
    # a bounded VALUES source of the SQL finishes at once: the job still runs
    assert all_subtasks_running({"state": "RUNNING", "vertices": [{"status": "RUNNING"}, {"status": "FINISHED"}]})
    assert not all_subtasks_running({"state": "RUNNING", "vertices": [{"status": "FINISHED"}]})


def test_checkpoint_sizes_keep_completed_checkpoints_only() -> None:
    history = [{"id": 7, "status": "COMPLETED", "state_size": 900, "checkpointed_size": 40},
               {"id": 8, "status": "IN_PROGRESS", "state_size": 0, "checkpointed_size": 0},
               {"id": 6, "status": "FAILED"}]
    assert checkpoint_sizes(history) == {7: {"state_bytes": 900, "checkpointed_bytes": 40}}


def test_first_at_or_after_ignores_samples_before_the_kill() -> None:
    samples = [(9.0, 5), (10.0, 1), (10.4, 3), (11.3, 5)]
    assert first_at_or_after(samples, 10.0, lambda v: v >= 5) == 1.3
    assert first_at_or_after(samples, 10.0, lambda v: v > 5) is None


def test_table_and_summary_of_a_run() -> None:
    kill = {"n": 1, "received_at_kill": 250_000, "restored_state_bytes": 120_000_000,
            "restored_checkpointed_bytes": 3_000_000, "detected_s": 0.4, "tm_registered_s": 6.0,
            "job_running_s": 7.1, "restore_s": 12.5, "first_checkpoint_s": 16.0, "resumed_s": None}
    run = {"config": "hashmap", "kills": [kill, {**kill, "n": 2, "restore_s": 20.0}]}
    assert summary(run) == {"restore_s_max": 20.0, "restore_s_last": 20.0, "restore_s_mean": 16.2}
    assert summary({"config": "x", "error": "boom"})["restore_s_max"] is None
    lines = table({"runs": [run]}).splitlines()
    assert len(lines) == 3 and "restore" in lines[0]
    assert lines[1].split() == ["hashmap", "1", "250,000", "120", "3", "0.4", "6.0", "7.1", "12.5", "16.0", "-", "0"]


def _sample(t: float, restored: int, running: bool, received: int) -> Sample:
    return Sample(t, "RUNNING" if running else "RESTARTING", running, restored, None, 0, None, received,
                  frozenset({"tm0", "tm1"}))


def test_resumed_counts_only_output_of_processing_after_the_restore() -> None:
    # the applier still writes a pre-kill checkpoint's rows (received 120 at t=11) while the job restores
    samples = [_sample(10.5, 0, False, 100), _sample(11.0, 0, False, 120), _sample(20.0, 1, True, 120),
               _sample(24.0, 1, True, 120), _sample(26.5, 1, True, 180)]
    assert resumed_after(samples, 10.0, restores_before=0) == 16.5
    assert resumed_after(samples[:3], 10.0, restores_before=0) is None  # restored, nothing new yet
    assert resumed_after(samples[:2], 10.0, restores_before=0) is None  # not restored


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_each_configuration_reaches_the_job_config(name: str) -> None:
    """The bench sets ``flink.state_backend``; the job's Flink config carries the backend and, for RocksDB,
    incremental checkpoints. Local recovery is a TaskManager setting in Flink 2.3 (read by
    ``TaskExecutorLocalStateStoresManager`` from the TaskManager's configuration), so it goes into the cluster's
    conf (``cluster_conf``), not into the job's."""
    from config import load_settings
    from zhongtai.jobs.runner import RunOptions, flink_options

    cfg = CONFIGS[name]
    s = load_settings(overrides={"flink": {"state_backend": cfg.backend, "mode": "cluster"}})
    options = flink_options(s, RunOptions(job_name="j"), [], cluster=True)
    assert options["state.backend.type"] == cfg.backend
    assert options["execution.checkpointing.incremental"] == ("true" if cfg.incremental else "false")
    assert not {"execution.state-recovery.from-local", "state.backend.local-recovery"} & set(options)
