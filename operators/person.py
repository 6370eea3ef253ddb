"""One person, one step: profile, tags and the strategy engine together (pure).

The job's person operator (``pipelines.person``) keeps everything it knows about a person in one place:
the incremental profile (``operators.profile``), the tags the person carries (``operators.tags``) and the
strategy engine's state (``operators.rules``). It receives bundles of the person's rows (the JVM packs
them, ``pipelines.bundles``) and one event-time timer. This module is what it runs:

* :func:`on_rows` — the rows of one bundle, in order. A **bucket row** (``"m"``: a minute bucket of
  ``zt_person_minutes`` set, updated or deleted) updates the profile. An **event row** (``"e"``: an event
  of a type some rule listens to) goes to the engine at the event's own time, with the profile as of then.
  After the bundle's rows, if a bucket row changed the profile, the tags are evaluated once, at
  ``now = max(newest applied last_ts, previous now)`` (``tag_step_memo``: only tags whose inputs changed);
  every tag change is also the engine's ``tag_added`` / ``tag_removed`` input.
* :func:`on_timer` — the one timer fired at ``t``: the tags' next flip (``cause = "timer"``) and the engine's
  due work (patterns, journeys, held actions). Afterwards :attr:`PersonState.next_timer` is the next one.

The tags are evaluated at the bundle's end, not after each bucket row: a bundle is a coarser mini-batch.
The rows already are (the person-minute aggregate emits one update per bucket per mini-batch, a
processing-time interval), so which intermediate states were evaluated never was fixed; the final
membership and every timer are (a tag is a function of the profile and the time). A tag change is dated
at the newest event time of the rows that caused it. With ``job.bundle_rows = 1`` every row is evaluated
on its own (tests/pipeline/test_tags_job.py pins the tag changes that way). What it saves besides the evaluations:
one state read and write per bundle instead of two per row, the minute buckets held once, one armed
timer per person instead of one per pattern and event, and profile fields computed from bounded
aggregates (only when asked, for the engine).

Rows (the bundle's JSON: the fields after the key, ``ROW_COLUMNS``; unused columns are null):
``[ts, "m", op, minute, views, carts, purchases, events, gmv, first_ts, last_ts, last_purchase]`` with ``op``
INSERT / UPDATE_BEFORE / UPDATE_AFTER / DELETE and ``gmv`` a decimal string;
``[ts, "e", event_id, ts_ms, -, -, -, -, amount, -, -, -, event_type, campaign, channel, item_id, props_json]``;
with declared traits (``operators.traits``) a **trait row** ``[ts, "x", op, minute, n, -, -, -, sum, -, -, -, trait,
dv, "lo,hi", first, last]`` (op as for bucket rows; its UPDATE_BEFORE is not sent: a partial is set as a whole).
After a bundle that changed a trait partial or the profile, the traits' values as of ``last_seen`` are computed
and each changed one is emitted (``trait``). Without declared traits none of this runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from config.schema import EventSchema
from operators.envelope import typed_props
from operators.messages import Action, TagChange
from operators.profile import FIELDS, Bucket, Profile, RowStore
from operators.rules.engine import PersonState as RulesState
from operators.rules.engine import Suppressed, evaluate, next_due
from operators.rules.inputs import rules_profile
from operators.rules.model import Event
from operators.rules.model import TagChange as RuleTagInput
from operators.rules.registry import RuleSet
from operators.tags import TagMemo, TagSet, TagState, tag_step_memo
from operators.traits import Trait, TraitBuckets, TraitValue, row_partial

__all__ = ["ROW_COLUMNS", "Output", "PersonState", "on_rows", "on_timer", "run_due"]

#: The columns of one person row after the key (``pipelines.person`` builds them in SQL; types in brackets).
ROW_COLUMNS = ("ts [BIGINT]", "kind", "s1", "n1 [BIGINT]", "n2 [BIGINT]", "n3 [BIGINT]", "n4 [BIGINT]", "n5 [BIGINT]",
               "s2", "n6 [BIGINT]", "n7 [BIGINT]", "n8 [BIGINT]", "s3", "s4", "s5", "s6", "s7")

#: The final watermark of a bounded input: the end of the input, not a time that has come.
END_OF_INPUT = 2**63 - 1
_FIELD_SET = frozenset(FIELDS)


@dataclass(slots=True)
class PersonState:
    """Everything the operator keeps for one person (codec: ``state.person``), mutable in memory.

    ``now_ms``: the tags' evaluation time (never decreases); ``tag_due``: the tags' next flip (0 = none);
    ``rule_timers``: the engine's pending times, sorted; ``timer_ms``: the timer registered with Flink
    (0 = none). ``memo`` (the tags' memo) and ``pending_old`` (an UPDATE_BEFORE waiting for its
    UPDATE_AFTER) live in memory only.
    """

    person: str
    profile: Profile
    tags: TagState | None = None
    now_ms: int = 0
    tag_due: int = 0
    rules: RulesState | None = None
    rule_timers: list[int] = field(default_factory=list)
    timer_ms: int = 0
    memo: TagMemo | None = None
    pending_old: dict[int, Bucket] = field(default_factory=dict)
    #: the computed traits' partials and last written values (None: no trait declared or none seen)
    traits: TraitBuckets | None = None

    def is_empty(self) -> bool:
        return (self.profile.is_empty() and self.tags is None and self.rules is None and not self.rule_timers
                and (self.traits is None or self.traits.is_empty()))

    @property
    def next_timer(self) -> int:
        """The time the person's timer should be at (0 = none): the earlier of the tags' flip and the
        engine's next due time."""
        t = self.tag_due
        if self.rule_timers and (not t or self.rule_timers[0] < t):
            t = self.rule_timers[0]
        return t


