"""Tags inside the event job: a thin Flink shell around ``operators.tags`` (issue 3, docs/tags.md).

``attach_tags(t_env, settings, person_minutes_view, control_view, tagset)`` reads the person-minute
buckets (the updating view ``zt_person_minutes`` of ``pipelines.events``) as a changelog, keeps each
person's bucket profile in keyed state (``state.tags``), evaluates the tag set on every change and on
event-time timers, and registers:

* ``zt_tag_changes`` (person STRING, tag STRING, op STRING 'add'|'remove', ts_ms BIGINT, cause STRING
  'profile'|'timer', tagset_version BIGINT, payload STRING): append-only; ``payload`` is the
  JSON record (``TagChange.as_record``) for ``zt.tags.changes``.
* ``zt_control_results_tags`` (payload STRING), only with ``control_view``: one JSON
  ``ControlResult`` per control message of kind ``tag`` (applied / rejected with the reason), emitted
  once (by subtask 0 of the broadcast side).

Event time: the job's Kafka source has no watermarks, so they are created here, on the changelog
stream, from each row's ``last_ts`` with bounded out-of-orderness ``job.allowed_lateness_ms`` (the
lateness the decoder still accepts) and idleness ``job.source_idle_timeout_ms``. Timers of idle
persons fire when that watermark passes. Timers fired by the final watermark of a bounded run
(Long.MAX: end of input, not a time that has come) are ignored.

Tag set changes (control messages of kind ``tag``) are applied on the broadcast side, kept in
broadcast state, and reach each person lazily, at its next change or timer: PyFlink has no
``applyToKeyedState`` (checked for apache-flink 2.3.0).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:  # pragma: no cover
    from pyflink.table import StreamTableEnvironment

    from config.settings import Settings
    from operators.tags import TagSet

logger = logging.getLogger(__name__)

#: What the function reads of each changelog row, packed on the JVM into one string (``_keyed_changelog``):
#: ``op,mb,views,carts,purchases,events,gmv_cents,first_ts,last_ts,last_purchase,person`` (NULL = 0;
#: the person last, so a comma in it cannot shift a field). One string crosses into Python much more
#: cheaply than a Row of eleven fields (docs/performance.md, "Tags operator (session 4)").
_PACKED = ("mb", "n_views", "n_carts", "n_purchases", "n_events", "CAST(COALESCE(n_gmv, 0) * 100 AS BIGINT)",
           "first_ts", "last_ts", "last_purchase")
_MAX_WATERMARK = 2**63 - 1
#: Decoded person states (and tag memos) kept in front of the state, per parallel instance: its only
#: writer, so a cached state is the stored one (a restart starts with a new, empty cache).
_CACHE_MAX = 20_000
CHANGE_COLUMNS = ("person", "tag", "op", "ts_ms", "cause", "tagset_version", "payload")


def _function_classes(tagset_json: str, result_tag: Any):
    from pyflink.common import Row
    from pyflink.datastream.functions import KeyedBroadcastProcessFunction, KeyedProcessFunction

    from operators.tags import bucket_profile_fields, bucket_step, tag_step_memo
    from state.tags import (
        TAGSET_KEY,
        PersonState,
        decode_person,
        decode_tagset,
        encode_person,
        encode_tagset,
        person_state,
        tagset_state,
    )

    class TagLogic:
        """Shared body of both shells: person state in, tag changes out (``operators.tags.tag_step_memo``).

        Per person (ValueState ``state.tags.PERSON``): bucket profile, carried tags, the event time of
        the last evaluation (``now``, never decreasing) and the registered timer. A row sets or deletes
        one minute bucket, then the tag set is evaluated at ``now = max(row.last_ts, previous now)``.
        A timer evaluates at its own time; stale timers (replaced, or older than ``now``) do nothing.

        Per row: at most one state read (none when the person is in ``cache``: this instance is the
        only writer of its keys, and a restart builds a new instance) and one write; the timer is
        touched only when the next flip time changed.
        """

        def _open(self, ctx: Any) -> None:
            from pipelines.runtime import share_interpreter

            share_interpreter()
            self.person = ctx.get_state(person_state())
            self.tagset = decode_tagset(tagset_json)
            self.loaded = False
            # person -> (state as stored, memo of the last evaluation); least recently used first.
            self.cache: dict[str, tuple[PersonState, Any]] = {}

        def _tagset(self, ctx: Any) -> Any:
            return self.tagset

        def _load(self, key: str) -> tuple[PersonState, Any]:
            """The person's state and tag memo, taken out of the cache (``_keep`` puts them back)."""
            hit = self.cache.pop(key, None)
            if hit is not None:
                return hit
            raw = self.person.value()
            return (PersonState(None, None, 0, 0) if raw is None else decode_person(raw)), None

        def _keep(self, key: str, st: PersonState, memo: Any) -> None:
            if len(self.cache) >= _CACHE_MAX:
                del self.cache[next(iter(self.cache))]
            self.cache[key] = (st, memo)

        def _step(self, key: str, st: PersonState, memo: Any, now: int, cause: str, ctx: Any):
            tagset = self._tagset(ctx)
            tags, changes, timer, memo = tag_step_memo(st.tags, bucket_profile_fields(st.profile), now, tagset, memo,
                                                       person=key, cause=cause)
            if timer != (st.timer_ms or None):
                ts = ctx.timer_service()
                if st.timer_ms:
                    ts.delete_event_time_timer(st.timer_ms)
                if timer is not None:
                    ts.register_event_time_timer(timer)
            if st.profile is None and tags is None:
                self.person.clear()
            else:
                new = PersonState(st.profile, tags, now, timer or 0)
                self.person.update(encode_person(new))
                self._keep(key, new, memo)
            for c in changes:
                yield Row(c.person, c.tag, c.op, c.ts_ms, c.cause, c.tagset_version,
                          orjson.dumps(c.as_record()).decode())

        def _on_row(self, value: str, ctx: Any):
            f = value.split(",", 10)  # _PACKED between the op and the person
            key = f[10]
            st, memo = self._load(key)
            last_ts = int(f[8])
            if f[0] == "DELETE":
                bucket = None
            else:
                bucket = (int(f[2]), int(f[3]), int(f[4]), int(f[5]), int(f[6]), int(f[7]), last_ts, int(f[9]))
            profile = bucket_step(st.profile, int(f[1]), bucket)
            now = max(last_ts, st.now_ms)
            yield from self._step(key, PersonState(profile, st.tags, st.now_ms, st.timer_ms), memo, now, "profile", ctx)

        def _on_timer(self, timestamp: int, ctx: Any):
            if ctx.timer_service().current_watermark() >= _MAX_WATERMARK:
                return  # end of a bounded input: that time has not come
            key = ctx.get_current_key()
            st, memo = self._load(key)
            if timestamp != st.timer_ms or timestamp < st.now_ms:
                self._keep(key, st, memo)
                return  # replaced, or older than a row evaluated since
            yield from self._step(key, st, memo, timestamp, "timer", ctx)

    class TagFunction(TagLogic, KeyedProcessFunction):
        """Tags with a fixed tag set (no control view)."""

        def open(self, ctx: Any) -> None:
            self._open(ctx)

        def process_element(self, value: Any, ctx: Any):
            yield from self._on_row(value, ctx)

        def on_timer(self, timestamp: int, ctx: Any):
            yield from self._on_timer(timestamp, ctx)

    class TagBroadcastFunction(TagLogic, KeyedBroadcastProcessFunction):
        """Tags with run-time changes: the broadcast side applies control messages of kind ``tag``.

        The tag set lives in broadcast state (``state.tags.TAGSET``) and, decoded, in ``self.tagset``;
        after a restore the keyed side reads it back once. Results are emitted by subtask 0 only
        (every subtask applies every message in the same order, so all agree).
        """

        def open(self, ctx: Any) -> None:
            self._open(ctx)
            try:
                self.subtask = ctx.get_index_of_this_subtask()
            except AttributeError:  # thread mode on Flink 2.x: the Java method moved to getTaskInfo()
                self.subtask = ctx._runtime_context.getTaskInfo().getIndexOfThisSubtask()

        def _tagset(self, ctx: Any) -> Any:
            if not self.loaded:
                snap = ctx.get_broadcast_state(tagset_state()).get(TAGSET_KEY)
                if snap is not None:
                    self.tagset = decode_tagset(snap)
                self.loaded = True
            return self.tagset

        def process_element(self, value: Any, ctx: Any):
            yield from self._on_row(value, ctx)

        def on_timer(self, timestamp: int, ctx: Any):
            yield from self._on_timer(timestamp, ctx)

        def process_broadcast_element(self, value: Any, ctx: Any):
            try:
                msg = orjson.loads(value[0])
            except orjson.JSONDecodeError as e:
                logger.warning("tags: control message is not JSON (%s); ignored", e)
                return
            if not isinstance(msg, dict) or msg.get("kind") != "tag":
                return  # another consumer's message (rules, experiments)
            state = ctx.get_broadcast_state(tagset_state())
            if not self.loaded:
                snap = state.get(TAGSET_KEY)
                if snap is not None:
                    self.tagset = decode_tagset(snap)
                self.loaded = True
            new, result = self.tagset.apply_control(msg)
            if new is not self.tagset:
                self.tagset = new
                state.put(TAGSET_KEY, encode_tagset(new))
            if result.status == "rejected":
                logger.warning("tags: control message for %r rejected: %s", result.name, result.reason)
            if self.subtask == 0:
                yield result_tag, Row(orjson.dumps(result.as_record()).decode())

    return TagFunction, TagBroadcastFunction


