"""``zhongtai plugins list`` and ``zhongtai enrich NAME`` (docs/plugins.md). Registered through ``_EXTENSIONS``."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Callable
from typing import Any


def plugin_rows(settings: Any) -> list[dict[str, Any]]:
    """Every installed plugin with whether it loads and its ``plugins.NAME`` section validates."""
    from config.plugins import CHANNEL_GROUP, ENRICHER_GROUP, PluginError, load_plugin, plugins

    rows = []
    for group in (CHANNEL_GROUP, ENRICHER_GROUP):
        for p in plugins(group):
            try:
                load_plugin(group, p.name, settings.plugins)
                status = "ok"
            except PluginError as e:
                status = str(e)
            rows.append({"kind": group.rpartition(".")[2][:-1], "name": p.name, "entry_point": p.value,
                         "package": p.dist, "config": status})
    return rows


def cmd_list(args: argparse.Namespace, settings_of: Callable[[argparse.Namespace], Any]) -> int:
    from config.plugins import BUILTIN_CHANNELS, PluginError

    try:
        rows = plugin_rows(settings_of(args))
    except PluginError as e:  # two packages declare one name, or a bad name
        print(f"zhongtai plugins list: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0 if all(r["config"] == "ok" for r in rows) else 1
    print(f"built-in channels: {', '.join(BUILTIN_CHANNELS)}")
    if not rows:
        print("no plugins installed (pip install a package that declares zhongtai.channels or zhongtai.enrichers "
              "entry points, e.g. ./plugins/zhongtai-wechat)")
        return 0
    for r in rows:
        print(f"{r['kind']:<9}{r['name']:<14}{r['package']:<22}{r['entry_point']:<40}{r['config']}")
    return 0 if all(r["config"] == "ok" for r in rows) else 1


def cmd_enrich(args: argparse.Namespace, settings_of: Callable[[argparse.Namespace], Any]) -> int:
    from config.plugins import PluginError
    from zhongtai.services.enrichers import build_runner

    settings = settings_of(args)
    try:
        runner = build_runner(settings, args.name, out_topic=args.topic, group=args.group)
    except (PluginError, ValueError) as e:
        print(f"zhongtai enrich: {e}", file=sys.stderr)
        return 2
    print(f"zhongtai enrich {args.name}: reading {settings.kafka.topics.events}, writing {runner.out_topic} "
          f"(dead letters: {runner.dlq_topic}); Ctrl-C stops it", flush=True)
    stop = threading.Event()
    try:
        stats = runner.run(max_events=args.max_events, stop=stop)
    except KeyboardInterrupt:
        stats = runner.stats
    finally:
        runner.close()
    print(f"zhongtai enrich {args.name}: read {stats.read}, matched {stats.matched}, emitted {stats.emitted}, "
          f"retried {stats.retried}, dead letters {stats.dead}")
    return 0


def register(subparsers: Any, settings_of: Callable[[argparse.Namespace], Any]) -> None:
    """Add the ``plugins`` and ``enrich`` verbs."""
    p = subparsers.add_parser("plugins", help="installed channel and enricher plugins")
    sub = p.add_subparsers(dest="plugins_verb", required=True)
    ls = sub.add_parser("list", help="every installed plugin and whether its plugins.NAME section validates "
                                     "(exit 1 when one does not)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=lambda args: cmd_list(args, settings_of))
    e = subparsers.add_parser("enrich", help="run an enricher plugin over the event topics")
    e.add_argument("name", help="the enricher (zhongtai plugins list)")
    e.add_argument("--topic", default=None, help="where its events go (default zt.events.enriched, in the namespace)")
    e.add_argument("--group", default=None, help="consumer group (default zt-enricher-NAME)")
    e.add_argument("--max-events", type=int, default=None, help="stop after reading this many events")
    e.set_defaults(func=lambda args: cmd_enrich(args, settings_of))
