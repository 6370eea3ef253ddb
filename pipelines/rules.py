"""The strategy engine inside the event job: a thin Flink shell around ``operators.rules`` (docs/rules_job.md).

``attach_rules(t_env, settings, ruleset, ...)`` reads

* ``events_view`` (append-only: person, event_id, event_type, ts_ms, campaign, channel, amount, item_id),
  filtered in SQL to ``ruleset.event_types`` before anything reaches Python;
* ``person_minutes_view`` (updating: person, mb, n_views, n_carts, n_purchases, n_events, n_gmv, first_ts,
  last_ts, last_purchase), turned into an append-only changelog (``TO_CHANGELOG``) and folded into a compact
  per-person profile (``state.rules.MinuteProfile``) that conditions read as ``profile``
  (``rules_profile(profile_windows.evaluate(hash, as_of=now))``, computed only when a condition reads it);
* ``tag_changes_view`` (optional, append-only: person, tag, op 'add'|'remove', ts_ms, cause, tagset_version,
  payload): the person's tags and the tag_added / tag_removed triggers;
* ``control_view`` (optional, append-only: payload STRING): ``zt.control`` messages (rule / pattern / journey /
  batch / policy), applied with ``apply_control`` in broadcast state;

and registers the append-only views

* ``zt_actions`` (action_id, channel, person, rule_id, ts_ms, payload): payload = ``Action.to_json()``;
* ``zt_suppressed`` (action_id, channel, person, rule_id, reason, ts_ms, payload): payload =
  ``Suppressed.to_json()`` (the action plus reason and detail);
* ``zt_rules_control_results`` (payload) when ``control_view`` is given: ``ControlResult.to_json()`` plus
  ``applied_at_ms`` (wall clock when the operator installed the rule set) and ``unrouted_event_types``.

Shape: the three person inputs are one SQL ``UNION ALL`` of a single row type with a discriminator ``k``
(``e`` event, ``m`` minute bucket, ``t`` tag change), so the JVM does the projection and Python sees one
stream. Event time: the sources carry no watermarks (a design choice for speed), so timestamps (``ts_ms``)
and watermarks are assigned here, bounded out-of-orderness = ``settings.job.allowed_lateness_ms`` (the events
job accepts events that late) with idleness ``settings.job.source_idle_timeout_ms``. The keyed function
(key = person) runs ``evaluate`` per input and registers the returned times as event-time timers; a pattern
or journey therefore acts once the watermark passes its timer (absence: ``start + within + lateness``),
i.e. ``allowed_lateness_ms`` of event time after that, and every event that arrived before is taken into
account whatever its arrival order. Actions with a campaign budget go to a second keyed function (key =
campaign) running ``budget_step``: one sequential checkpointed counter per campaign, exact at any
parallelism. Action ids are deterministic (``operators.rules.engine.action_id``), so a replay from a
checkpoint reproduces the same ids; every action id is emitted once per run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:  # pragma: no cover
    from pyflink.table import StreamTableEnvironment

    from config.settings import Settings
    from operators.rules.registry import RuleSet

logger = logging.getLogger(__name__)

#: Columns of the unified person input (k, person, ts_ms, s1..s6, n1..n8), see ``_input_sql``.
_S = 3
_N = 9
OUT_FIELDS = ("kind", "action_id", "channel", "person", "rule_id", "reason", "ts_ms", "payload", "campaign")
_CACHE_MAX = 50_000  # decoded person states kept in front of the state (cleared when full)
_MINUTE_OPS = {"INSERT", "UPDATE_AFTER", "DELETE"}  # UPDATE_BEFORE: its UPDATE_AFTER follows


def _log() -> logging.Logger:
    # Functions built inside a job are pickled by value with the globals they name; a Logger holds an
    # RLock, which does not pickle, so they look the logger up when they need it.
    return logging.getLogger(__name__)


def _subtask_index(runtime_context: Any) -> int:
    """This subtask's index. In thread mode (Flink 2.x) ``get_index_of_this_subtask`` calls a Java method
    that moved to ``getTaskInfo()``; fall back to it."""
    try:
        return runtime_context.get_index_of_this_subtask()
    except AttributeError:
        return runtime_context._runtime_context.getTaskInfo().getIndexOfThisSubtask()


EVENT_COLUMNS = ("person", "event_id", "event_type", "ts_ms", "campaign", "channel", "amount", "item_id")


def event_row_type() -> Any:
    """The DataStream row type of ``events_view``'s columns (for feeding a view from a DataStream)."""
    from pyflink.common import Types

    s = Types.STRING()
    return Types.ROW_NAMED(list(EVENT_COLUMNS), [s, s, s, Types.LONG(), s, s, Types.BIG_DEC(), s])


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _input_sql(event_types: frozenset[str], events_view: str, person_minutes_view: str,
               tag_changes_view: str | None) -> str:
    """One append-only query over the three person inputs (columns: k, person, ts_ms, s1..s6, n1..n8)."""
    nul_s, nul_n = "CAST(NULL AS STRING)", "CAST(NULL AS BIGINT)"
    types = ", ".join(_quote(t) for t in sorted(event_types))
    parts = [f"""
SELECT 'e' AS k, person, CAST(ts_ms AS BIGINT) AS ts_ms, event_id AS s1, event_type AS s2, campaign AS s3,
  channel AS s4, item_id AS s5, CAST(amount AS STRING) AS s6,
  {nul_n} AS n1, {nul_n} AS n2, {nul_n} AS n3, {nul_n} AS n4, {nul_n} AS n5, {nul_n} AS n6, {nul_n} AS n7,
  {nul_n} AS n8
FROM {events_view} WHERE event_type IN ({types}) AND person IS NOT NULL""", f"""
SELECT 'm', person, CAST(COALESCE(last_ts, mb * 60000) AS BIGINT), op, {nul_s}, {nul_s}, {nul_s}, {nul_s},
  CAST(n_gmv AS STRING), CAST(mb AS BIGINT), CAST(n_views AS BIGINT), CAST(n_carts AS BIGINT),
  CAST(n_purchases AS BIGINT), CAST(n_events AS BIGINT), CAST(first_ts AS BIGINT), CAST(last_ts AS BIGINT),
  CAST(last_purchase AS BIGINT)
FROM TO_CHANGELOG(input => TABLE {person_minutes_view})
WHERE op <> 'UPDATE_BEFORE' AND person IS NOT NULL"""]
    if tag_changes_view:
        parts.append(f"""
SELECT 't', person, CAST(ts_ms AS BIGINT), tag, op, cause, {nul_s}, {nul_s}, {nul_s},
  CAST(tagset_version AS BIGINT), {nul_n}, {nul_n}, {nul_n}, {nul_n}, {nul_n}, {nul_n}, {nul_n}
FROM {tag_changes_view} WHERE person IS NOT NULL""")
    return "\nUNION ALL".join(parts)


