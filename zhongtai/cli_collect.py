"""``zhongtai collect``: serve the event collector and its browser SDK (docs/collector.md) with uvicorn.

Write keys come from ``collector.write_keys`` (a config file or ``ZT__COLLECTOR__...``), never from the command
line (it would show in ``ps``). Registered through ``_EXTENSIONS``.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from typing import Any


def cmd_collect(args: argparse.Namespace, settings_of: Callable[[argparse.Namespace], Any]) -> int:
    import uvicorn

    from connectors.kafka_admin import create_topics
    from zhongtai.services.collector.app import create_app

    settings = settings_of(args)
    cfg = settings.collector
    if not cfg.write_keys:
        print("zhongtai collect: no write keys: add collector.write_keys ([{key: SECRET, source: web}]) to your "
              "--config file; without one nobody could send events", file=sys.stderr)
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
    sources = sorted({k.source for k in cfg.write_keys})
    print(f"zhongtai collect on http://{host}:{port}/ → Kafka {settings.kafka.bootstrap} topic {cfg.topic} "
          f"(sources {', '.join(sources)}; SDK at /sdk/zt.js, metrics at /metrics); Ctrl-C stops it", flush=True)
    uvicorn.run(create_app(settings), host=host, port=port, log_level=args.log_level, timeout_graceful_shutdown=5)
    return 0


def register(subparsers: Any, settings_of: Callable[[argparse.Namespace], Any]) -> None:
    """Add the ``collect`` verb."""
    p = subparsers.add_parser("collect", help="serve the HTTP event collector and the browser SDK")
    p.add_argument("--host", default=None, help="address to listen on (default collector.host, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default collector.port, 8900)")
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=lambda args: cmd_collect(args, settings_of))
