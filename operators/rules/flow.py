"""A journey drawn as a flow (the visual builder's canvas) ↔ the definitions the job runs (pure).

The builder (``zhongtai/services/api/builder.py``) has no definition format of its own: a flow is only
what the canvas shows, and :func:`flow_to_document` turns it into the same ``journeys:`` + ``rules:``
document a user writes in YAML, which then goes through the same JSON Schema and checks
(``operators.rules.schema``) and the same publish path (``POST /v1/rules``). :func:`document_to_flow`
draws a running journey so it can be edited.

A flow is JSON::

    {"journey": {"id", "version", "name", "campaign", "exit": [event types], "reentry": false},
     "nodes": [{"id", "type", "x", "y", ...fields of the type}],
     "edges": [{"from": node id, "port": port name, "to": node id}]}

Node types and their fields / output ports (a port has at most one edge):

=========== ============================================================== ==========================
type        fields                                                         ports
=========== ============================================================== ==========================
entry       ``event`` (or ``tag_added``), ``where`` (expression, optional) ``next``
send        ``rule``: ``{id, version, channel, template, params, condition, ``next``
            quiet_hours: {start, end, mode}, extra}`` (one action;
            ``extra``: the rule's other fields, kept as they are)
wait        ``duration`` (``30m``, ``1d``)                                 ``next``
wait_for    ``event``, ``within``, ``where`` (optional)                    ``on_event``, ``on_timeout``
branch      ``branches``: ``[{"if": expression}]``                         ``if0``, ``if1``…, ``else``
end         —                                                              —
=========== ============================================================== ==========================

The entry's ``next`` is the journey's first step; the other steps follow in the order a walk from it
meets them (ports in the order above), which is the order the YAML lists them. A node the walk never
meets is a problem, not silently dropped. A send node's rule gets the trigger ``{journey: <id>}`` and
the journey's campaign; its id defaults to ``<journey>_<node>``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

NODE_TYPES = ("entry", "send", "wait", "wait_for", "branch", "end")
#: Output ports per node type (branch: ``if0``… then ``else``, see :func:`ports`).
_PORTS = {"entry": ("next",), "send": ("next",), "wait": ("next",), "wait_for": ("on_event", "on_timeout"),
          "branch": ("else",), "end": ()}
#: A send node's rule fields the builder's form edits; the rest of a rule (priority, group, caps, budget) rides
#: along in ``rule.extra`` so an edited journey keeps it.
_FORM_FIELDS = frozenset({"id", "version", "name", "campaign", "trigger", "condition", "actions"})
#: Horizontal / vertical distance between drawn nodes (document_to_flow's layout).
_DX, _DY = 220, 120


@dataclass(frozen=True)
class FlowProblem:
    """What is wrong with the drawing: the node (None: the journey's own fields), the field, what to do."""

    node: str | None
    field: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "field": self.field, "message": self.message}


