"""The REST API: an ASGI (Starlette) app over profiles, rules and experiments (docs/api.md).

Routes (JSON in and out; every error is ``{"error": "...what to do"}`` plus details):

- ``GET /v1/profiles/{identifier}``: ``type:value`` (raw phone / e-mail are hashed as the job does,
  ``zhongtai.services.profiles.get_profile``) or a person id (``p`` + 16 hex) → person, identifiers, tags,
  profile; 400 malformed, 404 unknown;
- ``GET /v1/recommendations/{identifier}?k=10``: the person's recommended items with scores
  (``zhongtai.services.recommendations``; empty until the job, with ``recs.enabled``, has seen their items);
- ``GET /v1/prices/{item}``: the item's list price and what it was made of (``zhongtai.services.prices``; the
  same for everyone, docs/pricing.md), 404 when not priced; ``GET /v1/offers/{identifier}?at=ms``: the
  person's offers still valid (now, or at ``at``);
- ``GET /v1/rules``, ``GET /v1/rules/{id}``, ``POST /v1/rules`` (a YAML / JSON definitions document:
  422 with every problem, 409 when the job would reject it, else 202 with the control message id),
  ``POST /v1/rules/{id}/pause|resume``, ``DELETE /v1/rules/{id}``: ``zhongtai.services.api.rules``, the same
  code as ``zhongtai rules``;
- ``GET /v1/experiments``, ``GET /v1/experiments/{key}`` (the numbers of ``zhongtai experiment report
  --json``), ``POST /v1/experiments`` (definitions, published as ``zhongtai experiment publish`` does);
- ``GET /v1/audit?limit=50&after=ROW``: the audit log of control changes made through the API, newest first
  (``zhongtai.services.api.audit``);
- ``GET /builder`` (the visual journey builder, never needs a key) and the ``/v1/builder/*``,
  ``/v1/expressions/check`` routes it calls (``zhongtai.services.api.builder``, docs/builder.md);
- ``GET /healthz`` (Redis and Kafka reachable; never needs a key), ``GET /metrics`` (Prometheus:
  ``zhongtai_api_requests_total{route,status}``, ``zhongtai_api_request_seconds{route}``, route =
  the route template), ``GET /openapi.json``.

With a token (``api.token`` / env ``ZT_API_TOKEN``, given to :func:`create_app`) or ``api.require_keys``, every
other route needs ``Authorization: Bearer <API key or token>`` with the route's scope, within the key's rate
limit (``zhongtai.services.api.gateway``, the route → scope table in ``zhongtai.services.api.keys``). Redis and
Kafka clients are synchronous: handlers run them in a worker thread. Nothing connects at import time;
:func:`create_app` only builds objects.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from redis.exceptions import NoPermissionError, RedisError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.schemas import SchemaGenerator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connectors.control import PublishError, ReadError
from zhongtai.services.prices import get_offers as person_offers
from zhongtai.services.prices import get_price as item_price
from zhongtai.services.profiles import get_profile as get_person_profile
from zhongtai.services.recommendations import get_recommendations as person_recommendations

from .audit import AuditLog, AuditUnavailable, entry
from .builder import builder_routes
from .gateway import Gateway
from .keys import ROUTE_SCOPES, SCOPES, required_scope
from .rules import (
    Rejected,
    RuleSetView,
    check_document,
    control_message,
    ensure_control_topic,
    no_result_hint,
    wait_result,
)

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    from config.settings import Settings

def _error(status: int, message: str, **details: Any) -> JSONResponse:
    return JSONResponse({"error": message, **details}, status_code=status)


def _unavailable(e: Exception) -> JSONResponse:
    if isinstance(e, NoPermissionError):  # a secured Redis refused this API's user (docs/security.md)
        return _error(503, f"Redis refused the API's user ({e}): give it read access to the tenant's keys "
                           "(docs/security.md), or start the API with the tenant's --namespace")
    what = "Redis" if isinstance(e, RedisError) else "Kafka"
    return _error(503, f"{what} cannot be reached ({type(e).__name__}: {e}); is the stack up (`zhongtai stack status`)?")


# ---- middleware ----------------------------------------------------------------------------------


class ApiMetrics:
    """The app's own registry (several apps in one process never collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("zhongtai_api_requests", "API requests by route template and status",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("zhongtai_api_request_seconds", "API request latency by route template",
                                 ["route"], registry=self.registry)


