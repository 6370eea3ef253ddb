"""The identity graph (ID-Mapping) inside the event job: a thin Flink shell around ``operators.identity``.

``attach(t_env, settings)`` reads the view ``zt_combos`` (each distinct identifier combination once, at
its earliest ``(ts_ms, event_id)``; an earlier event of a known combination arrives as an update) and
registers three views:

* ``zt_id_map`` (identifier STRING, pid STRING; primary key identifier): an upsert table, identifier →
  person id; a DELETE when an identifier no longer belongs to any person (blocked).
* ``zt_identity_edges`` (a, b, accepted, reason, ts_ms, event_id): the edge log, append-only.
* ``zt_identity_changes`` (person, payload, ts_ms): merge/split/attach/detach records as JSON, append-only.

Why this shape (docs/identity.md, docs/performance.md): the per-event work stays on the JVM. Most events
repeat a combination the graph already knows; SQL drops those (``zt_combos``), so Python sees only new
combinations (~10 % of the events of the generated stream at 1M events). Those go through ONE keyed
Python function (key = a constant: the graph is global) in thread mode, which keeps the graph in Flink
keyed state, one codec blob per connected component (``state.identity``), and an identifier →
component index. The person profile is re-aggregated per person on the JVM by joining the anchor
buckets with ``zt_id_map`` (``pipelines.events.person_minutes_statement``), so merges and splits move whole
buckets exactly.

State (declared in ``state.identity``): MapState ``identity-components`` (cid → blob) and MapState
``identity-index`` (identifier → cid). No TTL: the graph is the platform's memory of who is who; it is
bounded by the number of distinct identifiers, not events.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:  # pragma: no cover
    from pyflink.table import StreamTableEnvironment

    from config.settings import Settings

logger = logging.getLogger(__name__)

#: Decoded components kept in the operator's memory in front of the state (cid → (blob, component)).
_CACHE_MAX = 50_000


def _function_class():  # noqa: ANN202 - built lazily: pyflink is only imported inside a job
    from pyflink.common import Row
    from pyflink.common.types import RowKind
    from pyflink.datastream.functions import KeyedCoProcessFunction

    from state.identity import component_state, encode_component, index_state, overlay_state

    class IdentityFunction(KeyedCoProcessFunction):
        """Input 1: one observation (a new identifier combination); input 2: an identity control
        message (split / block / unblock). Out: the graph's changes (``operators.identity``).

        Main output: (identifier, pid) rows with UPDATE_AFTER, or DELETE when pid is None.
        Side outputs: edges, changes and control results (see ``attach``).
        """

        def __init__(self, settings_json: str, edge_tag: Any, change_tag: Any, result_tag: Any) -> None:
            self._settings_json = settings_json
            self._edge_tag = edge_tag
            self._change_tag = change_tag
            self._result_tag = result_tag

        def open(self, ctx: Any) -> None:
            from config.settings import settings_from_json
            from operators.identity import IdentityRules
            from pipelines.runtime import share_interpreter

            share_interpreter()

            settings = settings_from_json(self._settings_json)
            self.static_rules = IdentityRules.from_settings(settings.identity, settings.pii, settings.event_schema)
            self.rules = self.static_rules
            self.id_types = settings.event_schema.id_types()
            self.components = ctx.get_map_state(component_state())
            self.index = ctx.get_map_state(index_state())
            self.overlay = ctx.get_state(overlay_state())
            self.overlay_loaded = False
            self.cache: dict[str, Any] = {}
            self.paths: dict[str, int] = {}

        def _component(self, cid: str) -> Any:
            from state.identity import decode_component

            c = self.cache.get(cid)
            if c is None:
                blob = self.components.get(cid)
                if blob is None:
                    raise RuntimeError(
                        f"identity: the index points at component {cid} which is not in state "
                        "(state from an incompatible version? restore from an older savepoint or start fresh)"
                    )
                c = decode_component(blob.encode("latin-1"), self.rules)
                if len(self.cache) >= _CACHE_MAX:
                    self.cache.clear()
                self.cache[cid] = c
            return c

        def _load_overlay(self) -> None:
            """The dynamic blocklist / isolation set by control messages (kept in keyed state)."""
            if not self.overlay_loaded:
                raw = self.overlay.value()
                if raw:
                    o = orjson.loads(raw)
                    self.rules = self.static_rules.with_blocked(o["blocked"]).with_isolated(o["isolated"])
                self.overlay_loaded = True

        def _emit(self, res: Any):  # noqa: ANN202 - a generator
            for cid in res.deletes:
                self.components.remove(cid)
                self.cache.pop(cid, None)
            for cid, comp in res.upserts.items():
                self.components.put(cid, encode_component(comp).decode("latin-1"))
                self.cache[cid] = comp
            for ident, cid in res.index.items():
                self.index.put(ident, cid)
            for ident, pid in sorted(res.mappings.items()):
                row = Row(ident, pid)
                row.set_row_kind(RowKind.DELETE if pid is None else RowKind.UPDATE_AFTER)
                yield row
            for e in res.edges:
                yield self._edge_tag, Row(e.a, e.b, e.accepted, e.reason, e.ts_ms, e.event_id)
            for c in res.changes:
                yield self._change_tag, Row(c.person, orjson.dumps(c.as_dict()).decode(), c.ts_ms)

        def process_element1(self, value: Any, ctx: Any):  # noqa: ANN201 - a generator
            """A bundle of new identifier combinations (JSON rows ``[ts, id_<type>..., ts_ms, event_id]``),
            folded one by one in their order (``pipelines.bundles``: one crossing per bundle)."""
            from operators.identity import Observation, step

            self._load_overlay()
            id_types = self.id_types
            n = len(id_types)
            for row in orjson.loads(value):
                ids = tuple((t, row[i + 1]) for i, t in enumerate(id_types) if row[i + 1] is not None)
                obs = Observation(ids, row[n + 1], row[n + 2])
                cids = {cid for t, v in ids if (cid := self.index.get(f"{t}:{v}")) is not None}
                res = step({cid: self._component(cid) for cid in cids}, obs, self.rules)
                if res.path in ("noop", "fast"):
                    continue
                yield from self._emit(res)

        def process_element2(self, value: Any, ctx: Any):  # noqa: ANN201 - a generator
            """A control message: ``{"kind": "identity", "op": ..., "identifier": ..., "version": n}``."""
            from operators.identity import ControlError, apply_control, control

            self._load_overlay()
            payload, ts_ms = value[0], value[1]
            result = {"kind": "identity", "status": "applied", "reason": None, "ts_ms": ts_ms}
            try:
                msg = orjson.loads(payload)
                result.update(op=msg.get("op"), identifier=msg.get("identifier"), version=msg.get("version"))
                cmd = apply_control(msg, self.rules)
            except (orjson.JSONDecodeError, ControlError, AttributeError) as e:
                result.update(status="rejected", reason=f"{type(e).__name__}: {e}")
                yield self._result_tag, Row(orjson.dumps(result).decode(), ts_ms)
                return
            cid = self.index.get(cmd.identifier)
            comps = {cid: self._component(cid)} if cid is not None else {}
            self.rules, res = control(comps, cmd, self.rules, ts_ms, str(msg.get("cause") or ""))
            self.overlay.update(orjson.dumps({
                "blocked": sorted(self.rules.blocked_identifiers),
                "isolated": sorted(self.rules.isolated_identifiers),
            }).decode())
            result["changed"] = len(res.mappings)
            yield from self._emit(res)
            yield self._result_tag, Row(orjson.dumps(result).decode(), ts_ms)

    return IdentityFunction


def attach(t_env: StreamTableEnvironment, settings: Settings, control_view: str | None = None) -> None:
    """Run ``zt_combos`` through the graph; register ``zt_id_map``, ``zt_identity_edges``,
    ``zt_identity_changes`` and ``zt_identity_control_results`` (payload STRING, ts_ms BIGINT).

    ``control_view`` (payload STRING, ts_ms BIGINT) carries identity control messages (split, block,
    unblock: ``operators.identity.apply_control``); without it the graph takes none.
    """
    from pyflink.common import Types
    from pyflink.datastream import OutputTag
    from pyflink.table import DataTypes, Schema
    from pyflink.table.changelog_mode import ChangelogMode

    from config.settings import settings_to_json
    from pipelines.bundles import keyed_bundles

    # Every new combination (an earlier event of a known one comes as an update: its UPDATE_BEFORE is
    # dropped) to ONE key, bundled on the JVM: one crossing into Python per bundle, not per combination.
    id_cols = ", ".join(f"id_{t}" for t in settings.event_schema.id_types())
    combos = keyed_bundles(t_env, t_env.sql_query(
        f"SELECT 'g' AS k, ts_ms AS ts, {id_cols}, ts_ms, event_id FROM TO_CHANGELOG(input => TABLE zt_combos) "
        "WHERE op IN ('INSERT', 'UPDATE_AFTER')"), ts_field=None, max_delay_ms=settings.job.bundle_ms,
        max_rows=settings.job.bundle_rows, name="identity")

    def payload_types() -> Any:  # a fresh type per use: a type already bound to Java does not pickle
        return Types.ROW_NAMED(["payload", "ts_ms"], [Types.STRING(), Types.LONG()])

    if control_view:
        control = t_env.to_data_stream(t_env.sql_query(f"SELECT payload, ts_ms FROM {control_view}"))
    else:
        from pyflink.datastream import StreamExecutionEnvironment

        control = StreamExecutionEnvironment.get_execution_environment().from_collection([], payload_types())
    edge_types = Types.ROW_NAMED(
        ["a", "b", "accepted", "reason", "ts_ms", "event_id"],
        [Types.STRING(), Types.STRING(), Types.BOOLEAN(), Types.STRING(), Types.LONG(), Types.STRING()],
    )
    change_types = Types.ROW_NAMED(["person", "payload", "ts_ms"], [Types.STRING(), Types.STRING(), Types.LONG()])
    # Tags are created per job (a module-level tag fails to pickle in a second job of one process).
    edge_tag = OutputTag("identity-edges", edge_types)
    change_tag = OutputTag("identity-changes", change_types)
    result_tag = OutputTag("identity-control-results", payload_types())
    fn = _function_class()(settings_to_json(settings), edge_tag, change_tag, result_tag)
    graph = (
        combos.connect(control.key_by(lambda _row: "g", key_type=Types.STRING()))
        .process(fn, output_type=Types.ROW_NAMED(["identifier", "pid"], [Types.STRING(), Types.STRING()]))
        .name("identity-graph")
        .uid("zt-identity-graph-v2")  # v2: key "g" (STRING) and bundled input; v1 keyed by INT 0
    )
    id_map = t_env.from_changelog_stream(
        graph,
        Schema.new_builder()
        .column("identifier", DataTypes.STRING().not_null())
        .column("pid", DataTypes.STRING())
        .primary_key("identifier")
        .build(),
        ChangelogMode.upsert(),
    )
    t_env.create_temporary_view("zt_id_map", id_map)
    t_env.create_temporary_view("zt_identity_edges", t_env.from_data_stream(graph.get_side_output(edge_tag)))
    t_env.create_temporary_view("zt_identity_changes", t_env.from_data_stream(graph.get_side_output(change_tag)))
    t_env.create_temporary_view(
        "zt_identity_control_results", t_env.from_data_stream(graph.get_side_output(result_tag))
    )


def control_results_insert(sink: str) -> str:
    """INSERT of the control results (applied / rejected with reason) into a DLQ-shaped Kafka table."""
    return f"""
