"""``zhongtai sql`` and ``zhongtai replay``: the archive (docs/warehouse.md).

``zhongtai sql "SELECT …"`` runs a query with DuckDB, embedded, over the archive's tables (``events``,
``event_persons``, ``records``, ``dlq``, ``identity_changes``, ``tag_changes``, ``actions``, ``receipts``,
``conversions``); ``--example NAME`` runs a shipped one (``--list`` names them). ``zhongtai replay --rules
FILE --from T1 --to T2`` runs a rule set over the archived events of the window through the job's own graph
and reports what it would have sent, what its guard rails would have suppressed and whom it would have
reached; it sends nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any


def parse_time(text: str) -> int:
    """Epoch milliseconds, or an ISO-8601 date/time (UTC unless it has an offset) → epoch milliseconds."""
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is neither epoch milliseconds nor ISO-8601 "
                                         "(e.g. 2026-11-20 or 2026-11-20T08:00:00Z)") from e
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp() * 1000)


def _print_table(columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    cells = [[("" if v is None else str(v)) for v in r] for r in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))


def cmd_sql(args: argparse.Namespace, settings: Any) -> int:
    from zhongtai.services.warehouse import EXAMPLES, run_sql

    if args.list:
        for name, (doc, _q) in EXAMPLES.items():
            print(f"{name:8}  {doc}")
        return 0
    if args.example:
        if args.example not in EXAMPLES:
            print(f"zhongtai sql: no example {args.example!r}; choose from {', '.join(EXAMPLES)}", file=sys.stderr)
            return 2
        query = EXAMPLES[args.example][1]
    elif args.query:
        query = args.query
    else:
        print("zhongtai sql: give a query (zhongtai sql \"SELECT …\") or --example NAME (--list)", file=sys.stderr)
        return 2
    try:
        res = run_sql(settings, query, warehouse=args.warehouse)
    except ModuleNotFoundError as e:
        print(f"zhongtai sql: {e}: install the warehouse extra (pip install 'zhongtai[warehouse]')", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as e:
        print(f"zhongtai sql: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - DuckDB's errors (parser, catalog, binder) name what is wrong
        print(f"zhongtai sql: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if args.json:
        for r in res.rows:
            print(json.dumps(dict(zip(res.columns, r, strict=True)), default=str))
    else:
        _print_table(res.columns, res.rows)
    return 0


def cmd_replay(args: argparse.Namespace, settings: Any) -> int:
    from zhongtai.jobs.replay import DECISION_COLUMNS, replay

    try:
        report = replay(settings, args.rules, args.t_from, args.t_to, warehouse=args.warehouse)
    except (FileNotFoundError, ValueError) as e:
        print(f"zhongtai replay: {e}", file=sys.stderr)
        return 1
    out = report.to_json()
    if args.decisions:
        out["decisions"] = [dict(zip(DECISION_COLUMNS, d, strict=True)) for d in report.decisions]
    print(json.dumps(out, indent=2, default=str))
    return 0


def register(sub: Any, settings_of: Any) -> None:
    p = sub.add_parser("sql", help="SQL (DuckDB, embedded) over the archive: events, actions, dlq, ...")
    p.add_argument("query", nargs="?", help="the query, e.g. \"SELECT event_type, count(*) FROM events GROUP BY 1\"")
    p.add_argument("--example", help="run a shipped query (--list shows them)")
    p.add_argument("--list", action="store_true", help="list the shipped queries")
    p.add_argument("--warehouse", help="warehouse URL or folder (default archive.path)")
    p.add_argument("--json", action="store_true", help="one JSON object per row")
    p.set_defaults(func=lambda args: cmd_sql(args, settings_of(args)))

    r = sub.add_parser("replay", help="what a rule set would have done over archived events (sends nothing)")
    r.add_argument("--rules", required=True, help="rule definitions file (YAML, as zhongtai rules validate takes)")
    r.add_argument("--from", dest="t_from", required=True, type=parse_time, help="window start: ms or ISO-8601")
    r.add_argument("--to", dest="t_to", required=True, type=parse_time, help="window end (excluded): ms or ISO-8601")
    r.add_argument("--warehouse", help="warehouse URL or folder (default archive.path)")
    r.add_argument("--decisions", action="store_true", help="also list every decision")
    r.set_defaults(func=lambda args: cmd_replay(args, settings_of(args)))
