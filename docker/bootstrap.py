"""One-shot start-up steps of the containerised platform (docker/compose.yaml, deploy/k8s/init-job.yaml).

    python docker/bootstrap.py [--config FILE] init              # HBase tables + the topic layout
    python docker/bootstrap.py [--config FILE] submit [ARGS...]  # init, then `zhongtai submit ARGS`
                                                                 # unless the job runs already

``init`` is what ``zhongtai stack up`` does for the local stack besides starting processes: the HBase
tables of ``zhongtai.devtools.stack.ensure_tables`` (waiting until their regions serve) and the topics the job,
the applier and the workers meet at start (``topic_layout``). Both steps are idempotent.

``submit`` makes ``docker compose up`` safe to repeat: a job of the same name that is not in a terminal
state is left alone; otherwise ``zhongtai submit`` runs (it resumes from the newest retained checkpoint
under ``flink.checkpoint_dir``). Settings come from the environment (``ZT__...``) as for every verb.
Nothing happens at import time.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import Settings

logger = logging.getLogger("zhongtai.bootstrap")


def topic_layout(settings: Settings, group: str | None = None) -> dict[str, int]:
    """Topic -> partitions that a fresh cluster needs before the job, applier and workers start.

    The control topic has ONE partition (ordered commands; ``zhongtai.jobs.runner.ensure_control_topics``);
    every other topic has ``kafka.partitions``, like the topics the local stack creates. Event topics
    (``kafka.topics.events`` is a pattern) are created by their producers.
    """
    from connectors.channels.base import CHANNELS
    from connectors.store_log import store_log_topic

    t, n = settings.kafka.topics, settings.kafka.partitions
    layout = {t.control: 1}
    for topic in (t.control_results, t.dlq, t.identity_changes, t.tag_changes, t.delivery,
                  store_log_topic(settings, group)):
        layout[topic] = n
    for channel in CHANNELS:
        layout[f"{t.actions_prefix}{channel}"] = n
    return layout


def _retry(step: str, fn, timeout_s: float):
    """``fn()`` until it succeeds or ``timeout_s`` passes (services start in any order)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return fn()
        except Exception as e:  # any transport error while a service is starting
            if time.monotonic() > deadline:
                raise RuntimeError(f"bootstrap: {step} still failing after {timeout_s:.0f} s: {e!r}") from e
            logger.info("bootstrap: %s not ready yet (%s); retrying", step, e)
            time.sleep(2.0)


def init(settings: Settings, timeout_s: float) -> None:
    from zhongtai.devtools.stack import create_topics, ensure_tables
    from zhongtai.devtools.stack.hbase import wait_tables_serving

    created = _retry("HBase tables", lambda: ensure_tables(settings), timeout_s)
    wait_tables_serving(settings, timeout_s)
    layout = topic_layout(settings)
    made: list[str] = []
    for partitions in sorted(set(layout.values())):
        names = [t for t, p in layout.items() if p == partitions]
        made += _retry("Kafka topics", lambda names=names, p=partitions: create_topics(settings, names, p), timeout_s)
    print(f"bootstrap init: tables created {created or 'none'}; topics created {made or 'none'}", flush=True)


def running_job(settings: Settings, name: str) -> str | None:
    """Id of a job called ``name`` on ``flink.rest_url`` that has not ended, else None."""
    from zhongtai.jobs.submit import TERMINAL_STATES, rest

    for job in rest(settings, "/jobs/overview").get("jobs", []):
        if job.get("name") == name and job.get("state") not in TERMINAL_STATES:
            return str(job["jid"])
    return None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bootstrap.py", description="one-shot start-up steps of the containers")
    p.add_argument("--config", help="YAML file merged over config/defaults.yaml (env ZT__SECTION__KEY overrides)")
    p.add_argument("step", choices=["init", "submit"])
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for each service")
    p.add_argument("submit_args", nargs=argparse.REMAINDER, help="submit: arguments of `zhongtai submit`")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    from config import load_settings

    settings = load_settings(args.config)
    init(settings, args.timeout)
    if args.step == "init":
        return 0
    name = settings.flink.job_name
    jid = _retry("Flink REST", lambda: running_job(settings, name), args.timeout)
    if jid:
        print(f"bootstrap submit: {name} already runs as {jid}; nothing to do", flush=True)
        return 0
    from zhongtai.cli import main as zhongtai

    return zhongtai([*(["--config", args.config] if args.config else []), "submit", *args.submit_args])


if __name__ == "__main__":
    sys.exit(main())
