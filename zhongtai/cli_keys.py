"""``zhongtai keys create|list|revoke``: the REST API's keys (docs/api.md, "Keys, scopes and limits").

A key is printed once, at creation (``ztk_<id>_<secret>``); only its SHA-256 digest is stored (Redis,
``connectors.api_keys``). Registered through ``_EXTENSIONS``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable
from typing import Any


def _store(args: argparse.Namespace, settings_of: Callable[[argparse.Namespace], Any]) -> Any:
    from connectors.api_keys import RedisApiKeys

    return RedisApiKeys(settings_of(args).redis, prefix=args.prefix)


def cmd_create(args: argparse.Namespace, settings_of: Callable[[argparse.Namespace], Any]) -> int:
    from connectors.api_keys import KeyRecord
    from zhongtai.services.api.keys import new_key, scopes_of

    try:
        scopes = scopes_of(args.role, args.scope or [])
    except ValueError as e:
        print(f"zhongtai keys create: {e}", file=sys.stderr)
        return 2
    if (args.per_s is None) != (args.burst is None):
        print("zhongtai keys create: give --per-s and --burst together (or neither: api.rate)", file=sys.stderr)
        return 2
    if args.source is not None and not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", args.source):
        print(f"zhongtai keys create: --source {args.source!r}: lower-case letters, digits and _ (e.g. web, app, crm)",
              file=sys.stderr)
        return 2
    if args.per_s is not None and (args.per_s <= 0 or args.burst < 1):
        print(f"zhongtai keys create: --per-s must be > 0 and --burst >= 1, got {args.per_s}, {args.burst}",
              file=sys.stderr)
        return 2
    key = new_key()
    store = _store(args, settings_of)
    try:
        store.create(KeyRecord(key.key_id, key.digest, args.name, args.role or "", scopes, args.per_s, args.burst,
                               int(time.time() * 1000), None, args.source or ""))
    finally:
        store.close()
    print(key.token)
    print(f"key {key.key_id} ({args.name}): scopes {', '.join(sorted(scopes))}; shown once, store it now",
          file=sys.stderr)
    return 0


def cmd_list(args: argparse.Namespace, settings_of: Callable[[argparse.Namespace], Any]) -> int:
    store = _store(args, settings_of)
    try:
        records = store.list()
    finally:
        store.close()
    if args.json:
        print(json.dumps([r.to_json() for r in records], indent=1))
        return 0
    print(f"{'id':<13}{'name':<20}{'role':<10}{'rate':<12}{'state':<8}scopes")
    for r in records:
        rate = f"{r.per_s:g}/s,{r.burst}" if r.per_s is not None else "default"
        state = "revoked" if r.revoked_ms is not None else "active"
        print(f"{r.key_id:<13}{r.name[:19]:<20}{r.role or '-':<10}{rate:<12}{state:<8}{','.join(sorted(r.scopes))}")
    return 0


def cmd_revoke(args: argparse.Namespace, settings_of: Callable[[argparse.Namespace], Any]) -> int:
    store = _store(args, settings_of)
    try:
        rec = store.revoke(args.id, int(time.time() * 1000))
    finally:
        store.close()
    if rec is None:
        print(f"zhongtai keys revoke: no key {args.id!r}; `zhongtai keys list` shows them", file=sys.stderr)
        return 1
    print(f"key {rec.key_id} ({rec.name}) revoked; the API refuses it from its next request")
    return 0


def register(subparsers: Any, settings_of: Callable[[argparse.Namespace], Any]) -> None:
    """Add the ``keys`` verb."""
    from zhongtai.services.api.keys import ROLES, SCOPES

    p = subparsers.add_parser("keys", help="create, list and revoke the REST API's keys")
    sub = p.add_subparsers(dest="keys_verb", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--prefix", default=None, help="Redis key prefix (default redis.prefix; the API's --prefix)")

    c = sub.add_parser("create", help="create a key and print it (once)")
    c.add_argument("--name", required=True, help="who or what holds it (shown in `keys list`)")
    c.add_argument("--role", choices=list(ROLES), default=None,
                   help="; ".join(f"{r}: {','.join(sorted(s))}" for r, s in ROLES.items()))
    c.add_argument("--scope", action="append", choices=list(SCOPES), help="a scope to add (repeatable)")
    c.add_argument("--source", default=None,
                   help="collect:write keys: the envelope source of the events sent with it (default api)")
    c.add_argument("--per-s", type=float, default=None, help="own rate limit: requests per second (default api.rate)")
    c.add_argument("--burst", type=int, default=None, help="own rate limit: burst")
    common(c)
    c.set_defaults(func=lambda args: cmd_create(args, settings_of))
    ls = sub.add_parser("list", help="every key (never a secret)")
    ls.add_argument("--json", action="store_true")
    common(ls)
    ls.set_defaults(func=lambda args: cmd_list(args, settings_of))
    r = sub.add_parser("revoke", help="revoke a key by id")
    r.add_argument("id")
    common(r)
    r.set_defaults(func=lambda args: cmd_revoke(args, settings_of))
