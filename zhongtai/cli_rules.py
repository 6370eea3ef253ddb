"""``zhongtai rules``: validate, publish, list, pause, resume and delete rules, patterns and journeys.

Hot reload through the control topic (docs/rules.md, "Command line"): the running job applies every
message with ``operators.rules.registry.apply_control`` and answers on ``kafka.topics.control_results``.
The operations live in ``zhongtai.services.api.rules`` (shared with the REST API); this module only parses
arguments and prints. Registered through ``_EXTENSIONS`` in zhongtai/cli.py; nothing happens at import.

Exit codes: 0 done (with ``--wait``: applied), 1 invalid / rejected / no result in time, 2 Kafka or file
unreachable.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from config.settings import Settings


def _err(verb: str, text: str) -> None:
    print(f"zhongtai rules {verb}: {text}", file=sys.stderr)


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    from operators.rules.schema import DefinitionError
    from zhongtai.services.api.rules import load_definitions_file, summary

    bad = 0
    for path in args.files:
        try:
            defs, _ = load_definitions_file(path)
        except OSError as e:
            _err("validate", f"{path}: cannot read it ({e.strerror}); check the path")
            bad += 1
            continue
        except DefinitionError as e:
            for p in e.problems:
                print(str(p), file=sys.stderr)
            print(f"{path}: {len(e.problems)} problem(s)", file=sys.stderr)
            bad += 1
            continue
        print(f"{path}: ok, {summary(defs)}")
    return 1 if bad else 0


class _RulesFileError(Exception):
    pass


def _view(args: argparse.Namespace, settings: Settings) -> Any:
    """The folded rule set; :class:`_RulesFileError` when the job's rules file is unreadable or invalid."""
    from operators.rules.schema import DefinitionError
    from zhongtai.services.api.rules import RuleSetView

    try:
        return RuleSetView(settings, args.rules_file)
    except OSError as e:
        raise _RulesFileError(f"the rules file the job starts from, {e.filename}, cannot be read ({e.strerror}); "
                              "give it with --rules-file") from None
    except DefinitionError as e:
        raise _RulesFileError(f"the rules file the job starts from is invalid, so the job would not start:\n{e}") from None


def _send(verb: str, args: argparse.Namespace, settings: Settings, msg: dict[str, Any]) -> int:
    """Publish ``msg`` (checked against the folded rule set unless ``--no-check``); with ``--wait``
    print the job's answer."""
    from connectors.control import PublishError, ReadError
    from zhongtai.services.api.rules import Rejected, message_label, no_result_hint, wait_result

    try:
        published = _view(args, settings).publish(msg, check=not args.no_check)
    except _RulesFileError as e:
        _err(verb, str(e))
        return 2
    except Rejected as e:
        _err(verb, f"not sent: the job would reject it: {e} (to send it anyway: --no-check)")
        return 1
    except (PublishError, ReadError) as e:
        _err(verb, str(e))
        return 2
    print(f"published {message_label(msg)} to {published.topic} (partition {published.partition}, "
          f"offset {published.offset})")
    if not args.wait:
        return 0
    try:
        res = wait_result(settings, published, args.wait)
    except ReadError as e:
        _err(verb, str(e))
        return 2
    if res is None:
        _err(verb, no_result_hint(settings, args.wait))
        return 1
    if not res.get("ok"):
        _err(verb, f"rejected by the job: {res.get('reason')}")
        return 1
    note = f" ({res['reason']})" if res.get("reason") else ""
    print(f"applied: rule set version {res.get('ruleset_version')}{note}")
    for warn in res.get("unrouted_event_types") or ():
        print(f"warning: event type {warn!r} is not routed to the engine by the running job; restart it "
              "to take that trigger into account", file=sys.stderr)
    return 0


def cmd_publish(args: argparse.Namespace, settings: Settings) -> int:
    from operators.rules.schema import DefinitionError
    from zhongtai.services.api.rules import load_definitions_file

    try:
        _, msg = load_definitions_file(args.file)
    except OSError as e:
        _err("publish", f"{args.file}: cannot read it ({e.strerror}); check the path")
        return 2
    except DefinitionError as e:
        for p in e.problems:
            print(str(p), file=sys.stderr)
        _err("publish", f"{args.file}: not published, fix the {len(e.problems)} problem(s) above first")
        return 1
    if args.dry_run:
        print(json.dumps(msg, ensure_ascii=False, sort_keys=True))
        return 0
    return _send("publish", args, settings, msg)