def _keyed_changelog(t_env: StreamTableEnvironment, view: str, job: Any) -> Any:
    """The changelog of ``view`` keyed by person, with event time, without a Python key selector.

    The rows (``TO_CHANGELOG``, UPDATE_BEFORE dropped, money as cents) become
    ``Row(person, packed, last_ts)`` on the JVM (``packed``: the string ``_PACKED`` describes), get
    event time from ``last_ts`` (Python ``WatermarkStrategy``: bounded out-of-orderness
    ``job.allowed_lateness_ms``, idle after ``job.source_idle_timeout_ms``) and are partitioned by
    field 0 with PyFlink's own ``KeyByKeySelector`` and key type, exactly what ``DataStream.key_by``
    builds after its Python key extraction (so the keyed state stays compatible). The keyed Python
    function receives field 1, the packed string.

    The timestamp assigner stays Python on purpose: a planner watermark (``from_data_stream`` with
    ``rt - lateness - 1``) passed the tag tests and saved its cost too, but it changed which timers
    fire during a run (tests/test_job_identity.py then saw idle-time tags the old graph never
    produced); not understood yet, see docs/performance.md "Tags operator (session 4)".
    """
    from pyflink.common import Duration, Types, WatermarkStrategy
    from pyflink.common.watermark_strategy import TimestampAssigner
    from pyflink.datastream.data_stream import KeyedStream
    from pyflink.java_gateway import get_gateway

    class LastTs(TimestampAssigner):
        def extract_timestamp(self, value: Any, record_timestamp: int) -> int:
            return value[2]

    packed = ", ".join(f"CAST(COALESCE({c}, 0) AS STRING)" for c in _PACKED)
    rows = t_env.sql_query(
        f"SELECT person AS k, CONCAT_WS(',', op, {packed}, person) AS v, COALESCE(last_ts, 0) AS wm_ts "
        f"FROM TO_CHANGELOG(input => TABLE {view}) WHERE op <> 'UPDATE_BEFORE'")
    stream = t_env.to_data_stream(rows)
    # The Python operators' coders need a RowTypeInfo (the table gives an ExternalTypeInfo of the same Row).
    row_type = Types.ROW_NAMED(["k", "v", "wm_ts"], [Types.STRING(), Types.STRING(), Types.LONG()])
    stream._j_data_stream.getTransformation().setOutputType(row_type.get_java_type_info())
    # with_idleness first: PyFlink's with_idleness returns a strategy without the Python assigner.
    watermarks = (
        WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(job.allowed_lateness_ms))
        .with_idleness(Duration.of_millis(job.source_idle_timeout_ms))
        .with_timestamp_assigner(LastTs())
    )
    stream = stream.assign_timestamps_and_watermarks(watermarks).name("tags-event-time").uid("zt-tags-event-time-v1")
    j_keyed = stream._j_data_stream.keyBy(get_gateway().jvm.KeyByKeySelector(),
                                          Types.ROW([Types.STRING()]).get_java_type_info())
    return KeyedStream(j_keyed, Types.STRING(), stream)