@dataclass(frozen=True, slots=True)
class Output:
    """What one step emits: ``kind`` ``tag`` (a :class:`TagChange`), ``action`` (an action to send),
    ``budget`` (an action that must pass its campaign budget first), ``suppressed`` or ``trait`` (a
    :class:`TraitValue`)."""

    kind: str
    item: TagChange | Action | Suppressed | TraitValue


class _ProfileView(Mapping[str, Any]):
    """The engine's ``profile``: the profile fields as of ``as_of`` with numbers as numbers
    (``rules_profile``), computed on the first read of a profile field (most rules read none; a
    quiet-hours check asks for ``timezone``, which is not a field and costs nothing). With declared traits,
    ``profile.<trait>`` is the trait's value as of ``as_of`` too (computed when read)."""

    __slots__ = ("_as_of", "_d", "_p", "_rows", "_tb", "_traits")

    def __init__(self, profile: Profile, rows: RowStore, as_of: int, traits: tuple[Trait, ...] = (),
                 buckets: TraitBuckets | None = None) -> None:
        self._p, self._rows, self._as_of = profile, rows, as_of
        self._traits = {t.name: t for t in traits} if traits else None
        self._tb = buckets
        self._d: dict[str, Any] | None = None

    def _data(self) -> dict[str, Any]:
        d = self._d
        if d is None:
            d = self._d = rules_profile(self._p.fields(self._as_of, self._rows))
            if self._traits:
                vals = self._tb.values(self._traits.values(), self._as_of) if self._tb is not None else {}
                d.update(rules_profile({k: v for k, v in vals.items() if v is not None}))
        return d

    def _known(self, k: str) -> bool:
        return k in _FIELD_SET or (self._traits is not None and k in self._traits)

    def __bool__(self) -> bool:
        return True

    def __getitem__(self, k: str) -> Any:
        if not self._known(k):
            raise KeyError(k)
        return self._data()[k]

    def get(self, k: str, default: Any = None) -> Any:
        if not self._known(k):
            return default
        return self._data().get(k, default)

    def __contains__(self, k: object) -> bool:
        return isinstance(k, str) and self._known(k) and k in self._data()

    def __iter__(self) -> Iterator[str]:
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())


