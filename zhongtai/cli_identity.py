"""``zhongtai identity split|block|unblock IDENTIFIER``: identity commands through the control topic.

The running job applies them without a restart (``pipelines.identity``): ``block`` ignores an
identifier entirely (e.g. a store kiosk found later), ``split`` keeps it as a person of its own that is
never linked again, ``unblock`` lifts either. The graph re-derives the persons involved and every
profile follows (docs/identity.md). Phone numbers and e-mail addresses may be given raw: they are
normalised and replaced by their keyed hash here, as the job stores them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def cmd_identity(args: argparse.Namespace, settings: Any) -> int:
    from connectors.control import PublishError, publish
    from zhongtai.services.profiles import person_key

    try:
        ident = person_key(settings, args.identifier)
    except ValueError as e:
        print(f"zhongtai identity: {e}", file=sys.stderr)
        return 2
    now = int(time.time() * 1000)
    msg = {"kind": "identity", "op": args.op, "identifier": ident, "version": args.version or now, "ts_ms": now}
    if args.cause:
        msg["cause"] = args.cause
    if args.dry_run:
        print(json.dumps(msg, sort_keys=True))
        return 0
    try:
        publish(settings, [msg], topic=args.topic)
    except PublishError as e:
        print(f"zhongtai identity: {e}", file=sys.stderr)
        return 1
    print(json.dumps(msg, sort_keys=True))
    return 0


def register(sub: Any, settings_of: Any) -> None:
    p = sub.add_parser("identity", help="split / block / unblock an identifier in the running identity graph")
    p.add_argument("op", choices=["split", "block", "unblock"])
    p.add_argument("identifier", help="type:value, e.g. device_id:abc or phone:+8613800000000 (raw PII is hashed)")
    p.add_argument("--cause", default=None, help="free text recorded on the identity changes, e.g. 'kiosk'")
    p.add_argument("--version", type=int, default=None, help="message version (default: now in ms)")
    p.add_argument("--topic", default=None, help="control topic (default kafka.topics.control)")
    p.add_argument("--dry-run", action="store_true", help="print the message, send nothing")
    p.set_defaults(func=lambda args: cmd_identity(args, settings_of(args)))
