"""The person operator: profile, tags and (optionally) the strategy engine in ONE keyed Python function.

A thin Flink shell around ``operators.person`` (docs/person.md). ``attach_person(t_env, settings, ...)``
reads

* ``person_minutes_view`` (updating: person, mb, n_views, n_carts, n_purchases, n_events, n_gmv,
  first_ts, last_ts, last_purchase): every changelog row, UPDATE_BEFORE included (it carries the
  bucket's old value, so the profile moves by differences without reading its minute buckets);
* with a rule set, ``events_view`` (append-only: person, event_id, event_type, ts_ms, campaign, channel,
  amount, item_id, props), filtered in SQL to the rule set's event types before anything reaches Python;
* ``control_view`` (optional, append-only: payload STRING): control messages of kind ``tag`` and of the
  engine's kinds (rule, pattern, journey, batch, policy), on the broadcast side;

and registers the append-only views ``zt_tag_changes`` (person, tag, op, ts_ms, cause, tagset_version,
payload), ``zt_actions`` / ``zt_suppressed`` (with a rule set; as ``pipelines.rules`` documented them),
``zt_control_results_tags`` and ``zt_rules_control_results`` (payload; with a control view).

The JVM side (``pipelines.bundles.keyed_bundles``): the two inputs as one SQL ``UNION ALL`` of one row
shape (``operators.person.ROW_COLUMNS``), event time from its ``ts`` column with bounded out-of-orderness
``job.watermark_delay_ms`` (a Java assigner: no Python per row), the rows of each person packed into one
record per flush (``job.bundle_ms``, and before every watermark and checkpoint barrier), keyed by person.
Per bundle the function reads the person's state at most once (a cache of decoded persons in front of
it: this instance is the only writer of its keys) and writes it once; the minute buckets go to MapState
one put per changed minute; the timer is touched only when the person's next time changed.

Late events: the watermark trails the newest event time by ``job.watermark_delay_ms`` (5 s), not by the
lateness the decoder accepts (1 h). A late event is still applied: its bucket corrects the profile and
the tags are evaluated again (a tag a timer flipped too early flips back at once); a pattern takes it as
long as its own ``lateness`` allows (docs/rules.md). So a time-based tag flips, and an absence pattern
acts, seconds after its time in live traffic, not an hour after.

Actions with a campaign budget go through the campaign-keyed ``budget_step`` (``pipelines.rules``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:  # pragma: no cover
    from pyflink.table import StreamTableEnvironment

    from config.schema import EventSchema
    from config.settings import Settings
    from operators.rules.registry import RuleSet
    from operators.tags import TagSet

logger = logging.getLogger(__name__)

#: Decoded persons kept in front of the state per parallel instance (their minute buckets are not).
_CACHE_MAX = 20_000
OUT_FIELDS = ("kind", "action_id", "channel", "person", "rule_id", "reason", "ts_ms", "payload", "campaign")
RULE_CONTROL_KINDS = ("rule", "pattern", "journey", "batch", "policy")


#: The columns of ``events_view`` (plus ``props``, the envelope's props as JSON text).
EVENT_COLUMNS = ("person", "event_id", "event_type", "ts_ms", "campaign", "channel", "amount", "item_id")


def event_row_type() -> Any:
    """The DataStream row type of ``events_view``'s columns but ``props`` (for feeding a view from a
    DataStream in tests and benches)."""
    from pyflink.common import Types

    s = Types.STRING()
    return Types.ROW_NAMED(list(EVENT_COLUMNS), [s, s, s, Types.LONG(), s, s, Types.BIG_DEC(), s])


def _log() -> logging.Logger:
    return logging.getLogger(__name__)


def input_sql(person_minutes_view: str, events_view: str | None, event_types: Iterable[str],
              props: str = "CAST(NULL AS STRING)", traits_view: str | None = None) -> str:
    """One append-only query over the person inputs: key, then ``operators.person.ROW_COLUMNS``.
    ``props``: the events view's column (or expression) with the envelope's props as JSON text;
    ``traits_view``: the person trait partials (``operators.traits.person_traits_statement``), if any."""
    ns, nn = "CAST(NULL AS STRING)", "CAST(NULL AS BIGINT)"
    parts = [f"""
SELECT person AS k, CAST(COALESCE(last_ts, mb * 60000) AS BIGINT) AS ts, 'm' AS kind, op AS s1, CAST(mb AS BIGINT) AS n1,
  CAST(n_views AS BIGINT) AS n2, CAST(n_carts AS BIGINT) AS n3, CAST(n_purchases AS BIGINT) AS n4,
  CAST(n_events AS BIGINT) AS n5, CAST(n_gmv AS STRING) AS s2, CAST(first_ts AS BIGINT) AS n6,
  CAST(last_ts AS BIGINT) AS n7, CAST(last_purchase AS BIGINT) AS n8, {ns} AS s3, {ns} AS s4, {ns} AS s5,
  {ns} AS s6, {ns} AS s7