def _cents(gmv: Any) -> int:
    if gmv is None:
        return 0
    return int(Decimal(gmv) * 100)


def _bucket(r: list[Any]) -> Bucket:
    return (r[4] or 0, r[5] or 0, r[6] or 0, r[7] or 0, _cents(r[8]), r[9] or 0, r[10] or 0, r[11] or 0)


def _event(person: str, r: list[Any], schema: EventSchema | None = None) -> Event:
    """An event row as the engine's :class:`Event`: the envelope's props as sent (declared ones with their
    declared types, ``operators.envelope.typed_props``), plus the job's derived ``campaign``, ``channel``,
    ``item_id`` and ``amount`` where the props lack them (a ``consent`` / ``unsubscribe`` event keeps its
    own ``channel``: absent means every channel)."""
    event_id, ts, amount = r[2], r[3], r[8]
    event_type, campaign, channel, item_id, props_json = r[12], r[13], r[14], r[15], r[16]
    props: dict[str, Any] = {}
    typed = typed_props(event_type, props_json, schema) if props_json and schema is not None else None
    if typed is not None:
        props = typed
    elif props_json:
        try:
            parsed = orjson.loads(props_json)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            props = parsed
    props["campaign"] = campaign
    if event_type not in ("consent", "unsubscribe") or "channel" in props:
        props.setdefault("channel", channel)
    props["item_id"] = item_id
    props["amount"] = Decimal(amount) if amount is not None else None
    return Event(event_id, event_type, ts, person, props)


def _rules(st: PersonState, ruleset: RuleSet, item: Any, rows: RowStore, now_ms: int, out: list[Output],
           traits: tuple[Trait, ...] = ()) -> None:
    tags = st.tags.tags if st.tags is not None else frozenset()
    res = evaluate(ruleset, st.rules, item, _ProfileView(st.profile, rows, now_ms, traits, st.traits), tags, now_ms)
    st.rules = res.new_state
    due = next_due(ruleset, st.rules)  # where work is, not every time the engine asked for (bounded)
    st.rule_timers = [due] if due is not None else []
    for a in res.actions:
        out.append(Output("budget" if a.budget_max is not None else "action", a))
    for s in res.suppressed:
        out.append(Output("suppressed", s))


def _tags(st: PersonState, tagset: TagSet, ruleset: RuleSet | None, rows: RowStore, now_ms: int, cause: str,
          out: list[Output], traits: tuple[Trait, ...] = ()) -> None:
    fields = st.profile.fields() if not st.profile.is_empty() else {}
    if fields and st.traits is not None:  # ``traits.<name>``: the values last written (as of last_seen)
        fields["traits"] = rules_profile(st.traits.out)
    tags, changes, due, st.memo = tag_step_memo(st.tags, fields, now_ms, tagset, st.memo, person=st.person,
                                                cause=cause)
    st.tags, st.tag_due, st.now_ms = tags, due or 0, now_ms
    for c in changes:
        out.append(Output("tag", c))
        if ruleset is not None:
            _rules(st, ruleset, RuleTagInput(st.person, c.tag, c.op == "add", c.ts_ms), rows, now_ms, out, traits)


def _trait_values(st: PersonState, traits: tuple[Trait, ...], out: list[Output]) -> bool:
    """Emit each trait whose value as of ``last_seen`` changed since it was last emitted (all of them cleared
    when the person has no profile left: a split or merge moved everything away); True when one changed."""
    n_out = len(out)
    tb = st.traits
    if tb is None:
        tb = st.traits = TraitBuckets()
    last = st.profile.last
    if st.profile.is_empty():
        new: dict[str, Any] = {}
    else:
        tb.fold(last)
        new = {k: v for k, v in tb.values(traits, last).items() if v is not None}
    for name in [n for n in tb.out if n not in new]:
        del tb.out[name]
        out.append(Output("trait", TraitValue(st.person, name, None, last)))
    for name, v in new.items():
        if tb.out.get(name) != v or name not in tb.out:
            tb.out[name] = v
            out.append(Output("trait", TraitValue(st.person, name, v, last)))
    return len(out) > n_out