def attach_tags(t_env: StreamTableEnvironment, settings: Settings, person_minutes_view: str = "zt_person_minutes",
                control_view: str | None = None, tagset: TagSet | None = None) -> None:
    """Evaluate ``tagset`` (default ``config/tags.yaml``) over ``person_minutes_view``; register the views.

    ``person_minutes_view``: an updating table with the columns of ``zt_person_minutes`` (one row per
    person and minute bucket; a DELETE = the bucket left the person). ``control_view``: an append-only
    table (payload STRING) of control messages. Registers ``zt_tag_changes`` and, with a control view,
    ``zt_control_results_tags`` (see the module docstring).
    """
    from pyflink.common import Duration, Types, WatermarkStrategy
    from pyflink.datastream import OutputTag

    from operators.tags import TagSet
    from state.tags import encode_tagset, tagset_state

    job = settings.job
    keyed = _keyed_changelog(t_env, person_minutes_view, job)
    change_types = Types.ROW_NAMED(
        list(CHANGE_COLUMNS),
        [Types.STRING(), Types.STRING(), Types.STRING(), Types.LONG(), Types.STRING(), Types.LONG(), Types.STRING()],
    )
    # Created per job: a module-level OutputTag fails to pickle in a second job of one process.
    result_tag = OutputTag("tags-control-results", Types.ROW_NAMED(["payload"], [Types.STRING()]))
    tagset_json = encode_tagset(tagset if tagset is not None else TagSet.load())
    plain, broadcast = _function_classes(tagset_json, result_tag)
    if control_view is None:
        changes = keyed.process(plain(), output_type=change_types)
    else:
        # The control stream carries no event time; an input without watermarks would hold the
        # operator's watermark (the minimum of both inputs) at its start for ever. Marked idle after
        # the idle timeout, it no longer counts (timers wait at most that long after a control message).
        control = t_env.to_data_stream(t_env.sql_query(f"SELECT payload FROM {control_view}")) \
            .assign_timestamps_and_watermarks(
                WatermarkStrategy.for_monotonous_timestamps().with_idleness(Duration.of_millis(job.source_idle_timeout_ms))) \
            .name("tags-control-idle").uid("zt-tags-control-idle-v1")
        changes = keyed.connect(control.broadcast(tagset_state())).process(broadcast(), output_type=change_types)
    changes = changes.name("tags").uid("zt-tags-v1")
    t_env.create_temporary_view("zt_tag_changes", t_env.from_data_stream(changes))
    if control_view is not None:
        t_env.create_temporary_view("zt_control_results_tags", t_env.from_data_stream(changes.get_side_output(result_tag)))
