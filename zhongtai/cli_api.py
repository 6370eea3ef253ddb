"""``zhongtai api``: serve the REST API (docs/api.md) with uvicorn.

The legacy bearer token (an ``admin`` key beside the API keys of ``zhongtai keys``) comes from ``api.token``
(config file or ``ZT__API__TOKEN``) or ``ZT_API_TOKEN``; it is never taken from the command line (it would show
in ``ps``). Registered through ``_EXTENSIONS``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any


def cmd_api(args: argparse.Namespace, settings_of: Callable[[argparse.Namespace], Any]) -> int:
    import uvicorn

    from zhongtai.services.api.app import create_app

    settings = settings_of(args)
    secret = settings.api.token.get_secret_value() if settings.api.token else os.environ.get("ZT_API_TOKEN") or None
    host, port = args.host or settings.api.host, args.port or settings.api.port
    try:
        app = create_app(settings, token=secret, prefix=args.prefix, rules_file=args.rules_file)
    except (OSError, ValueError) as e:  # the rules file: unreadable, or invalid (DefinitionError)
        print(f"zhongtai api: the rules file the job starts from cannot be used: {e}; fix it or pass --rules-file",
              file=sys.stderr)
        return 2
    gate = ("bearer token required" if secret else "API keys required" if settings.api.require_keys
            else "no token: open to anyone who can reach it")
    print(f"zhongtai api on http://{host}:{port}/ (OpenAPI at /openapi.json, metrics at /metrics; {gate}); "
          "Ctrl-C stops it")
    uvicorn.run(app, host=host, port=port, log_level=args.log_level, timeout_graceful_shutdown=2)
    return 0


def register(subparsers: Any, settings_of: Callable[[argparse.Namespace], Any]) -> None:
    """Add the ``api`` verb."""
    p = subparsers.add_parser("api", help="serve the REST API (profiles, rules, experiments)")
    p.add_argument("--host", default=None, help="address to listen on (default api.host, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default api.port, 8800)")
    p.add_argument("--prefix", default=None, help="Redis key prefix (default redis.prefix)")
    p.add_argument("--rules-file", default=None, help="the rules file the job started from (default config/rules.yaml)")
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=lambda args: cmd_api(args, settings_of))
