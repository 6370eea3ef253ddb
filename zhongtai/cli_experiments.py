"""``zhongtai experiment``: report, validate and publish A/B experiments (docs/experiments.md).

- ``report KEY [--json]``: the live results from Redis (``connectors.redis_experiments``) through
  ``operators.experiments.report``: variants, n, rate, lift with CI, p-values, SRM warning,
  always-valid interval, decision hint;
- ``validate FILE``: every problem of a definitions file, by file, line and field;
- ``publish FILE``: one ``upsert`` control message per definition to ``kafka.topics.control``.

Registered through ``_EXTENSIONS`` in zhongtai/cli.py; nothing happens at import time.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from config.settings import Settings

_REPO = Path(__file__).resolve().parents[1]


def _definitions_path(settings: Settings, given: str | None) -> Path:
    path = Path(given or settings.experiments.definitions_file).expanduser()
    if given is None and not path.is_absolute() and not path.exists():
        path = _REPO / path  # the shipped default, wherever the command runs from
    return path


def _definition(settings: Settings, store: Any, key: str, file: str | None) -> Any:
    """The definition to report on: ``--file``, else the job's meta hash, else the configured file."""
    from operators.experiments.definitions import load_definitions

    if file is None:
        recorded = store.definition(key)
        if recorded is not None:
            return recorded
    path = _definitions_path(settings, file)
    for d in load_definitions(path):
        if d.key == key:
            return d
    return None


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from connectors.redis_experiments import RedisExperiments
    from operators.experiments.definitions import DefinitionError
    from operators.experiments.report import experiment_report, format_table, to_json

    cfg = settings.experiments
    store = RedisExperiments(settings.redis, prefix=args.prefix)
    try:
        try:
            defn = _definition(settings, store, args.key, args.file)
        except DefinitionError as e:
            print(f"zhongtai experiment report: {e}", file=sys.stderr)
            return 2
        if defn is None:
            print(f"zhongtai experiment report: no experiment {args.key!r} in Redis ({store.meta_key(args.key)}) "
                  "or the definitions file; check the key or pass --file", file=sys.stderr)  # fmt: skip
            return 1
        stats = store.read_stats(defn.key, defn.variations)
    finally:
        store.close()
    report = experiment_report(
        defn.experiment, stats, args.alpha or cfg.alpha, correction=args.correction or cfg.correction,
        target_n=args.target_n or cfg.target_n, primary=args.primary,
    )  # fmt: skip
    if args.json:
        print(json.dumps(to_json(report), indent=2, ensure_ascii=False))
    else:
        print(format_table(report))
    return 0


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    from operators.experiments.definitions import DefinitionError, load_definitions

    try:
        defs = load_definitions(args.file)
    except DefinitionError as e:
        for line in e.errors:
            print(line, file=sys.stderr)
        print(f"{args.file}: {len(e.errors)} problem(s)", file=sys.stderr)
        return 1
    print(f"{args.file}: ok, {len(defs)} experiment(s): {', '.join(d.key for d in defs)}")
    return 0


def cmd_publish(args: argparse.Namespace, settings: Settings) -> int:
    from operators.experiments.definitions import DefinitionError, control_message, load_definitions

    try:
        defs = load_definitions(args.file)
    except DefinitionError as e:
        for line in e.errors:
            print(line, file=sys.stderr)
        print(f"{args.file}: not published, fix the problems above first", file=sys.stderr)
        return 1
    topic = args.topic or settings.kafka.topics.control
    messages = [control_message("upsert", d.key, d.version, d) for d in defs]
    if args.dry_run:
        for m in messages:
            print(json.dumps(m, ensure_ascii=False, sort_keys=True))
        return 0
    from connectors.control import PublishError, publish

    try:
        publish(settings, messages, topic=topic, key_of=lambda m: f"experiment:{m['key']}")
    except PublishError as e:
        print(f"zhongtai experiment publish: {e}", file=sys.stderr)
        return 1
    for d in defs:
        print(f"published {d.key} v{d.version} to {topic}")
    return 0


def register(subparsers: Any, settings_of: Callable[[argparse.Namespace], Settings]) -> None:
    """Add ``experiment report|validate|publish`` to the ``zhongtai`` parser."""
    ex = subparsers.add_parser("experiment", help="A/B experiments: live report, validate and publish definitions")
    sub = ex.add_subparsers(dest="action", required=True)

    def bind(cmd: Callable[[argparse.Namespace, Settings], int]) -> Callable[[argparse.Namespace], int]:
        return lambda args: cmd(args, settings_of(args))

    rp = sub.add_parser("report", help="results of experiment KEY from Redis")
    rp.add_argument("key")
    rp.add_argument("--json", action="store_true", help="JSON instead of the table")
    rp.add_argument("--file", default=None, help="take the definition from this YAML file, not from Redis")
    rp.add_argument("--prefix", default=None, help="Redis key prefix (default redis.prefix)")
    rp.add_argument("--alpha", type=float, default=None, help="significance level (default experiments.alpha)")
    rp.add_argument("--correction", choices=["holm", "bh"], default=None)
    rp.add_argument("--target-n", type=float, default=None, help="planned units per comparison (sequential)")
    rp.add_argument("--primary", choices=["conversion", "revenue"], default="conversion")
    rp.set_defaults(func=bind(cmd_report))

    va = sub.add_parser("validate", help="check a definitions file (errors name file, line and field)")
    va.add_argument("file")
    va.set_defaults(func=bind(cmd_validate))

    pu = sub.add_parser("publish", help="send the definitions of FILE to the control topic as upserts")
    pu.add_argument("file")
    pu.add_argument("--topic", default=None, help="default kafka.topics.control")
    pu.add_argument("--dry-run", action="store_true", help="print the messages instead of sending them")
    pu.set_defaults(func=bind(cmd_publish))
