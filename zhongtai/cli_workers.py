"""``zhongtai worker``: run one channel's delivery worker (docs/workers.md)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

from config.settings import Settings
from connectors.channels.base import CHANNELS

logger = logging.getLogger(__name__)


def cmd_worker(args: argparse.Namespace, settings_of: Callable[[argparse.Namespace], Settings]) -> int:
    settings = settings_of(args)
    if args.instance is not None:
        settings = settings.model_copy(update={"worker": settings.worker.model_copy(update={"instance_id": args.instance})})
    if args.supervise:
        from zhongtai.services.workers.supervise import supervise

        return supervise(lambda: _run_worker(args, settings), f"worker {args.channel} (supervisor)")
    return _run_worker(args, settings)


def _run_worker(args: argparse.Namespace, settings: Settings) -> int:
    from zhongtai.services.workers.worker import build_worker

    worker = build_worker(settings, args.channel)
    stop = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        logger.info("worker %s: signal %d, finishing the current batch", args.channel, signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        port = args.metrics_port if args.metrics_port is not None else settings.worker.metrics_port
        if port:
            bound = worker.metrics.serve(port)
            logger.info("worker %s: /metrics on port %d", args.channel, bound)
        stats = worker.run(max_messages=args.max_messages, idle_exit_s=args.idle_exit_s, stop=stop)
    finally:
        worker.close()
    print(json.dumps({"channel": args.channel, **vars(stats)}), flush=True)
    return 0


def register(sub: argparse._SubParsersAction, settings_of: Callable[[argparse.Namespace], Settings]) -> None:
    """Add the ``worker`` verb to the ``zhongtai`` command line."""
    w = sub.add_parser("worker", help="deliver one channel's actions (zt.actions.<channel>) exactly once per action")
    w.add_argument("--channel", required=True, choices=CHANNELS)
    w.add_argument("--metrics-port", type=int, default=None,
                   help="serve Prometheus /metrics on this port (default worker.metrics_port; 0: off)")
    w.add_argument("--max-messages", type=int, default=None, help="exit once this many messages are settled")
    w.add_argument("--idle-exit-s", type=float, default=None,
                   help="exit after this many seconds with nothing received and nothing pending")
    w.add_argument("--instance", default=None,
                   help="stable id of this process among the channel's workers (default worker.instance_id)")
    w.add_argument("--supervise", action="store_true",
                   help="run the worker in a child process and start it again when it fails (exit 75: a stuck "
                        "Kafka commit; 1: a service stayed away), for hosts without Kubernetes, Docker or systemd "
                        "to do it (docs/workers.md)")
    w.set_defaults(func=lambda args: cmd_worker(args, settings_of))
