"""The visual builder's server side: the page, and what the page asks of the API (docs/builder.md).

The page (``builder_page.PAGE``, plain SVG + vanilla JS, served by the API itself) draws a journey as a
flow; everything a flow *means* is decided here, in Python, with the code the job runs:

- :func:`flow_document`: flow → the ``journeys:`` + ``rules:`` document (``operators.rules.flow``), checked
  with the same JSON Schema and checks as a YAML file (``check_document``); problems come back with the
  node they belong to, so the page marks it;
- :func:`diff_against_running`: the document's items against the rule set the job has now (the API's
  :class:`~zhongtai.services.api.rules.RuleSetView`), as unified diffs of the YAML a user would write;
- :func:`check_expression`: one condition through ``compile_expr`` with the rules' names; an error gives
  the offset and length of the exact token, which the page underlines;
- :func:`estimate_audience`: who the flow would reach now, from the profiles and tags in Redis.

Publishing is ``POST /v1/rules`` with the document (the version check there answers 409 on a stale
version), so the builder has no second way to change the job.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.routing import Route

from operators.rules.flow import FlowError, FlowProblem, document_to_flow, flow_to_document

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import Settings
    from connectors.redis_store import RedisStore

    from .rules import RuleSetView

#: Profiles read for an audience estimate at most (a larger population is sampled, the count scaled).
AUDIENCE_SAMPLE = 2000
_STEP_PATH = re.compile(r"^\$\.journeys\[0\]\.steps\[(\d+)\]")
_RULE_PATH = re.compile(r"^\$\.rules\[(\d+)\]")


def _yaml(obj: Any) -> str:
    import yaml

    return yaml.safe_dump(obj, allow_unicode=True, sort_keys=False, default_flow_style=False)


def flow_document(flow: Mapping[str, Any]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """``(document, [])`` when the flow is a valid definitions document, else ``(None, problems)``; a
    problem is ``{node, field, message}`` (node None: the journey's own fields or the document)."""
    from operators.rules.schema import DefinitionError

    from .rules import check_document

    try:
        doc = flow_to_document(flow)
    except FlowError as e:
        return None, [p.to_json() for p in e.problems]
    try:
        check_document(_yaml(doc), "<builder>")
    except DefinitionError as e:
        steps = [s["id"] for s in doc["journeys"][0]["steps"]]
        senders = [s["id"] for s in doc["journeys"][0]["steps"] if "send" in s]
        out = []
        for p in e.problems:
            node, field = _node_of(p.path, steps, senders)
            out.append(FlowProblem(node, field, p.message).to_json())
        return None, out
    return doc, []


def _node_of(path: str, steps: Sequence[str], senders: Sequence[str]) -> tuple[str | None, str]:
    """The node a JSON path of the document points into, and the rest of the path as its field."""
    m = _STEP_PATH.match(path)
    if m and int(m.group(1)) < len(steps):
        return steps[int(m.group(1))], path[m.end():].lstrip(".") or "id"
    m = _RULE_PATH.match(path)
    if m and int(m.group(1)) < len(senders):
        return senders[int(m.group(1))], "rule" + path[m.end():]
    if path.startswith("$.journeys[0].entry"):
        return "entry", path[len("$.journeys[0].entry"):].lstrip(".") or "event"
    return None, path.removeprefix("$.journeys[0]").lstrip(".") or "$"


def unrouted_warnings(doc: Mapping[str, Any], routed: frozenset[str]) -> list[dict[str, Any]]:
    """A warning per event type the journey waits on that the running job does not route to the engine
    (``RuleSet.routed_event_types``): the definition would be applied, and never see those events."""
    journey = doc["journeys"][0]
    uses: list[tuple[str | None, str, Any]] = [("entry", "event", journey.get("entry", {}).get("event"))]
    uses += [(s["id"], "event", s["wait_for"]["event"]) for s in journey["steps"] if "wait_for" in s]
    uses += [(None, "exit", x.get("event")) for x in journey.get("exit") or ()]
    return [FlowProblem(node, field, f"the running job does not route {etype!r} events to the rules engine, so "
                        f"this step would never see one: add {etype!r} to job.rules_event_types (or to a rule of "
                        "the job's rules file) and restart the job from a savepoint").to_json()
            for node, field, etype in uses if etype and etype not in routed]


def diff_against_running(view: RuleSetView, doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per item of ``doc``: kind, id, the running and the new version, ``status`` (new, changed,
    unchanged) and a unified diff of the YAML (empty when unchanged)."""
    rs = view.refresh()
    out = []
    for section, kind in (("journeys", "journey"), ("rules", "rule")):
        for d in doc.get(section) or ():
            running = rs.get(kind, d["id"])
            old = view.definitions.get((kind, d["id"])) if running is not None else None
            old_text = _yaml(old) if old is not None else ""
            new_text = _yaml(d)
            status = "new" if running is None else "unchanged" if _same(old, d) else "changed"
            diff = "".join(difflib.unified_diff(old_text.splitlines(keepends=True), new_text.splitlines(keepends=True),
                                                f"running/{kind}/{d['id']}", f"builder/{kind}/{d['id']}"))
            out.append({"kind": kind, "id": d["id"], "running_version": None if running is None else running.version,
                        "version": d.get("version"), "status": status, "diff": "" if status == "unchanged" else diff})
    return out


def _same(old: Any, new: Mapping[str, Any]) -> bool:
    """Equal apart from the version (a re-publish of the same definition is still "unchanged")."""
    if not isinstance(old, Mapping):
        return False
    return {k: v for k, v in old.items() if k != "version"} == {k: v for k, v in new.items() if k != "version"}


def running_flow(view: RuleSetView, journey_id: str) -> dict[str, Any] | None:
    """The flow of the running journey ``journey_id`` (None when there is none), for editing."""
    rs = view.refresh()
    if rs.get("journey", journey_id) is None:
        return None
    journey = view.definitions.get(("journey", journey_id))
    if not isinstance(journey, Mapping):
        return None
    rules = {rid: d for (kind, rid), d in view.definitions.items() if kind == "rule" and isinstance(d, Mapping)
             and rs.get("rule", rid) is not None}
    return document_to_flow(journey, rules)


def check_expression(text: str) -> dict[str, Any]:
    """``{"ok": true, "kind"}`` or ``{"ok": false, "message", "offset", "length"}``: the error's token as a
    0-based offset into ``text`` and its length (at least 1), for the page to underline."""
    from operators.expr import ExprError, compile_expr
    from operators.rules.schema import EXPR_NAMES

    try:
        e = compile_expr(text, source="condition", names=EXPR_NAMES)
    except ExprError as err:
        offset = max(0, min(err.offset, len(text)))
        m = re.match(r"[A-Za-z_][A-Za-z0-9_.]*|'[^']*'|\"[^\"]*\"|\d+(?:\.\d+)?|\S", text[offset:])
        return {"ok": False, "message": err.message, "offset": offset, "length": len(m.group(0)) if m else 1}
    return {"ok": True, "kind": e.kind}


def estimate_audience(store: RedisStore, doc: Mapping[str, Any], now_ms: int,
                      sample: int = AUDIENCE_SAMPLE) -> dict[str, Any]:
    """Who the journey would reach now, from Redis (docs/builder.md "Audience").

    The population is the entry's tag members (``tag_added``) or every person with a profile (an event
    entry: any of them may send it). Of a sample of at most ``sample`` of them, ``entry`` pass the entry's
    ``where`` and each send step's rule its required tags and condition, evaluated on the person's profile
    and tags now with no event (an expression reading the event sees null). Counts of the sample are
    scaled to the population and marked ``exact`` when the sample is the whole population.
    """
    from operators.expr import compile_expr
    from operators.rules.inputs import rules_profile
    from operators.rules.prefilter import required_tags
    from operators.rules.schema import EXPR_NAMES

    journey = doc["journeys"][0]
    entry = journey.get("entry") or {}
    if entry.get("tag_added"):
        population = sorted(store.tag_members(entry["tag_added"]))
    else:
        population = store.persons()
    population.sort()
    chosen = population if len(population) <= sample else population[:: max(1, len(population) // sample)][:sample]
    where = compile_expr(entry["where"], names=EXPR_NAMES) if entry.get("where") else None
    senders = {s["send"]: s["id"] for s in journey["steps"] if "send" in s}
    checks = [(senders[r["id"]], required_tags(r.get("condition")),
               compile_expr(r["condition"], names=EXPR_NAMES) if r.get("condition") else None)
              for r in doc.get("rules") or () if r["id"] in senders]
    entered = 0
    per_step = {node: 0 for node, _, _ in checks}
    for pid in chosen:
        profile = rules_profile(store.profile(pid, now_ms))
        tags = frozenset(store.tags_of(pid))
        env = {"profile": profile, "tags": tags, "person": {"id": pid}, "event": None, "match": None,
               "journey": {"id": journey["id"]}}
        if where is not None and where.evaluate(env, now_ms) is not True:
            continue
        entered += 1
        for node, req, cond in checks:
            if req <= tags and (cond is None or cond.evaluate(env, now_ms) is True):
                per_step[node] += 1
    scale = len(population) / len(chosen) if chosen else 0.0
    return {"population": len(population), "sampled": len(chosen), "exact": len(chosen) == len(population),
            "entry": round(entered * scale), "steps": {k: round(v * scale) for k, v in per_step.items()}}


# ---- routes (added to the API by ``create_app``) ---------------------------------------------------


def builder_routes(settings: Settings, view: RuleSetView, prefix: str | None) -> list[Route]:
    """``GET /builder`` (the page) and the ``/v1/builder/*`` routes it calls (docs/api.md)."""
    import time

    import anyio.to_thread
    import orjson
    from redis.exceptions import RedisError
    from starlette.responses import HTMLResponse, JSONResponse, Response

    from connectors.control import ReadError

    from .builder_page import PAGE

    def error(status: int, message: str, **details: Any) -> JSONResponse:
        return JSONResponse({"error": message, **details}, status_code=status)

    async def json_body(request: Request) -> Any:
        try:
            return orjson.loads(await request.body())
        except orjson.JSONDecodeError as e:
            raise ValueError(f"the body is not JSON ({e}); send the flow as application/json") from None

    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE)

    async def post_document(request: Request) -> Response:
        """The definitions a flow stands for.
        ---
        summary: "A drawn journey (flow JSON) → its definitions document, checked, with the diff against the running version"
        requestBody: {required: true, content: {application/json: {schema: {type: object}}}}
        responses:
          200: {description: "{document, yaml, diff: [{kind, id, running_version, version, status, diff}],
            warnings: [{node, field, message}]}"}
          400: {description: "the body is not a JSON object"}
          422: {description: "{error, problems: [{node, field, message}]}: nothing can be published"}
          503: {description: "Kafka unreachable (the running version is read from the control topic)"}
        """
        try:
            flow = await json_body(request)
        except ValueError as e:
            return error(400, str(e))
        if not isinstance(flow, Mapping):
            return error(400, "send the flow as a JSON object {journey, nodes, edges}")
        doc, problems = flow_document(flow)
        if doc is None:
            return error(422, f"the flow has {len(problems)} problem(s); fix the marked nodes", problems=problems)
        try:
            diff = await anyio.to_thread.run_sync(lambda: diff_against_running(view, doc))
        except ReadError as e:
            return error(503, f"Kafka cannot be reached ({e}); is the stack up (`zhongtai stack status`)?")
        routed = view.initial.routed_event_types(settings.job.rules_event_types)
        return JSONResponse({"document": doc, "yaml": _yaml(doc), "diff": diff,
                             "warnings": unrouted_warnings(doc, routed)})

    async def get_flow(request: Request) -> Response:
        """A running journey as a flow.
        ---
        summary: "The running journey drawn as a flow, for editing"
        parameters:
          - {name: id, in: path, required: true, schema: {type: string}}
        responses:
          200: {description: "{journey, nodes, edges}"}
          404: {description: "no running journey has this id"}
        """
        jid = request.path_params["id"]
        try:
            flow = await anyio.to_thread.run_sync(lambda: running_flow(view, jid))
        except ReadError as e:
            return error(503, f"Kafka cannot be reached ({e}); is the stack up (`zhongtai stack status`)?")
        if flow is None:
            return error(404, f"no running journey {jid!r}; GET /v1/rules lists them")
        return JSONResponse(flow)

    async def post_expression(request: Request) -> Response:
        """Check one condition.
        ---
        summary: "Compile a condition as a rule's would be; an error names the exact token (offset, length)"
        requestBody: {required: true, content: {application/json: {schema: {type: object,
          properties: {text: {type: string}}}}}}
        responses:
          200: {description: "{ok: true, kind} or {ok: false, message, offset, length}"}
          400: {description: "no text"}
        """
        try:
            body = await json_body(request)
        except ValueError as e:
            return error(400, str(e))
        text = body.get("text") if isinstance(body, Mapping) else None
        if not isinstance(text, str):
            return error(400, 'send {"text": "<condition>"}')
        return JSONResponse(check_expression(text))

    async def post_audience(request: Request) -> Response:
        """Estimate a flow's audience now.
        ---
        summary: "Persons the drawn journey would reach now (entry and each send step), from Redis"
        requestBody: {required: true, content: {application/json: {schema: {type: object}}}}
        responses:
          200: {description: "{population, sampled, exact, entry, steps: {node: persons}}"}
          422: {description: "the flow has problems (as for /v1/builder/document)"}
          503: {description: "Redis unreachable"}
        """
        from connectors.redis_store import RedisStore

        try:
            flow = await json_body(request)
        except ValueError as e:
            return error(400, str(e))
        doc, problems = flow_document(flow) if isinstance(flow, Mapping) else (None, [])
        if doc is None:
            return error(422, "fix the flow's problems first", problems=problems)

        def estimate() -> dict[str, Any]:
            store = RedisStore(settings.redis, prefix=prefix)
            try:
                return estimate_audience(store, doc, int(time.time() * 1000))
            finally:
                store.close()

        try:
            return JSONResponse(await anyio.to_thread.run_sync(estimate))
        except RedisError as e:
            return error(503, f"Redis cannot be reached ({e}); is the stack up (`zhongtai stack status`)?")

    return [
        Route("/builder", page, methods=["GET"], include_in_schema=False),
        Route("/v1/builder/document", post_document, methods=["POST"]),
        Route("/v1/builder/flows/{id}", get_flow, methods=["GET"]),
        Route("/v1/builder/audience", post_audience, methods=["POST"]),
        Route("/v1/expressions/check", post_expression, methods=["POST"]),
    ]
