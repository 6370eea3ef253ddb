"""``zhongtai dashboard``: serve the live dashboard (docs/dashboard.md)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def cmd_dashboard(args: argparse.Namespace, settings_of: Callable[[argparse.Namespace], Any]) -> int:
    from zhongtai.services.dashboard import DashboardOptions, create_app, serve

    settings = settings_of(args)
    opts = DashboardOptions(
        prefix=args.prefix, group=args.group, refresh_s=args.refresh, window_minutes=args.window,
        lag=not args.no_lag,
    )  # fmt: skip
    app = create_app(settings, opts)
    prefix = args.prefix or settings.redis.prefix
    print(f"zhongtai dashboard on http://{args.host}:{args.port}/ (Redis {settings.redis.host}:{settings.redis.port}, "
          f"prefix {prefix!r}; metrics at /metrics); Ctrl-C stops it")
    serve(app, host=args.host, port=args.port)
    return 0


def register(subparsers: argparse._SubParsersAction, settings_of: Callable[[argparse.Namespace], Any]) -> None:
    """Add the ``dashboard`` verb."""
    p = subparsers.add_parser("dashboard", help="serve the live dashboard (funnel, health, tags, experiments)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port to listen on (default 8765)")
    p.add_argument("--prefix", default=None, help="Redis key prefix to show (default redis.prefix)")
    p.add_argument("--group", default=None, help="Kafka consumer group whose lag is shown (default kafka.consumer_group)")
    p.add_argument("--refresh", type=float, default=1.0, help="seconds between live updates (default 1)")
    p.add_argument("--window", type=int, default=30, help="minutes of per-minute funnel history (default 30)")
    p.add_argument("--no-lag", action="store_true", help="do not read consumer lag from Kafka")
    p.set_defaults(func=lambda args: cmd_dashboard(args, settings_of))