class FlowError(ValueError):
    """The flow cannot become a document; ``problems`` lists every problem found."""

    def __init__(self, problems: Sequence[FlowProblem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{p.node or 'journey'}.{p.field}: {p.message}" for p in self.problems))


def ports(node: Mapping[str, Any]) -> tuple[str, ...]:
    """The output ports of ``node`` in walk order."""
    if node.get("type") == "branch":
        return (*(f"if{i}" for i in range(len(node.get("branches") or ()))), "else")
    return _PORTS.get(str(node.get("type")), ())


def flow_to_document(flow: Mapping[str, Any]) -> dict[str, Any]:
    """The ``{"journeys": [one], "rules": [one per send node]}`` document of ``flow``; ``FlowError`` lists
    every structural problem (the document itself is then checked by ``operators.rules.schema``)."""
    problems: list[FlowProblem] = []
    meta = flow.get("journey")
    if not isinstance(meta, Mapping):
        raise FlowError([FlowProblem(None, "journey", "the flow has no journey fields (id, version); add them")])
    jid = str(meta.get("id") or "")
    if not jid:
        problems.append(FlowProblem(None, "id", "the journey needs an id (lower case, digits, _ and -)"))
    nodes: dict[str, Mapping[str, Any]] = {}
    for n in flow.get("nodes") or ():
        nid = str(n.get("id") or "")
        if n.get("type") not in NODE_TYPES:
            problems.append(FlowProblem(nid or None, "type", f"unknown node type {n.get('type')!r}; "
                                        f"use one of {', '.join(NODE_TYPES)}"))
        elif not nid:
            problems.append(FlowProblem(None, "id", f"a {n.get('type')} node has no id; give it one"))
        elif nid in nodes:
            problems.append(FlowProblem(nid, "id", f"two nodes are called {nid!r}; rename one"))
        else:
            nodes[nid] = n
    links: dict[tuple[str, str], str] = {}
    for e in flow.get("edges") or ():
        src, port, dst = str(e.get("from")), str(e.get("port")), str(e.get("to"))
        if src not in nodes or dst not in nodes:
            problems.append(FlowProblem(src if src in nodes else None, port,
                                        f"an arrow joins {src!r} to {dst!r}, and one of them is not on the canvas"))
        elif port not in ports(nodes[src]):
            problems.append(FlowProblem(src, port, f"a {nodes[src]['type']} node has no output {port!r}"))
        elif (src, port) in links:
            problems.append(FlowProblem(src, port, f"output {port!r} has two arrows; keep one"))
        elif nodes[dst].get("type") == "entry":
            problems.append(FlowProblem(src, port, "an arrow cannot lead back to the entry"))
        else:
            links[(src, port)] = dst
    entries = [nid for nid, n in nodes.items() if n.get("type") == "entry"]
    if len(entries) != 1:
        problems.append(FlowProblem(None, "entry", f"a journey has exactly one entry node; the canvas has "
                                    f"{len(entries)}"))
        raise FlowError(problems)
    [entry_id] = entries
    entry = nodes[entry_id]
    first = links.get((entry_id, "next"))
    if first is None:
        problems.append(FlowProblem(entry_id, "next", "connect the entry to the first step"))
        raise FlowError(problems)
    order: list[str] = []
    todo = [first]
    while todo:  # depth-first in port order: the order a reader follows the arrows
        nid = todo.pop()
        if nid in order:
            continue
        order.append(nid)
        todo += reversed([links[(nid, p)] for p in ports(nodes[nid]) if (nid, p) in links])
    for nid, n in nodes.items():
        if nid != entry_id and nid not in order:
            problems.append(FlowProblem(nid, "id", "this node is not reachable from the entry; connect it or "
                                        "delete it"))
    steps: list[dict[str, Any]] = []
    rules: list[dict[str, Any]] = []
    for nid in order:
        n = nodes[nid]
        step: dict[str, Any] = {"id": nid}
        kind = n["type"]
        missing = [p for p in ports(n) if (nid, p) not in links]
        if missing:
            problems.append(FlowProblem(nid, missing[0], f"output {missing[0]!r} leads nowhere; connect it "
                                        "(an end node finishes the journey)"))
        if kind == "send":
            rule = _send_rule(n, meta, jid, problems)
            rules.append(rule)
            step["send"] = rule["id"]
        elif kind == "wait":
            step["wait"] = str(n.get("duration") or "")
        elif kind == "wait_for":
            wf: dict[str, Any] = {"event": str(n.get("event") or ""), "within": str(n.get("within") or "")}
            if n.get("where"):
                wf["where"] = str(n["where"])
            step["wait_for"] = wf
        elif kind == "branch":
            step["branch"] = [{"if": str(b.get("if") or ""), "next": links.get((nid, f"if{i}"), "")}
                              for i, b in enumerate(n.get("branches") or ())]
            if not step["branch"]:
                problems.append(FlowProblem(nid, "branches", "a branch needs at least one condition"))
        elif kind == "end":
            step["end"] = True
        for p in ports(n):
            if not p.startswith("if"):
                step[p] = links.get((nid, p), "")
        steps.append(step)
    if problems:
        raise FlowError(problems)
    journey: dict[str, Any] = {"id": jid, "version": meta.get("version", 1)}
    if meta.get("name"):
        journey["name"] = str(meta["name"])
    journey["entry"] = {k: entry[k] for k in ("event", "tag_added", "where") if entry.get(k)}
    exits = [str(x) for x in meta.get("exit") or () if x]
    if exits:
        journey["exit"] = [{"event": x} for x in exits]
    if meta.get("reentry"):
        journey["reentry"] = True
    journey["steps"] = steps
    return {"journeys": [journey], "rules": rules}


def _send_rule(n: Mapping[str, Any], meta: Mapping[str, Any], jid: str,
               problems: list[FlowProblem]) -> dict[str, Any]:
    r = n.get("rule") if isinstance(n.get("rule"), Mapping) else {}
    assert isinstance(r, Mapping)
    rule: dict[str, Any] = {"id": str(r.get("id") or f"{jid}_{n['id']}"), "version": r.get("version", 1)}
    if r.get("name"):
        rule["name"] = str(r["name"])
    if meta.get("campaign"):
        rule["campaign"] = str(meta["campaign"])
    rule["trigger"] = {"journey": jid}
    if r.get("condition"):
        rule["condition"] = str(r["condition"])
    action: dict[str, Any] = {"channel": str(r.get("channel") or ""), "template": str(r.get("template") or "")}
    params = r.get("params") or {}
    if not isinstance(params, Mapping):
        problems.append(FlowProblem(str(n["id"]), "params", "params must be a JSON object such as "
                                    '{"coupon": "VIP8"}'))
    elif params:
        action["params"] = dict(params)
    rule["actions"] = [action]
    extra = r.get("extra") if isinstance(r.get("extra"), Mapping) else {}
    assert isinstance(extra, Mapping)
    constraints = dict(extra.get("constraints") or {})
    constraints.pop("quiet_hours", None)
    qh = r.get("quiet_hours")
    if isinstance(qh, Mapping) and (qh.get("start") or qh.get("end")):
        constraints["quiet_hours"] = {k: qh[k] for k in ("start", "end", "timezone", "mode") if qh.get(k)}
    for k, v in extra.items():  # what the form does not show (priority, group, caps, budget...) is kept as it was
        if k not in rule and k not in ("constraints", "actions"):
            rule[k] = v
    if constraints:
        rule["constraints"] = constraints
    return rule


def document_to_flow(journey: Mapping[str, Any], rules: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The flow of a journey definition (as written), with the definitions of the rules its send steps
    name (``rules``: rule id → definition; a missing one leaves the node's rule with only its id). Nodes
    are laid out left to right in step order, a step's second output one row down."""
    steps = list(journey.get("steps") or ())
    campaign = next((rules[s["send"]].get("campaign") for s in steps if s.get("send") in rules), None)
    meta: dict[str, Any] = {"id": journey["id"], "version": journey.get("version", 1),
                            "name": journey.get("name", ""), "campaign": campaign or "",
                            "exit": [x["event"] for x in journey.get("exit") or () if x.get("event")],
                            "reentry": bool(journey.get("reentry"))}
    entry = {"id": "entry", "type": "entry", "x": 40, "y": 60,
             **{k: v for k, v in (journey.get("entry") or {}).items() if k in ("event", "tag_added", "where")}}
    nodes: list[dict[str, Any]] = [entry]
    edges: list[dict[str, str]] = [{"from": "entry", "port": "next", "to": steps[0]["id"]}] if steps else []
    rows: dict[str, int] = {}
    for i, s in enumerate(steps):
        row = rows.get(s["id"], 0)
        node: dict[str, Any] = {"id": s["id"], "x": 40 + (i + 1) * _DX, "y": 60 + row * _DY}
        if "send" in s:
            d = rules.get(s["send"]) or {"id": s["send"]}
            action = (d.get("actions") or [{}])[0]
            node.update(type="send", rule={
                "id": d["id"], "version": d.get("version", 1), "name": d.get("name", ""),
                "channel": action.get("channel", ""), "template": action.get("template", ""),
                "params": action.get("params") or {}, "condition": d.get("condition", ""),
                "quiet_hours": (d.get("constraints") or {}).get("quiet_hours") or {},
                "extra": {k: v for k, v in d.items() if k not in _FORM_FIELDS}})
        elif "wait" in s:
            node.update(type="wait", duration=s["wait"])
        elif "wait_for" in s:
            node.update(type="wait_for", **{k: s["wait_for"][k] for k in ("event", "within", "where")
                                             if k in s["wait_for"]})
        elif "branch" in s:
            node.update(type="branch", branches=[{"if": b["if"]} for b in s["branch"]])
            edges += [{"from": s["id"], "port": f"if{j}", "to": b["next"]} for j, b in enumerate(s["branch"])]
        else:
            node.update(type="end")
        for k, port in enumerate(p for p in ("next", "on_event", "on_timeout", "else") if p in s):
            edges.append({"from": s["id"], "port": port, "to": s[port]})
            rows.setdefault(s[port], row + k)
        nodes.append(node)
    return {"journey": meta, "nodes": nodes, "edges": edges}