def cmd_control(args: argparse.Namespace, settings: Settings) -> int:
    from zhongtai.services.api.rules import control_message

    msg = control_message(args.op, args.id, kind=args.kind, version=args.version)
    return _send(args.op, args, settings, msg)


def _table(listing: dict[str, Any], results: bool) -> str:
    head = ["KIND", "ID", "VERSION", "STATUS", "PRIORITY", "TRIGGER", "CHANNELS"] + (["LAST RESULT"] if results else [])
    lines = [head]
    for it in listing["items"]:
        row = [it["kind"], it["id"], str(it["version"]), it["status"],
               "" if it["priority"] is None else str(it["priority"]), it["trigger"], ",".join(it["channels"]) or "-"]
        if results:
            r = it.get("last_result")
            row.append("-" if r is None else f"{r['op']} v{r['version']} " + (
                "ok" if r["ok"] else f"rejected: {r['reason']}"))
        lines.append(row)
    widths = [max(len(r[i]) for r in lines) for i in range(len(head) - 1)]
    out = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] for r in lines]
    out.append(f"rule set version {listing['ruleset_version']}: {listing['rules_file']} + {listing['applied']} "
               f"applied / {listing['rejected']} rejected control message(s) on {listing['control_topic']}")
    return "\n".join(out)


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from connectors.control import ReadError

    try:
        listing = _view(args, settings).listing(results=args.results)
    except (ReadError, _RulesFileError) as e:
        _err("list", str(e))
        return 2
    if args.json:
        print(json.dumps(listing, indent=2, ensure_ascii=False))
    else:
        print(_table(listing, args.results))
    return 0


def register(subparsers: Any, settings_of: Callable[[argparse.Namespace], Settings]) -> None:
    """Add ``rules validate|publish|list|pause|resume|delete`` to the ``zhongtai`` parser."""
    ru = subparsers.add_parser("rules", help="rules, patterns, journeys: validate, publish, list, pause, delete")
    sub = ru.add_subparsers(dest="action", required=True)

    def bind(cmd: Callable[[argparse.Namespace, Settings], int]) -> Callable[[argparse.Namespace], int]:
        return lambda args: cmd(args, settings_of(args))

    def job_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--rules-file", default=None,
                       help="the file the job started from (as `zhongtai run --rules-file`; default config/rules.yaml)")

    def send_options(p: argparse.ArgumentParser) -> None:
        job_options(p)
        p.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                       help="wait this long for the job's answer on kafka.topics.control_results")
        p.add_argument("--no-check", action="store_true",
                       help="send even if apply_control on the current rule set rejects the message")

    va = sub.add_parser("validate", help="check definitions files offline (errors name file, line and path)")
    va.add_argument("files", nargs="+", metavar="FILE")
    va.set_defaults(func=bind(cmd_validate))

    pu = sub.add_parser("publish", help="validate FILE, then send it as one all-or-nothing batch")
    pu.add_argument("file", metavar="FILE")
    pu.add_argument("--dry-run", action="store_true", help="print the batch message instead of sending it")
    send_options(pu)
    pu.set_defaults(func=bind(cmd_publish))

    li = sub.add_parser("list", help="the rule set as the job has it (rules file + control topic)")
    li.add_argument("--json", action="store_true", help="JSON instead of the table")
    li.add_argument("--results", action="store_true", help="also the job's last result per id")
    job_options(li)
    li.set_defaults(func=bind(cmd_list))

    for op, text in (("pause", "stop triggering (kept, can be resumed)"), ("resume", "trigger again after a pause"),
                     ("delete", "remove (state of it is cleaned up by the job)")):
        p = sub.add_parser(op, help=f"{text}: one control message")
        p.add_argument("id", metavar="ID")
        p.add_argument("--kind", choices=["rule", "pattern", "journey"], default="rule")
        p.add_argument("--version", type=int, default=None, help="the running version (refused if it differs)")
        send_options(p)
        p.set_defaults(func=bind(cmd_control), op=op)