FROM TO_CHANGELOG(input => TABLE {person_minutes_view})
WHERE person IS NOT NULL"""]
    if traits_view:
        # a partial is set as a whole: its UPDATE_BEFORE carries nothing the operator needs
        parts.append(f"""
SELECT person, CAST(mb * 60000 AS BIGINT), 'x', op, CAST(mb AS BIGINT), CAST(n AS BIGINT), {nn}, {nn}, {nn},
  CAST(s AS STRING), {nn}, {nn}, {nn}, trait, dv, CONCAT(CAST(lo AS STRING), ',', CAST(hi AS STRING)), fst, lst
FROM TO_CHANGELOG(input => TABLE {traits_view})
WHERE person IS NOT NULL AND op <> 'UPDATE_BEFORE'""")
    types = sorted(event_types)
    if events_view and types:
        quoted = ", ".join("'" + t.replace("'", "''") + "'" for t in types)
        parts.append(f"""
SELECT person, CAST(ts_ms AS BIGINT), 'e', event_id, CAST(ts_ms AS BIGINT), {nn}, {nn}, {nn}, {nn},
  CAST(amount AS STRING), {nn}, {nn}, {nn}, event_type, campaign, channel, item_id, {props}
FROM {events_view} WHERE event_type IN ({quoted}) AND person IS NOT NULL""")
    return "\nUNION ALL".join(parts)


class MapRows:
    """``operators.profile.RowStore`` over the person's MapState: writes buffered until :meth:`flush`
    (one put or remove per changed minute per bundle), reads served from the buffer first."""

    __slots__ = ("_dirty", "_state")

    def __init__(self, state: Any) -> None:
        self._state = state
        self._dirty: dict[int, Any] = {}

    def get(self, minute: int) -> Any:
        from state.person import decode_bucket

        if minute in self._dirty:
            return self._dirty[minute]
        raw = self._state.get(minute)
        return decode_bucket(raw) if raw is not None else None

    def put(self, minute: int, bucket: Any) -> None:
        self._dirty[minute] = bucket

    def remove(self, minute: int) -> None:
        self._dirty[minute] = None

    def items(self) -> Iterator[tuple[int, Any]]:
        from state.person import decode_bucket

        seen = set()
        for m, raw in list(self._state.items()):
            seen.add(m)
            b = self._dirty[m] if m in self._dirty else decode_bucket(raw)
            if b is not None:
                yield m, b
        for m, b in list(self._dirty.items()):
            if m not in seen and b is not None:
                yield m, b

    def flush(self) -> None:
        from state.person import encode_bucket

        for m, b in self._dirty.items():
            if b is None:
                self._state.remove(m)
            else:
                self._state.put(m, encode_bucket(b))
        self._dirty.clear()


def _row_out(kind: str, a: Any, reason: str | None, payload: dict[str, Any]) -> Any:
    from pyflink.common import Row

    return Row(kind, a.action_id, a.channel, a.person_id, a.rule_id, reason, a.ts_ms,
               orjson.dumps(payload).decode(), a.campaign)


def _function_class(tagset_json: str, ruleset: RuleSet | None, routed: frozenset[str], result_tag: Any,
                    slack: int, schema: EventSchema | None = None) -> type:
    from operators.traits import compile_traits

    traits = compile_traits(schema) if schema is not None and schema.traits else ()
    from pyflink.common import Row
    from pyflink.datastream.functions import KeyedBroadcastProcessFunction

    from operators.person import END_OF_INPUT, PersonState, on_rows, run_due
    from operators.profile import Profile
    from operators.rules.registry import apply_control
    from state import rules as rules_state
    from state.person import decode_person, encode_person, minutes_state, person_state
    from state.tags import TAGSET_KEY, decode_tagset, encode_tagset, tagset_state

    class PersonFunction(KeyedBroadcastProcessFunction):
        """Key = person; value = a bundle (JSON rows). Broadcast side: control messages."""

        def open(self, ctx: Any) -> None:
            from pipelines.runtime import share_interpreter, subtask_index

            share_interpreter()
            self.person = ctx.get_state(person_state())
            self.minutes = ctx.get_map_state(minutes_state())
            self.subtask = subtask_index(ctx)
            self.tagset = decode_tagset(tagset_json)
            self.rs = ruleset
            self.loaded = False
            self.log_len = 0
            self.cache: dict[str, Any] = {}
            self.counts = {"bundles": 0, "rows": 0, "timers": 0, "state_reads": 0}

        def close(self) -> None:
            _log().info("person operator subtask %s: %s", getattr(self, "subtask", "?"), getattr(self, "counts", {}))

        # -- broadcast state (the tag set and the rule set), read back once after a restore

        def _ensure(self, ctx: Any) -> None:
            if self.loaded:
                return
            snap = ctx.get_broadcast_state(tagset_state()).get(TAGSET_KEY)
            if snap is not None:
                self.tagset = decode_tagset(snap)
            if ruleset is not None:
                rs = ruleset
                entries = sorted(ctx.get_broadcast_state(rules_state.control_log_state()).items())
                for _, msg in entries:
                    rs, res = apply_control(rs, orjson.loads(msg))
                    if not res.ok:  # cannot happen for a log of accepted changes over the same start set
                        _log().error("rules: replaying the control log failed: %s", res.reason)
                self.rs, self.log_len = rs, len(entries)
            self.loaded = True

        # -- the person's state

        def _load(self, key: str) -> Any:
            st = self.cache.pop(key, None)
            if st is not None:
                return st
            raw = self.person.value()
            self.counts["state_reads"] += 1
            return decode_person(key, raw) if raw else PersonState(key, Profile.empty())

        def _save(self, key: str, st: Any, ctx: Any) -> None:
            # The one timer sits up to `slack` after the next due time: an active person's due work is then
            # usually done at its next bundle (run_due), without a callback; it is moved only when it would
            # be early or more than `slack` late (two calls into the JVM).
            nxt = st.next_timer
            fine = (nxt and nxt <= st.timer_ms <= nxt + slack) or (not nxt and not st.timer_ms)
            if not fine:
                ts = ctx.timer_service()
                if st.timer_ms:
                    ts.delete_event_time_timer(st.timer_ms)
                st.timer_ms = min(nxt + slack, END_OF_INPUT - 1) if nxt else 0
                if st.timer_ms:
                    ts.register_event_time_timer(st.timer_ms)
            if st.is_empty():
                self.person.clear()
                return
            self.person.update(encode_person(st))
            if len(self.cache) >= _CACHE_MAX:
                del self.cache[next(iter(self.cache))]
            self.cache[key] = st

        def _emit(self, outs: list[Any]) -> Iterator[Any]:
            for o in outs:
                k, it = o.kind, o.item
                if k == "tag":
                    yield Row("t", it.tag, it.op, it.person, it.cause, str(it.tagset_version), it.ts_ms,
                              orjson.dumps(it.as_record()).decode(), None)
                elif k == "trait":
                    yield Row("v", it.trait, None, it.person, None, None, it.ts_ms,
                              orjson.dumps(it.value).decode(), None)
                elif k == "action":
                    yield _row_out("a", it, None, it.to_json())
                elif k == "budget":
                    yield _row_out("b", it, None, it.to_json())
                else:
                    yield _row_out("s", it.action, it.reason, it.to_json())

        def process_element(self, value: Any, ctx: Any):  # noqa: ANN201 - a generator
            self._ensure(ctx)
            key = ctx.get_current_key()
            st = self._load(key)
            rows = orjson.loads(value)
            c = self.counts
            c["bundles"] += 1
            c["rows"] += len(rows)
            store = MapRows(self.minutes)
            outs = run_due(st, ctx.timer_service().current_watermark(), store, self.tagset, self.rs, traits)
            outs += on_rows(st, rows, store, self.tagset, self.rs, schema, traits)
            store.flush()
            self._save(key, st, ctx)
            yield from self._emit(outs)

        def on_timer(self, timestamp: int, ctx: Any):  # noqa: ANN201 - a generator
            self._ensure(ctx)
            key = ctx.get_current_key()
            st = self._load(key)
            if timestamp != st.timer_ms:  # replaced by a later one (deleted timers can still fire once)
                self.cache[key] = st
                return
            self.counts["timers"] += 1
            st.timer_ms = 0
            store = MapRows(self.minutes)
            outs = run_due(st, ctx.timer_service().current_watermark(), store, self.tagset, self.rs, traits)
            store.flush()
            self._save(key, st, ctx)
            yield from self._emit(outs)

        def process_broadcast_element(self, value: Any, ctx: Any):  # noqa: ANN201 - a generator
            self._ensure(ctx)
            payload = value[0] if not isinstance(value, str) else value
            try:
                msg = orjson.loads(payload)
            except orjson.JSONDecodeError as e:
                _log().warning("person operator: control message is not JSON (%s); ignored", e)
                if self.rs is not None and self.subtask == 0:
                    yield result_tag, Row("rule", orjson.dumps({
                        "ok": False, "kind": None, "op": None, "id": None, "version": None,
                        "ruleset_version": self.rs.version, "cleanup": None,
                        "reason": f"control message is not JSON ({e}); send a JSON object",
                        "applied_at_ms": int(time.time() * 1000)}).decode())
                return
            kind = msg.get("kind") if isinstance(msg, dict) else None
            if kind == "tag":
                state = ctx.get_broadcast_state(tagset_state())
                new, result = self.tagset.apply_control(msg)
                if new is not self.tagset:
                    self.tagset = new
                    state.put(TAGSET_KEY, encode_tagset(new))
                if result.status == "rejected":
                    _log().warning("tags: control message for %r rejected: %s", result.name, result.reason)
                if self.subtask == 0:
                    yield result_tag, Row("tag", orjson.dumps(result.as_record()).decode())
            elif kind in RULE_CONTROL_KINDS and self.rs is not None:
                new_rs, res = apply_control(self.rs, msg)
                if new_rs is not self.rs:
                    ctx.get_broadcast_state(rules_state.control_log_state()).put(f"{self.log_len:010d}", payload)
                    self.log_len += 1
                    self.rs = new_rs
                out = res.to_json()
                missing = sorted(new_rs.event_types - routed)
                if missing:
                    out["unrouted_event_types"] = missing
                out["applied_at_ms"] = int(time.time() * 1000)  # measurement only: when this operator installed it
                if self.subtask == 0:
                    yield result_tag, Row("rule", orjson.dumps(out).decode())

    return PersonFunction


def _budget_function() -> type:
    from pyflink.datastream.functions import KeyedProcessFunction

    from operators.messages import Action
    from operators.rules.engine import Suppressed
    from operators.rules.guards import BudgetState, budget_step
    from state.rules import budget_state

    class BudgetFunction(KeyedProcessFunction):
        """Key = campaign; value = the action's JSON. ``budget_step`` over one action at a time: granted →
        ``a``, denied → ``s`` (reason ``budget_exhausted``). State: the campaign's granted count
        (``rules-budget-v1``, ``state.rules``)."""

        def open(self, runtime_context: Any) -> None:
            self.spent = runtime_context.get_state(budget_state())

        def process_element(self, value: Any, ctx: Any):  # noqa: ANN201 - a generator
            a = Action.from_json(orjson.loads(value))
            before = self.spent.value() or 0
            new, granted, denied = budget_step(BudgetState(a.campaign or "", before), [a])
            if new is not None and new.spent != before:
                self.spent.update(new.spent)
            for g in granted:
                yield _row_out("a", g, None, g.to_json())
            for d in denied:
                s = Suppressed(d, "budget_exhausted", f"campaign {d.campaign}: {d.budget_max} of {d.budget_max} granted")
                yield _row_out("s", d, s.reason, s.to_json())

    return BudgetFunction


#: The person operator's trait values (person, trait, ts_ms, v: the value as JSON, ``null`` = none); with
#: declared traits only. Private to the person stage; the store stage writes it (``store_rows_statement``).
TRAIT_VALUES_VIEW = "zt_person_trait_values"


def _attach_traits(t_env: StreamTableEnvironment, schema: EventSchema) -> str:
    """The declared traits' anchor partials and their re-key to persons (``operators.traits``); returns the
    person view's name. Planned after the profile's statements, so that adding traits to a job leaves the
    node ids of everything before them as they were (docs/schema.md "Computed traits": state)."""
    from operators.traits import anchor_traits_statement, compile_traits, person_traits_statement

    traits = compile_traits(schema)
    t_env.execute_sql(anchor_traits_statement(traits, view="zt_person_anchor_traits"))
    t_env.execute_sql(person_traits_statement(anchors="zt_person_anchor_traits", view="zt_person_traits"))
    return "zt_person_traits"


def attach_person(t_env: StreamTableEnvironment, settings: Settings, *, tagset: TagSet | None = None,
                  ruleset: RuleSet | None = None, person_minutes_view: str = "zt_person_minutes",
                  events_view: str | None = "zt_person_events", control_view: str | None = None,
                  props: str = "CAST(NULL AS STRING)") -> None:
    """Run the person operator over the views; register its output views (see the module docstring).
    ``props``: the events view's column with the envelope's props as JSON text (the job's ``props``)."""
    from pyflink.common import Types
    from pyflink.datastream import DataStream, OutputTag
    from pyflink.java_gateway import get_gateway

    from operators.tags import TagSet
    from pipelines.bundles import control_stream, keyed_bundles
    from state import rules as rules_state
    from state.tags import encode_tagset, tagset_state

    job = settings.job
    routed = ruleset.routed_event_types(job.rules_event_types) if ruleset is not None else frozenset()
    traits_view = _attach_traits(t_env, settings.event_schema) if settings.event_schema.traits else None
    table = t_env.sql_query(input_sql(person_minutes_view, events_view if ruleset is not None else None, routed,
                                      props, traits_view))
    keyed = keyed_bundles(t_env, table, ts_field=1, out_of_orderness_ms=job.watermark_delay_ms,
                          idle_ms=job.source_idle_timeout_ms, max_delay_ms=job.bundle_ms, max_rows=job.bundle_rows,
                          name="person")

    def out_type() -> Any:  # a fresh instance per use (a type used by one operator caches a Java object)
        return Types.ROW_NAMED(list(OUT_FIELDS), [Types.STRING()] * 6 + [Types.LONG()] + [Types.STRING()] * 2)

    result_tag = OutputTag("person-control-results", Types.ROW_NAMED(["kind", "payload"],
                                                                     [Types.STRING(), Types.STRING()]))
    tagset_json = encode_tagset(tagset if tagset is not None else TagSet.load())
    fn = _function_class(tagset_json, ruleset, routed, result_tag, job.timer_slack_ms, settings.event_schema)()
    ctl = control_stream(t_env, None if control_view is None else f"SELECT payload FROM {control_view}",
                         idle_ms=job.source_idle_timeout_ms, name="person")
    out = keyed.connect(ctl.broadcast(tagset_state(), rules_state.control_log_state())) \
        .process(fn, output_type=out_type()).name("person").uid("zt-person-v1")
    t_env.create_temporary_view("zt_person_all", t_env.from_data_stream(out))
    decided = "SELECT * FROM zt_person_all WHERE kind <> 'b'"
    if ruleset is not None:
        # Actions with a campaign budget: keyed by campaign on the JVM, one Python call per such action.
        from pyflink.datastream.data_stream import KeyedStream

        j_budget = t_env.to_data_stream(t_env.sql_query(
            "SELECT COALESCE(campaign, '') AS k, payload AS v FROM zt_person_all WHERE kind = 'b'"))._j_data_stream
        b_type = Types.ROW_NAMED(["k", "v"], [Types.STRING(), Types.STRING()])
        j_budget.getTransformation().setOutputType(b_type.get_java_type_info())
        j_keyed = j_budget.keyBy(get_gateway().jvm.KeyByKeySelector(), Types.ROW([Types.STRING()]).get_java_type_info())
        budget = KeyedStream(j_keyed, Types.STRING(), DataStream(j_budget)) \
            .process(_budget_function()(), output_type=out_type()).name("rules-budget").uid("zt-rules-budget-v1")
        t_env.create_temporary_view("zt_person_budget", t_env.from_data_stream(budget))
        decided += " UNION ALL SELECT * FROM zt_person_budget"
    t_env.create_temporary_view("zt_person_out", t_env.sql_query(decided))
    t_env.create_temporary_view("zt_tag_changes", t_env.sql_query(
        "SELECT person, action_id AS tag, channel AS op, ts_ms, rule_id AS cause, "
        "CAST(reason AS BIGINT) AS tagset_version, payload FROM zt_person_out WHERE kind = 't'"))
    if traits_view:
        t_env.create_temporary_view(TRAIT_VALUES_VIEW, t_env.sql_query(
            "SELECT person, action_id AS trait, ts_ms, payload AS v FROM zt_person_out WHERE kind = 'v'"))
    if ruleset is not None:
        t_env.create_temporary_view("zt_actions", t_env.sql_query(
            "SELECT action_id, channel, person, rule_id, ts_ms, payload FROM zt_person_out WHERE kind = 'a'"))
        t_env.create_temporary_view("zt_suppressed", t_env.sql_query(
            "SELECT action_id, channel, person, rule_id, reason, ts_ms, payload FROM zt_person_out WHERE kind = 's'"))
    if control_view is not None:
        t_env.create_temporary_view("zt_person_control_results",
                                    t_env.from_data_stream(out.get_side_output(result_tag)))
        t_env.create_temporary_view("zt_control_results_tags", t_env.sql_query(
            "SELECT payload FROM zt_person_control_results WHERE kind = 'tag'"))
        t_env.create_temporary_view("zt_rules_control_results", t_env.sql_query(
            "SELECT payload FROM zt_person_control_results WHERE kind = 'rule'"))
