"""``tag_step_memo``: the tag step that re-evaluates only what can have changed since the person's
previous step (a ``TagMemo`` in memory, never in state); its results equal ``tag_step``'s."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from operators.expr import Expr
from operators.messages import TagChange
from operators.tags.fields import profile_env
from operators.tags.records import TagState
from operators.tags.step import diff_tags
from operators.tags.tagset import TagSet


@dataclass(frozen=True)
class TagMemo:
    """What ``tag_step_memo`` remembers about one person between two steps (in memory, never in state).

    ``fields``: the profile of the last step. ``entries``: per enabled tag of ``tagset``,
    ``(member, until, timer_before, since)``: whether the expression was true at ``since`` (the time
    it was evaluated); the time up to which that value holds while the names it reads keep their
    values (``next_change_ms``; None = for ever, and always None without time functions); and the
    time before which ``until`` is also what ``next_change_ms`` answers (None = always;
    ``_UNCHECKED`` = not worked out yet, done on first reuse). That is ``until`` itself when the
    membership flips there; when the search of ``next_change_ms`` stopped after ``MAX_CHANGE_STEPS``
    steps without a flip, its answer moves with ``now`` once ``now`` passes the search's first step
    (the first candidate time after ``since``), so it is that first step.
    """

    tagset: TagSet
    fields: Mapping[str, Any]
    entries: Mapping[str, tuple[bool, int | None, int | None, int]]


_UNCHECKED = -1


def _fresh_entry(expr: Expr, env: Mapping[str, Any], now_ms: int, member: bool) -> tuple[bool, int | None, int | None, int]:
    """The memo entry of a tag whose value at ``now_ms`` is ``member`` (see ``TagMemo``)."""
    if not expr.uses_time:
        return member, None, None, now_ms
    t = expr.next_change_ms(env, now_ms)
    return member, t, (None if t is None else _UNCHECKED), now_ms


def _timer_before(expr: Expr, env: Mapping[str, Any], entry: tuple[bool, int | None, int | None, int]) -> int:
    """``timer_before`` of an entry with a time ``until`` (``TagMemo``); ``env`` has the same inputs."""
    member, until, _, since = entry
    assert until is not None  # only entries with a time are asked
    if (expr.evaluate(env, until) is True) != member:
        return until
    # The search stopped without a flip: ``next_change_ms`` steps to the candidate time, at least one
    # ms on; the candidate is not None (else the search had answered None).
    cand = expr._cand(env, since) if expr._cand is not None else None
    assert cand is not None
    return max(cand, since + 1)


def tag_step_memo(
    state: TagState | None,
    profile: Mapping[str, Any],
    now_ms: int,
    tagset: TagSet,
    memo: TagMemo | None,
    *,
    person: str,
    cause: str = "profile",
) -> tuple[TagState | None, list[TagChange], int | None, TagMemo | None]:
    """``tag_step`` that re-evaluates only what can have changed: ``(state, changes, timer, memo)``.

    The first three results are exactly ``tag_step``'s for the same arguments, whatever ``memo`` is
    (a test compares them on random steps). ``memo`` is the previous call's result for this person,
    or None (then every tag is evaluated). A tag keeps its remembered value when none of the names its
    expression reads changed and ``now_ms`` is before the value's ``until`` (``next_change_ms``: the
    value cannot change before it); its share of the timer is asked again only when ``now_ms`` reached
    the entry's ``timer_before`` (``TagMemo``). A new tag set object evaluates everything.
    """
    old = state.tags if state is not None else frozenset()
    if not profile:
        new = old & tagset.paused
        return (TagState(new, tagset.version) if new else None), \
            diff_tags(person, old, new, now_ms, cause, tagset_version=tagset.version), None, None
    prev = memo.entries if memo is not None and memo.tagset is tagset else None
    changed: set[str] = set()
    if prev is not None:
        before = memo.fields  # type: ignore[union-attr]
        changed = {k for k, v in profile.items() if before.get(k, _ABSENT) != v}
        changed.update(k for k in before if k not in profile)
        if changed:
            changed.add("profile")
    env: Mapping[str, Any] | None = None
    entries: dict[str, tuple[bool, int | None, int | None, int]] = {}
    members: list[str] = []
    next_timer: int | None = None
    for d in tagset._active:
        expr = d.expr
        entry = prev.get(d.name) if prev is not None else None
        if entry is not None and (entry[1] is None or now_ms < entry[1]) and expr.names.isdisjoint(changed):
            before = entry[2]
            if before is not None and now_ms >= before:
                if env is None:
                    env = profile_env(profile)
                if before == _UNCHECKED:
                    before = _timer_before(expr, env, entry)
                    entry = (entry[0], entry[1], before, entry[3])
                if now_ms >= before:
                    entry = _fresh_entry(expr, env, now_ms, entry[0])
        else:
            if env is None:
                env = profile_env(profile)
            entry = _fresh_entry(expr, env, now_ms, expr.evaluate(env, now_ms) is True)
        entries[d.name] = entry
        if entry[0]:
            members.append(d.name)
        t = entry[1]
        if t is not None and (next_timer is None or t < next_timer):
            next_timer = t
    new = frozenset(members) | (old & tagset.paused)
    changes = diff_tags(person, old, new, now_ms, cause, tagset_version=tagset.version) if new != old else []
    return (TagState(new, tagset.version) if new else None), changes, next_timer, TagMemo(tagset, profile, entries)


_ABSENT = object()