def route_template(routes: list[BaseRoute], scope: Scope) -> str:
    """The path template of the route ``scope`` goes to (``/v1/rules/{id}``), ``other`` when none."""
    for route in routes:
        match, _ = route.matches(scope)
        if match != Match.NONE:
            return getattr(route, "path", "other")
    return "other"


class _Observe:
    """Counts and times every HTTP request by route template (low cardinality) and status."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, routes: list[BaseRoute]) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = route_template(self.routes, scope)
        status = ["500"]
        t0 = time.perf_counter()

        async def observed(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = str(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            self.metrics.requests.labels(route, status[0]).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - t0)


# ---- profiles and experiments (thin: the project's own functions) ----------------------------------


def experiment_reports(settings: Settings, prefix: str | None) -> list[dict[str, Any]]:
    """One report per experiment found in Redis (the dashboard's reader: same numbers)."""
    from connectors.redis_store import RedisStore
    from zhongtai.services.dashboard.experiments import ReportSettings
    from zhongtai.services.dashboard.reader import DashboardReader

    cfg = settings.experiments
    store = RedisStore(settings.redis, prefix=prefix)
    try:
        reader = DashboardReader(store, discover_every_s=0.0,
                                 report=ReportSettings(cfg.alpha, cfg.correction, cfg.target_n))
        return reader.experiments()
    finally:
        store.close()


def experiment_report(settings: Settings, key: str, prefix: str | None, *, primary: str = "conversion",
                      alpha: float | None = None, correction: str | None = None,
                      target_n: float | None = None) -> dict[str, Any] | None:
    """What ``zhongtai experiment report KEY --json`` prints (definition from Redis, else the
    definitions file); None when the experiment is unknown."""
    from connectors.redis_experiments import RedisExperiments
    from operators.experiments.report import experiment_report as report
    from operators.experiments.report import to_json
    from zhongtai.cli_experiments import _definition

    cfg = settings.experiments
    store = RedisExperiments(settings.redis, prefix=prefix)
    try:
        defn = _definition(settings, store, key, None)
        if defn is None:
            return None
        stats = store.read_stats(defn.key, defn.variations)
    finally:
        store.close()
    return to_json(report(defn.experiment, stats, alpha or cfg.alpha, correction=correction or cfg.correction,
                          target_n=target_n or cfg.target_n, primary=primary))


def publish_experiments(settings: Settings, text: str) -> list[dict[str, Any]]:
    """Validate ``experiments: [...]`` and send one upsert per definition, as ``zhongtai experiment
    publish`` does. Raises ``DefinitionError`` / ``PublishError``."""
    from connectors.control import publish_at
    from operators.experiments.definitions import control_message as experiment_message
    from operators.experiments.definitions import parse_definitions

    defs = parse_definitions(text, "<request body>")
    ensure_control_topic(settings)
    messages = [experiment_message("upsert", d.key, d.version, d) for d in defs]
    topic = settings.kafka.topics.control
    landed = publish_at(settings, messages, topic=topic, key_of=lambda m: f"experiment:{m['key']}")
    return [{"key": d.key, "version": d.version, "message_id": f"{topic}/{p}/{o}"}
            for d, (p, o) in zip(defs, landed, strict=True)]


def experiments_before(settings: Settings, text: str, prefix: str | None) -> dict[str, tuple[Any, Any, int]]:
    """For the audit log: key → (``{version, definition}`` the job recorded in Redis or None, the new definition,
    its version) of each definition in ``text``; ``{}`` when ``text`` does not parse (the publish says why)."""
    from connectors.redis_experiments import RedisExperiments
    from operators.experiments.definitions import DefinitionError as ExperimentError
    from operators.experiments.definitions import parse_definitions

    try:
        defs = parse_definitions(text, "<request body>")
    except ExperimentError:
        return {}
    store = RedisExperiments(settings.redis, prefix=prefix)
    out: dict[str, tuple[Any, Any, int]] = {}
    try:
        for d in defs:
            try:
                old = store.definition(d.key)
            except ValueError:  # a bad recorded definition: the change is still audited, without the old side
                old = None
            out[d.key] = ({"version": old.version, "definition": old.to_dict()} if old else None, d.to_dict(),
                          d.version)
    finally:
        store.close()
    return out


# ---- the app -------------------------------------------------------------------------------------


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise _BadRequest(f"query parameter {name}={raw!r} is not an integer") from None


def _float_param(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        raise _BadRequest(f"query parameter {name}={raw!r} is not a number") from None


class _BadRequest(ValueError):
    pass


def _problems(e: Any) -> list[dict[str, Any]]:
    return [{"file": p.file, "line": p.line, "column": p.column, "object": p.obj, "path": p.path,
             "message": p.message, "text": str(p)} for p in e.problems]


async def _run(fn: Callable[..., Any], *args: Any) -> Any:
    return await anyio.to_thread.run_sync(lambda: fn(*args))


def create_app(settings: Settings, *, token: str | None = None, prefix: str | None = None,
               rules_file: str | Path | None = None, hbase_prefix: str | None = None,
               clock: Callable[[], float] = time.time) -> Starlette:
    """The ASGI app. ``token``: the legacy bearer token, an ``admin`` key (None and ``api.require_keys`` off:
    open); ``prefix``: Redis key prefix of profiles and API keys (default ``redis.prefix``); ``rules_file``: the
    file the job started from (default config/rules.yaml); ``hbase_prefix``: the audit table's namespace
    (default ``hbase.namespace``); ``clock``: epoch seconds of the rate limits and audit entries.
    ``app.state.rules`` is the :class:`~zhongtai.services.api.rules.RuleSetView` (kept between requests: each
    request folds only the new control records)."""
    import zhongtai
    from connectors.api_keys import RedisApiKeys
    from operators.experiments.definitions import DefinitionError as ExperimentError
    from operators.rules.schema import DefinitionError

    from .tenant import tenant_prefix

    tenant_prefix(settings, prefix)  # one tenant per instance (tenant.py)
    view = RuleSetView(settings, rules_file)
    metrics = ApiMetrics()
    audit = AuditLog(settings, hbase_prefix)
    auth = bool(token) or settings.api.require_keys

    async def get_profile(request: Request) -> Response:
        """Profile of a person.
        ---
        summary: "A person's identifiers, live tags and rolling profile"
        parameters:
          - {name: identifier, in: path, required: true, schema: {type: string},
             description: "type:value (user_id, unionid, openid, phone, email, device_id, cookie_id;
               raw phone / e-mail are hashed as the job does) or a person id (p + 16 hex)"}
          - {name: as_of, in: query, schema: {type: integer}, description: "evaluate windows at this epoch ms"}
        responses:
          200: {description: "{identifier, person, identifiers, tags, profile}"}
          400: {description: "malformed identifier"}
          404: {description: "no person has this identifier"}
        """
        return await _by_identifier(request, lambda ident: _run(get_person_profile, settings, ident,
                                                                 _int_param(request, "as_of"), prefix))

    async def _by_identifier(request: Request, look_up: Callable[[str], Awaitable[Any]]) -> Response:
        """``look_up(identifier)`` of the path's identifier: 400 for a malformed one, 503 when Redis does not
        answer, 404 when no person has it."""
        ident = request.path_params["identifier"]
        try:
            out = await look_up(ident)
        except (ValueError, _BadRequest) as e:
            return _error(400, str(e))
        except RedisError as e:
            return _unavailable(e)
        if not out:
            return _error(404, f"no person has identifier {ident!r} (prefix {prefix or settings.redis.prefix!r}); "
                               "check the type and value, or whether the job has seen it yet")
        return JSONResponse(out)

    async def get_recommendations(request: Request) -> Response:
        """A person's recommendations.
        ---
        summary: "Items similar to the person's recent items, minus those and their purchases (docs/recommendations.md)"
        parameters:
          - {name: identifier, in: path, required: true, schema: {type: string},
             description: "type:value or a person id, as for /v1/profiles"}
          - {name: k, in: query, schema: {type: integer, minimum: 1, maximum: 100, default: 10}}
        responses:
          200: {description: "{identifier, person, items: [{item, score}]} (items empty: nothing recent yet)"}
          400: {description: "malformed identifier or k"}
          404: {description: "no person has this identifier"}
        """
        def look_up(ident: str) -> Awaitable[Any]:
            k = _int_param(request, "k")
            return _run(person_recommendations, settings, ident, 10 if k is None else k, prefix)

        return await _by_identifier(request, look_up)

    async def get_price(request: Request) -> Response:
        """An item's list price.
        ---
        summary: "The item's list price in force, with its inputs and reasons (docs/pricing.md); the same for everyone"
        parameters:
          - {name: item, in: path, required: true, schema: {type: string}}
        responses:
          200: {description: "{item, price, price_cents, since_ms, policy, variant, reasons, explanation, list_price_policy}"}
          404: {description: "the job has not priced this item (pricing.enabled off, or no inventory event yet)"}
        """
        item = request.path_params["item"]
        try:
            out = await _run(item_price, settings, item, prefix)
        except RedisError as e:
            return _unavailable(e)
        if not out:
            return _error(404, f"no list price for item {item!r} (prefix {prefix or settings.redis.prefix!r}); the "
                               "job prices an item once pricing.enabled is on and an inventory event gave its cost "
                               "and base price")
        return JSONResponse(out)

    async def get_offers(request: Request) -> Response:
        """A person's offers.
        ---
        summary: "The person's personal offers still valid (docs/pricing.md)"
        parameters:
          - {name: identifier, in: path, required: true, schema: {type: string},
             description: "type:value or a person id, as for /v1/profiles"}
          - {name: at, in: query, schema: {type: integer}, description: "valid at this epoch ms (default: now)"}
        responses:
          200: {description: "{identifier, person, offers: [{offer_id, item, offer_price, list_price, expires_ms, ...}]}"}
          400: {description: "malformed identifier or at"}
          404: {description: "no person has this identifier"}
        """
        def look_up(ident: str) -> Awaitable[Any]:
            at = _int_param(request, "at")
            return _run(person_offers, settings, ident, int(time.time() * 1000) if at is None else at, prefix)

        return await _by_identifier(request, look_up)

    async def list_rules(request: Request) -> Response:
        """The rule set as the job has it.
        ---
        summary: "Every rule, pattern and journey (rules file + control topic, folded like the job)"
        parameters:
          - {name: results, in: query, schema: {type: boolean}, description: "add the job's last result per id"}
        responses:
          200: {description: "{ruleset_version, rules_file, control_topic, applied, rejected, items}"}
          503: {description: "Kafka unreachable"}
        """
        results = request.query_params.get("results", "").lower() in ("1", "true", "yes")
        try:
            return JSONResponse(await _run(lambda: view.listing(results=results)))
        except ReadError as e:
            return _unavailable(e)

    async def get_rule(request: Request) -> Response:
        """One rule, pattern or journey.
        ---
        summary: "One id with its definition and the job's last result about it"
        parameters:
          - {name: id, in: path, required: true, schema: {type: string}}
          - {name: kind, in: query, schema: {type: string, enum: [rule, pattern, journey]}}
        responses:
          200: {description: "the row, its definition and last_result"}
          404: {description: "unknown id"}
          409: {description: "the id exists under several kinds: give ?kind="}
        """
        oid, kind = request.path_params["id"], request.query_params.get("kind")
        if kind is not None and kind not in ("rule", "pattern", "journey"):
            return _error(400, f"kind={kind!r}: use rule, pattern or journey")
        try:
            found = await _run(view.find, oid, kind)
        except ReadError as e:
            return _unavailable(e)
        if not found:
            return _error(404, f"no {kind or 'rule, pattern or journey'} {oid!r} in the running rule set; "
                               "GET /v1/rules lists them")
        if len(found) > 1:
            return _error(409, f"{oid!r} is the id of a {' and a '.join(f['kind'] for f in found)}; add ?kind=",
                          kinds=[f["kind"] for f in found])
        return JSONResponse(found[0])

    def _before(msg: dict[str, Any]) -> list[dict[str, Any] | None]:
        """Each item's running ``{version, definition}`` before ``msg`` (the audit log's "old")."""
        items = msg["items"] if msg.get("kind") == "batch" else [msg]
        return [next(iter(view.find(i["id"], i["kind"])), None)
                if i.get("kind") in ("rule", "pattern", "journey") and i.get("id") else None for i in items]

    def _audited(request: Request, msg: dict[str, Any], old: list[dict[str, Any] | None], message_id: str) -> None:
        items = msg["items"] if msg.get("kind") == "batch" else [msg]
        now = int(clock() * 1000)
        audit.write_logged([entry(now, request.state.key_id, i.get("kind"), i.get("id"), i.get("op"), o, i.get("definition"),
                                  i.get("version"), message_id) for i, o in zip(items, old, strict=True)])

    async def _send(request: Request, msg: dict[str, Any]) -> Response:
        check = request.query_params.get("check", "true").lower() not in ("0", "false", "no")
        wait = _float_param(request, "wait")
        try:
            old = await _run(_before, msg)
            published = await _run(lambda: view.publish(msg, check=check))
        except Rejected as e:
            return _error(409, f"the job would reject this: {e}; nothing was sent (?check=false sends anyway)",
                          result=e.result.to_json())
        except (PublishError, ReadError) as e:
            return _unavailable(e)
        body = published.to_json()
        await _run(_audited, request, msg, old, body["message_id"])
        if wait:
            try:
                body["result"] = await _run(wait_result, settings, published, wait)
            except ReadError as e:
                return _unavailable(e)
            if body["result"] is None:
                body["hint"] = no_result_hint(settings, wait)
        return JSONResponse(body, status_code=202)

    async def post_rules(request: Request) -> Response:
        """Publish a definitions document.
        ---
        summary: "Validate a YAML / JSON definitions document and publish it as one all-or-nothing batch"
        requestBody:
          required: true
          content:
            application/yaml: {schema: {type: string}}
            application/json: {schema: {type: object}}
        parameters:
          - {name: wait, in: query, schema: {type: number}, description: "seconds to wait for the job's result"}
          - {name: check, in: query, schema: {type: boolean}, description: "false: skip the apply_control check"}
        responses:
          202: {description: "published: {message_id, topic, partition, offset, items, predicted[, result]}"}
          409: {description: "the job would reject it (stale version, dangling reference); nothing sent"}
          422: {description: "invalid document: {error, problems: [{file, line, column, object, path, message}]}"}
        """
        text = (await request.body()).decode("utf-8", errors="replace")
        try:
            _, msg = check_document(text, "<request body>")
        except DefinitionError as e:
            return _error(422, f"the document has {len(e.problems)} problem(s); nothing was published",
                          problems=_problems(e))
        try:
            return await _send(request, msg)
        except _BadRequest as e:
            return _error(400, str(e))

    def control(op: str) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            kind = request.query_params.get("kind", "rule")
            try:
                msg = control_message(op, request.path_params["id"], kind=kind, version=_int_param(request, "version"))
                return await _send(request, msg)
            except (ValueError, _BadRequest) as e:
                return _error(400, str(e))

        endpoint.__name__ = f"{op}_rule"
        endpoint.__doc__ = f"""{op.capitalize()} one rule, pattern or journey.
        ---
        summary: "Send a {op} control message"
        parameters:
          - {{name: id, in: path, required: true, schema: {{type: string}}}}
          - {{name: kind, in: query, schema: {{type: string, enum: [rule, pattern, journey], default: rule}}}}
          - {{name: version, in: query, schema: {{type: integer}}, description: "the running version"}}
          - {{name: wait, in: query, schema: {{type: number}}, description: "seconds to wait for the job's result"}}
        responses:
          202: {{description: "published: {{message_id, items, predicted[, result]}}"}}
          400: {{description: "bad kind or version"}}
          409: {{description: "the job would reject it (unknown id, other version); nothing sent"}}
        """
        return endpoint

    async def list_experiments(request: Request) -> Response:
        """Every experiment in Redis with its report.
        ---
        summary: "Reports of every experiment the job measures"
        responses:
          200: {description: "{experiments: [report]}"}
        """
        try:
            return JSONResponse({"experiments": await _run(experiment_reports, settings, prefix)})
        except RedisError as e:
            return _unavailable(e)

    async def get_experiment(request: Request) -> Response:
        """One experiment's report.
        ---
        summary: "The numbers of `zhongtai experiment report KEY --json`"
        parameters:
          - {name: key, in: path, required: true, schema: {type: string}}
          - {name: primary, in: query, schema: {type: string, enum: [conversion, revenue]}}
          - {name: alpha, in: query, schema: {type: number}}
          - {name: correction, in: query, schema: {type: string, enum: [holm, bh]}}
          - {name: target_n, in: query, schema: {type: number}}
        responses:
          200: {description: "the report"}
          404: {description: "unknown experiment"}
          409: {description: "the experiment cannot be reported (e.g. a bad definition in Redis)"}
        """
        key = request.path_params["key"]
        q = request.query_params
        primary, correction = q.get("primary", "conversion"), q.get("correction")
        if primary not in ("conversion", "revenue") or correction not in (None, "holm", "bh"):
            return _error(400, "primary must be conversion|revenue and correction holm|bh")
        try:
            alpha, target_n = _float_param(request, "alpha"), _float_param(request, "target_n")
            out = await _run(lambda: experiment_report(settings, key, prefix, primary=primary, alpha=alpha,
                                                       correction=correction, target_n=target_n))
        except _BadRequest as e:
            return _error(400, str(e))
        except RedisError as e:
            return _unavailable(e)
        except (ValueError, ExperimentError) as e:
            return _error(409, f"experiment {key!r} cannot be reported: {e}")
        if out is None:
            return _error(404, f"no experiment {key!r} in Redis or {settings.experiments.definitions_file}; "
                               "GET /v1/experiments lists them")
        return JSONResponse(out)

    async def post_experiments(request: Request) -> Response:
        """Publish experiment definitions.
        ---
        summary: "Validate `experiments: [...]` (YAML or JSON) and send one upsert per definition"
        requestBody:
          required: true
          content:
            application/yaml: {schema: {type: string}}
        responses:
          202: {description: "{published: [{key, version, message_id}]}"}
          422: {description: "{error, problems: [text]}"}
        """
        text = (await request.body()).decode("utf-8", errors="replace")
        try:
            before = await _run(experiments_before, settings, text, prefix)
            published = await _run(publish_experiments, settings, text)
        except ExperimentError as e:
            return _error(422, f"{len(e.errors)} problem(s); nothing was published", problems=list(e.errors))
        except (PublishError, RedisError) as e:
            return _unavailable(e)
        now = int(clock() * 1000)
        entries = []
        for p in published:
            old, new, version = before.get(p["key"], (None, None, p["version"]))
            entries.append(entry(now, request.state.key_id, "experiment", p["key"], "upsert", old, new, version,
                                 p["message_id"]))
        await _run(audit.write_logged, entries)
        return JSONResponse({"published": published}, status_code=202)

    async def get_audit(request: Request) -> Response:
        """The audit log.
        ---
        summary: "Control changes made through the API (who, what, old and new version, diff), newest first"
        parameters:
          - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 500, default: 50}}
          - {name: after, in: query, schema: {type: string}, description: "the previous page's next"}
        responses:
          200: {description: "{entries: [{ts_ms, key, kind, id, op, old_version, new_version, diff, message_id}],
            next}"}
          503: {description: "HBase unreachable"}
        """
        try:
            limit = _int_param(request, "limit") or 50
        except _BadRequest as e:
            return _error(400, str(e))
        if not 1 <= limit <= 500:
            return _error(400, f"limit={limit}: give 1 to 500")
        try:
            return JSONResponse(await _run(audit.read, limit, request.query_params.get("after") or None))
        except AuditUnavailable as e:
            return _error(503, str(e))

    async def healthz(request: Request) -> Response:
        """Liveness of the dependencies.
        ---
        summary: "Redis and Kafka reachable (200) or not (503, with what to check)"
        responses:
          200: {description: "{ok: true, redis: ok, kafka: ok}"}
          503: {description: "{ok: false, redis, kafka}"}
        """
        from connectors.control import kafka_error
        from connectors.redis_clients import redis_address, redis_client

        def redis_error() -> str | None:
            client = None
            try:
                client = redis_client(settings.redis, socket_timeout=2)
                client.ping()
            except RedisError as e:
                return (f"{redis_address(settings.redis)} does not answer ({e}); "
                        "is the stack up (`zhongtai stack status`)?")
            finally:
                if client is not None:
                    client.close()
            return None

        r, k = await _run(redis_error), await _run(lambda: kafka_error(settings, timeout_s=2.0))
        body = {"ok": r is None and k is None, "redis": r or "ok", "kafka": k or "ok"}
        return JSONResponse(body, status_code=200 if body["ok"] else 503)

    async def prometheus(request: Request) -> Response:
        """Prometheus metrics.
        ---
        summary: "zhongtai_api_requests_total{route,status}, zhongtai_api_request_seconds{route}"
        responses:
          200: {description: "Prometheus text format"}
        """
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    schemas = SchemaGenerator({
        "openapi": "3.0.3",
        "info": {"title": "zhongtai API", "version": getattr(zhongtai, "__version__", "0"),
                 "description": "Profiles, rules and experiments of the zhongtai marketing platform (docs/api.md)."},
        "components": {"securitySchemes": {"bearer": {
            "type": "http", "scheme": "bearer",
            "description": "An API key (`zhongtai keys create`, ztk_<id>_<secret>) or the legacy api.token (an "
                           "admin key). Each operation's x-scope names the scope it needs; scopes: "
                           + "; ".join(f"{k}: {v}" for k, v in SCOPES.items())}}},
        **({"security": [{"bearer": []}]} if auth else {}),
    })

    def with_scopes(doc: dict[str, Any]) -> dict[str, Any]:
        """Each operation's ``x-scope`` (and an empty ``security`` on the open ones)."""
        templates = {re.sub(r":\w+}", "}", path): path for _, path in ROUTE_SCOPES} | {"/healthz": "/healthz"}
        for path, ops in doc.get("paths", {}).items():
            for method, op in ops.items():
                needed = required_scope(method.upper(), templates.get(path, path))
                if needed is None:
                    op["security"] = []
                else:
                    op["x-scope"] = needed
        return doc

    async def openapi(request: Request) -> Response:
        """The OpenAPI document.
        ---
        summary: "This document"
        responses:
          200: {description: "OpenAPI 3 JSON"}
        """
        return JSONResponse(with_scopes(schemas.get_schema(routes=request.app.routes)))

    routes: list[BaseRoute] = [
        Route("/v1/profiles/{identifier:path}", get_profile, methods=["GET"]),
        Route("/v1/recommendations/{identifier:path}", get_recommendations, methods=["GET"]),
        Route("/v1/prices/{item:path}", get_price, methods=["GET"]),
        Route("/v1/offers/{identifier:path}", get_offers, methods=["GET"]),
        Route("/v1/rules", list_rules, methods=["GET"]),
        Route("/v1/rules", post_rules, methods=["POST"]),
        Route("/v1/rules/{id}", get_rule, methods=["GET"]),
        Route("/v1/rules/{id}", control("delete"), methods=["DELETE"]),
        Route("/v1/rules/{id}/pause", control("pause"), methods=["POST"]),
        Route("/v1/rules/{id}/resume", control("resume"), methods=["POST"]),
        Route("/v1/experiments", list_experiments, methods=["GET"]),
        Route("/v1/experiments", post_experiments, methods=["POST"]),
        Route("/v1/experiments/{key}", get_experiment, methods=["GET"]),
        Route("/v1/audit", get_audit, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"], include_in_schema=False),
        *builder_routes(settings, view, prefix),
    ]
    middleware = [Middleware(_Observe, metrics=metrics, routes=routes),
                  Middleware(Gateway, cfg=settings.api, routes=routes, route_of=route_template, token=token,
                             store=RedisApiKeys(settings.redis, prefix) if auth else None, clock=clock)]
    app = Starlette(routes=routes, middleware=middleware)
    app.state.rules, app.state.metrics = view, metrics
    return app