class _LazyProfile(Mapping[str, Any]):
    """``rules_profile(profile_windows.evaluate(hash, as_of))``, read from state, decoded and computed on
    the first read (most rules never read the profile; a quiet-hours check reads ``timezone``). ``read``
    returns the encoded profile of the current key; it is only called within the same process_element or
    on_timer call. Always true (``evaluate`` tests ``profile or {}``; that must not force the read)."""

    __slots__ = ("_as_of", "_d", "_read")

    def __init__(self, read: Any, as_of: int) -> None:
        self._read, self._as_of, self._d = read, as_of, None

    def _data(self) -> dict[str, Any]:
        if self._d is None:
            from operators import profile_windows
            from operators.rules.inputs import rules_profile
            from state.rules import decode_profile, profile_hash

            h = profile_hash(decode_profile(self._read()))
            self._d = rules_profile(profile_windows.evaluate(h, self._as_of)) if h else {}
        return self._d

    def __bool__(self) -> bool:
        return True

    def __getitem__(self, k: str) -> Any:
        return self._data()[k]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())


def _row_out(kind: str, a: Any, reason: str | None, payload: dict[str, Any]) -> Any:
    from pyflink.common import Row

    return Row(kind, a.action_id, a.channel, a.person_id, a.rule_id, reason, a.ts_ms,
               orjson.dumps(payload).decode(), a.campaign)