def on_rows(st: PersonState, rows_in: list[list[Any]], rows: RowStore, tagset: TagSet,
            ruleset: RuleSet | None, schema: EventSchema | None = None, traits: tuple[Trait, ...] = ()) -> list[Output]:
    """Run one bundle's rows in order (see the module docstring); ``st`` is updated in place. ``schema``:
    the declared event schema (props reach the rules with their declared types); ``traits``: the declared
    computed traits (``operators.traits.compile_traits``)."""
    out: list[Output] = []
    changed, newest, traits_changed = False, 0, False
    for r in rows_in:
        kind = r[1]
        if kind == "m":
            op, minute = r[2], r[3]
            b = _bucket(r)
            if op == "UPDATE_BEFORE":
                st.pending_old[minute] = b
                continue
            old: Bucket | None
            new: Bucket | None
            if op == "DELETE":
                old, new = b, None
            elif op == "UPDATE_AFTER":
                old, new = st.pending_old.pop(minute, None), b
            else:
                old, new = None, b
            if st.profile.apply(rows, minute, old, new):
                changed = True
                newest = max(newest, b[6])
        elif kind == "e" and ruleset is not None:
            event = _event(st.person, r, schema)
            _rules(st, ruleset, event, rows, event.ts_ms, out, traits)
        elif kind == "x":  # after the others: a job without traits pays nothing for them
            if st.traits is None:
                st.traits = TraitBuckets()
            new_p = None if r[2] == "DELETE" else row_partial(r)
            traits_changed |= st.traits.apply(r[12], r[3], r[13] or "", new_p, st.profile.last)
    if traits and (changed or traits_changed) and _trait_values(st, traits, out):
        changed = True  # a tag may read traits.<name>
    if changed:
        _tags(st, tagset, ruleset, rows, max(newest, st.now_ms), "profile", out, traits)
    return out


def run_due(st: PersonState, watermark: int, rows: RowStore, tagset: TagSet, ruleset: RuleSet | None,
            traits: tuple[Trait, ...] = ()) -> list[Output]:
    """Everything due at or before ``watermark``, one due time after the other in time order (each exactly as
    a timer at that time): what the shell runs before a bundle's rows and when the person's timer fires.

    The shell keeps the person's one Flink timer up to ``job.timer_slack_ms`` after the next due time, so
    that for an active person the due work is usually done here, at the next bundle, with no timer callback
    of its own (a callback is a crossing into Python and a state write); an idle person's timer fires."""
    out: list[Output] = []
    while True:
        t = st.next_timer
        if not t or t > watermark:
            return out
        out += on_timer(st, t, watermark, rows, tagset, ruleset, traits)


def on_timer(st: PersonState, t: int, watermark: int, rows: RowStore, tagset: TagSet,
             ruleset: RuleSet | None, traits: tuple[Trait, ...] = ()) -> list[Output]:
    """The person's timer fired at ``t`` (the watermark is ``watermark``): the tags' flip due at ``t`` and the
    engine's work due by ``t``. At the end of a bounded input (``watermark`` = ``END_OF_INPUT``) the tags do
    not flip (that time has not come; their due time is dropped), the engine's timers still run."""
    out: list[Output] = []
    if st.tag_due and st.tag_due <= t:
        if watermark >= END_OF_INPUT:
            st.tag_due = 0
        elif t >= st.now_ms:
            _tags(st, tagset, ruleset, rows, t, "timer", out, traits)
        else:  # cannot happen: a row evaluated after t would have moved the flip
            st.tag_due = 0
    if st.rule_timers and st.rule_timers[0] <= t:
        st.rule_timers = [x for x in st.rule_timers if x > t]
        if ruleset is not None and st.rules is not None:
            _rules(st, ruleset, None, rows, t, out, traits)
        if st.rule_timers and st.rule_timers[0] <= t:
            # a due time the engine's state still names but its step did not move past (never loop on it)
            st.rule_timers = []
    return out