INSERT INTO {sink}
SELECT ENCODE(payload, 'UTF-8'), MAP['zt.kind', ENCODE('identity', 'UTF-8')], CAST(NULL AS TIMESTAMP_LTZ(3))
FROM zt_identity_control_results"""


def control_view_statement(source: str, view: str = "zt_identity_control") -> str:
    """The identity messages of the raw control topic table ``source`` (payload BYTES, kts)."""
    return f"""
CREATE TEMPORARY VIEW {view} AS
SELECT s AS payload, COALESCE(TRY_CAST(JSON_VALUE(s, '$.ts_ms') AS BIGINT), UNIX_TIMESTAMP(DATE_FORMAT(kts, 'yyyy-MM-dd HH:mm:ss')) * 1000) AS ts_ms
FROM (SELECT CAST(payload AS STRING) AS s, kts FROM {source})
WHERE JSON_VALUE(s, '$.kind') = 'identity'"""


def changes_insert(sink: str) -> str:
    """INSERT of the identity changes into a Kafka table shaped like the DLQ sink (payload, headers, ts)."""
    return f"""
INSERT INTO {sink}
SELECT ENCODE(payload, 'UTF-8'), MAP['zt.person', ENCODE(person, 'UTF-8')], CAST(NULL AS TIMESTAMP_LTZ(3))
FROM zt_identity_changes"""
