"""``zhongtai collect``: serve the event collector and its browser SDK (docs/collector.md) with uvicorn.

Write keys come from ``collector.write_keys`` (a config file or ``ZT__COLLECTOR__...``), never from the command
line (it would show in ``ps``). Registered through ``_EXTENSIONS``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from collections.abc import Callable
from typing import Any


def cmd_collect(args: argparse.Namespace, settings_of: Callable[[argparse.Namespace], Any]) -> int:
    import uvicorn

    from connectors.kafka_admin import create_topics
    from zhongtai.services.collector.app import create_app

    settings = settings_of(args)
    cfg = settings.collector
    if not cfg.write_keys and not cfg.api_keys:
        print("zhongtai collect: no write keys: add collector.write_keys ([{key: SECRET, source: web}]) to your "
              "--config file, or set collector.api_keys: true and create keys with `zhongtai keys create --role "
              "collector`; without one nobody could send events", file=sys.stderr)
        return 2
    if not re.fullmatch(settings.kafka.topics.events, cfg.topic):
        print(f"zhongtai collect: warning: collector.topic {cfg.topic!r} is not matched by kafka.topics.events "
              f"({settings.kafka.topics.events!r}): the event job will not read it", file=sys.stderr)
    try:
        create_topics(settings, [cfg.topic], timeout_s=5.0)
    except Exception as e:  # noqa: BLE001 - Kafka down at start: serve 503s until it is up
        print(f"zhongtai collect: warning: could not make sure topic {cfg.topic} exists ({e}); events get 503 "
              "until Kafka answers", file=sys.stderr)
    host, port = args.host or cfg.host, args.port or cfg.port
    sources = sorted({k.source for k in cfg.write_keys} | ({"API keys"} if cfg.api_keys else set()))
    print(f"zhongtai collect on http://{host}:{port}/ → Kafka {settings.kafka.bootstrap} topic {cfg.topic} "
          f"(sources {', '.join(sources)}; {args.workers} worker process(es); SDK at /sdk/zt.js, metrics at "
          "/metrics); Ctrl-C stops it", flush=True)
    if args.workers == 1:
        uvicorn.run(create_app(settings), host=host, port=port, log_level=args.log_level, timeout_graceful_shutdown=5)
        return 0
    # Several processes: each loads the same settings (this command's config file, --namespace and environment)
    # and has its own producer; their metrics are summed through prometheus-client's multiprocess files. Order
    # per key holds: the SDK and the client send a browser's next batch only once the last one is answered.
    with tempfile.TemporaryDirectory(prefix="zt-collect-metrics-") as metrics_dir:
        os.environ.update({WORKER_CONFIG_ENV: os.path.abspath(args.config) if args.config else "",
                           WORKER_NAMESPACE_ENV: getattr(args, "namespace", None) or "",
                           "PROMETHEUS_MULTIPROC_DIR": metrics_dir})
        uvicorn.run(f"{__name__}:worker_app", factory=True, workers=args.workers, host=host, port=port,
                    log_level=args.log_level, timeout_graceful_shutdown=5)
    return 0


WORKER_CONFIG_ENV = "ZT_COLLECT_CONFIG"
WORKER_NAMESPACE_ENV = "ZT_COLLECT_NAMESPACE"


def worker_app() -> Any:
    """The app of one worker process of ``zhongtai collect --workers N``: the settings the command loaded (its
    ``--config`` and ``--namespace``, passed in the environment), metrics summed across the processes."""
    from config import load_settings
    from zhongtai.services.collector.app import create_app

    namespace = os.environ.get(WORKER_NAMESPACE_ENV)
    settings = load_settings(os.environ.get(WORKER_CONFIG_ENV) or None,
                             overrides={"namespace": namespace} if namespace else None).for_component("collector")
    return create_app(settings, metrics_dir=os.environ["PROMETHEUS_MULTIPROC_DIR"])


def register(subparsers: Any, settings_of: Callable[[argparse.Namespace], Any]) -> None:
    """Add the ``collect`` verb."""
    p = subparsers.add_parser("collect", help="serve the HTTP event collector and the browser SDK")
    p.add_argument("--host", default=None, help="address to listen on (default collector.host, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default collector.port, 8900)")
    p.add_argument("--workers", type=int, default=1, choices=range(1, 65), metavar="N",
                   help="worker processes (default 1; one per core to use them all)")
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=lambda args: cmd_collect(args, settings_of))