def _engine_classes(initial: RuleSet, budget_tag: Any, result_tag: Any) -> tuple[type, type]:
    """(KeyedProcessFunction without control, KeyedBroadcastProcessFunction with control), built lazily."""
    from pyflink.datastream.functions import KeyedBroadcastProcessFunction, KeyedProcessFunction

    from operators.rules.engine import evaluate
    from operators.rules.model import Event, TagChange
    from operators.rules.registry import apply_control
    from state import rules as st

    class _Shell:
        """Per person: read state, call ``evaluate``, write state, emit; the rule set is ``self.rs``."""

        rs: Any

        def _open(self, runtime_context: Any) -> None:
            self.person = runtime_context.get_state(st.person_state())
            self.profile = runtime_context.get_state(st.profile_state())
            self.tags = runtime_context.get_state(st.tags_state())
            self.subtask = _subtask_index(runtime_context)
            # person → (encoded, decoded) of the state this operator last wrote: skips decoding when the
            # stored value is still that string (it always is, unless restored from a checkpoint)
            self.cache: dict[str, tuple[str, Any]] = {}
            self.counts = {"inputs": 0, "timers": 0, "actions": 0, "suppressed": 0, "too_late": 0,
                           "rule_evaluations": 0}

        def close(self) -> None:
            _log().info("rules engine subtask %s: %s", getattr(self, "subtask", "?"), getattr(self, "counts", {}))

        def _input(self, v: Any, ctx: Any) -> Iterator[Any]:
            k, person, ts = v[0], v[1], v[2]
            self.counts["inputs"] += 1
            if k == "m":
                op = v[_S]
                if op not in _MINUTE_OPS:
                    return
                n = v[_N:_N + 8]
                row = None if op == "DELETE" else (
                    n[1] or 0, n[2] or 0, n[3] or 0, n[4] or 0, int(Decimal(v[_S + 5] or "0") * 100),
                    n[5] or 0, n[6] or 0, n[7] or 0)
                new = st.profile_put(st.decode_profile(self.profile.value()), n[0], row)
                if new is None:
                    self.profile.clear()
                else:
                    self.profile.update(st.encode_profile(new))
                return
            tags = st.decode_tags(self.tags.value())
            if k == "t":
                added = v[_S + 1] == "add"
                tag = v[_S]
                new_tags = tags | {tag} if added else tags - {tag}
                if new_tags != tags:
                    if new_tags:
                        self.tags.update(st.encode_tags(new_tags))
                    else:
                        self.tags.clear()
                tags = new_tags
                item: Any = TagChange(person, tag, added, ts)
            else:
                amount = v[_S + 5]
                item = Event(v[_S], v[_S + 1], ts, person,
                             {"campaign": v[_S + 2], "channel": v[_S + 3], "item_id": v[_S + 4],
                              "amount": Decimal(amount) if amount is not None else None})
            yield from self._run(item, tags, ts, ctx)

        def _timer(self, ts: int, ctx: Any) -> Iterator[Any]:
            self.counts["timers"] += 1
            yield from self._run(None, st.decode_tags(self.tags.value()), ts, ctx)

        def _run(self, item: Any, tags: frozenset[str], now_ms: int, ctx: Any) -> Iterator[Any]:
            raw = self.person.value()
            cached = self.cache.get(ctx.get_current_key())
            if not raw:
                state = None
            elif cached is not None and cached[0] == raw:
                state = cached[1]  # decoded already: this operator wrote it
            else:
                state = st.decode_person(raw)
            if item is None and state is None:
                return
            profile = _LazyProfile(self.profile.value, now_ms)
            res = evaluate(self.rs, state, item, profile, tags, now_ms)
            key = ctx.get_current_key()
            if res.new_state is None:
                if raw:
                    self.person.clear()
                self.cache.pop(key, None)
            elif res.new_state is not state:
                enc = st.encode_person(res.new_state)
                if enc != raw:
                    self.person.update(enc)
                if len(self.cache) >= _CACHE_MAX:
                    self.cache.clear()
                self.cache[key] = (enc, res.new_state)
            timers = ctx.timer_service()
            for t in res.timers:
                timers.register_event_time_timer(t)
            c = self.counts
            c["too_late"] += res.too_late
            c["rule_evaluations"] += res.rule_evaluations
            for a in res.actions:
                if a.budget_max is not None:
                    # main output, kind "b" (split off below): a side output yielded from on_timer of a
                    # keyed broadcast function fails in thread mode ("'tuple' object has no attribute '_values'")
                    yield _row_out("b", a, None, a.to_json())
                else:
                    c["actions"] += 1
                    yield _row_out("a", a, None, a.to_json())
            for s in res.suppressed:
                c["suppressed"] += 1
                yield _row_out("s", s.action, s.reason, s.to_json())

    class RulesFunction(_Shell, KeyedProcessFunction):
        """The engine with the fixed rule set the job was started with (no control view)."""

        def __init__(self, ruleset: Any) -> None:
            self.rs = ruleset

        def open(self, runtime_context: Any) -> None:
            self._open(runtime_context)

        def process_element(self, value: Any, ctx: Any):
            yield from self._input(value, ctx)

        def on_timer(self, timestamp: int, ctx: Any):
            yield from self._timer(timestamp, ctx)

    class ControlledRulesFunction(_Shell, KeyedBroadcastProcessFunction):
        """The engine with the rule set in broadcast state, changed by control messages.

        Every parallel instance applies the same control messages in the same order, so all agree on
        the rule set; accepted changes are appended to the broadcast control log (``state.rules``), which
        is replayed over the start rule set after a restore. Results are emitted by subtask 0 only.
        """

        def __init__(self, ruleset: Any, routed: frozenset[str]) -> None:
            self.initial = ruleset
            self.routed = routed

        def open(self, runtime_context: Any) -> None:
            self._open(runtime_context)
            self.rs = None
            self.log_len = 0

        def _ensure(self, ctx: Any) -> None:
            if self.rs is not None:
                return
            rs = self.initial
            entries = sorted(ctx.get_broadcast_state(st.control_log_state()).items())
            for _, msg in entries:
                rs, res = apply_control(rs, orjson.loads(msg))
                if not res.ok:  # cannot happen for a log of accepted changes over the same start set
                    _log().error("rules: replaying the control log failed: %s", res.reason)
            self.rs, self.log_len = rs, len(entries)

        def process_element(self, value: Any, ctx: Any):
            self._ensure(ctx)
            yield from self._input(value, ctx)

        def on_timer(self, timestamp: int, ctx: Any):
            self._ensure(ctx)
            yield from self._timer(timestamp, ctx)

        def process_broadcast_element(self, value: Any, ctx: Any):
            self._ensure(ctx)
            payload = value[0] if not isinstance(value, str) else value
            try:
                msg = orjson.loads(payload)
            except (orjson.JSONDecodeError, TypeError) as e:
                msg = None
                out: dict[str, Any] = {"ok": False, "kind": None, "op": None, "id": None, "version": None,
                                       "ruleset_version": self.rs.version, "cleanup": None,
                                       "reason": f"control message is not JSON ({e}); send a JSON object"}
            if msg is not None:
                new, res = apply_control(self.rs, msg)
                if new is not self.rs:
                    ctx.get_broadcast_state(st.control_log_state()).put(f"{self.log_len:010d}", payload)
                    self.log_len += 1
                    self.rs = new
                out = res.to_json()
                missing = sorted(new.event_types - self.routed)
                if missing:
                    out["unrouted_event_types"] = missing
            out["applied_at_ms"] = int(time.time() * 1000)  # measurement only: when this operator installed it
            if self.subtask == 0:
                yield result_tag, orjson.dumps(out).decode()

    return RulesFunction, ControlledRulesFunction


def _budget_class() -> type:
    from pyflink.datastream.functions import KeyedProcessFunction

    from operators.rules.engine import Action, Suppressed
    from operators.rules.guards import BudgetState, budget_step
    from state.rules import budget_state

    class BudgetFunction(KeyedProcessFunction):
        """Key = campaign. ``budget_step`` over one action at a time: granted → ``a``, denied → ``s``
        (reason ``budget_exhausted``). State: the campaign's granted count (``rules-budget-v1``)."""

        def open(self, runtime_context: Any) -> None:
            self.spent = runtime_context.get_state(budget_state())

        def process_element(self, value: Any, ctx: Any):
            a = Action.from_json(orjson.loads(value[7]))
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


def attach_rules(t_env: StreamTableEnvironment, settings: Settings, ruleset: RuleSet, *,
                 events_view: str = "zt_person_events", person_minutes_view: str = "zt_person_minutes",
                 tag_changes_view: str | None = "zt_tag_changes", control_view: str | None = None) -> None:
    """Run the strategy engine over the person inputs; register ``zt_actions``, ``zt_suppressed`` (and
    ``zt_rules_control_results`` with ``control_view``). See the module docstring for the views' columns.

    ``ruleset`` is the rule set the job starts with (``RuleSet.from_definitions(load_file(...))``); its
    ``event_types`` decide which events reach Python. A control message that makes the engine need another
    event type is applied, but those events keep being filtered out until the job is rebuilt with it
    (its result names them under ``unrouted_event_types``).
    """
    from pyflink.common import Duration, Types
    from pyflink.common.watermark_strategy import TimestampAssigner, WatermarkStrategy
    from pyflink.datastream import OutputTag

    job = settings.job
    routed = ruleset.event_types
    people = t_env.to_data_stream(t_env.sql_query(
        _input_sql(routed, events_view, person_minutes_view, tag_changes_view)))

    class _TsOf(TimestampAssigner):
        def extract_timestamp(self, value: Any, record_timestamp: int) -> int:
            return value[2]

    class _Behind(TimestampAssigner):
        def extract_timestamp(self, value: Any, record_timestamp: int) -> int:
            # Control records sit at event time 0: their input never pushes the watermark ahead of the
            # events (a far-future time would, whenever the event input is idle); after a control record
            # the engine's watermark waits until the control input is idle again (source_idle_timeout_ms).
            return 0

    idle = Duration.of_millis(job.source_idle_timeout_ms)
    people = people.assign_timestamps_and_watermarks(
        WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(job.allowed_lateness_ms))
        .with_timestamp_assigner(_TsOf()).with_idleness(idle)).name("rules-watermarks").uid("zt-rules-watermarks-v1")
    def out_type() -> Any:  # a fresh instance per use: a type info used by one operator caches a Java
        # object, and a tag holding such an instance no longer pickles with the function
        return Types.ROW_NAMED(list(OUT_FIELDS), [Types.STRING()] * 6 + [Types.LONG()] + [Types.STRING()] * 2)

    out_types = out_type()
    # Tags are created per job (a module-level tag fails to pickle in a second job of one process).
    budget_tag = OutputTag("rules-budget", out_type())
    result_tag = OutputTag("rules-control-results", Types.STRING())
    plain, controlled = _engine_classes(ruleset, budget_tag, result_tag)
    keyed = people.key_by(lambda r: r[1], key_type=Types.STRING())
    if control_view is None:
        engine = keyed.process(plain(ruleset), output_type=out_types)
    else:
        from state.rules import control_log_state

        control = t_env.to_data_stream(t_env.from_path(control_view)).assign_timestamps_and_watermarks(
            WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(_Behind()).with_idleness(idle)
        ).name("rules-control-watermarks").uid("zt-rules-control-watermarks-v1")
        engine = keyed.connect(control.broadcast(control_log_state())).process(
            controlled(ruleset, routed), output_type=out_types)
    engine = engine.name("rules-engine").uid("zt-rules-engine-v1")
    budget = (engine.filter(lambda r: r[0] == "b")
              .key_by(lambda r: r[8] or "", key_type=Types.STRING())
              .process(_budget_class()(), output_type=out_type())
              .name("rules-budget").uid("zt-rules-budget-v1"))
    decided = engine.filter(lambda r: r[0] != "b")
    t_env.create_temporary_view("zt_rules_out", t_env.from_data_stream(decided.union(budget)))
    t_env.create_temporary_view("zt_actions", t_env.sql_query(
        "SELECT action_id, channel, person, rule_id, ts_ms, payload FROM zt_rules_out WHERE kind = 'a'"))
    t_env.create_temporary_view("zt_suppressed", t_env.sql_query(
        "SELECT action_id, channel, person, rule_id, reason, ts_ms, payload FROM zt_rules_out WHERE kind = 's'"))
    if control_view is not None:
        results = engine.get_side_output(result_tag)
        t_env.create_temporary_view("zt_rules_control_results", t_env.sql_query(
            f"SELECT f0 AS payload FROM {_register(t_env, results)}"))


def _register(t_env: StreamTableEnvironment, ds: Any) -> str:
    name = "zt_rules_control_results_raw"
    t_env.create_temporary_view(name, t_env.from_data_stream(ds))
    return name
