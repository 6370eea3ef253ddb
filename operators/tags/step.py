"""One person's tag step: evaluate the tag set on the profile, keep paused tags, drop deleted ones,
and say what changed and when the next timer is due."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from operators.messages import TagChange
from operators.tags.fields import profile_env
from operators.tags.records import TagState
from operators.tags.tagset import TagSet


def diff_tags(person: str, old: frozenset[str], new: frozenset[str], ts_ms: int, cause: str, *,
              tagset_version: int = 0) -> list[TagChange]:
    """The changes from ``old`` to ``new``: removals first, then additions, each sorted by tag."""
    return [TagChange(person, t, "remove", ts_ms, cause, tagset_version) for t in sorted(old - new)] + [
        TagChange(person, t, "add", ts_ms, cause, tagset_version) for t in sorted(new - old)
    ]


def tag_step(
    state: TagState | None,
    profile: Mapping[str, Any],
    now_ms: int,
    tagset: TagSet,
    *,
    person: str,
    cause: str = "profile",
) -> tuple[TagState | None, list[TagChange], int | None]:
    """One step for one person: ``(new state | None, changes, next timer ms | None)``.

    Call it when the person's profile changed (``cause="profile"``), when their timer fires
    (``cause="timer"``, ``now_ms`` = the timer's time) and when the tag set changed (``cause="tagset"``).
    Enabled tags are evaluated; paused tags keep their current members; deleted tags are removed.
    The state is None (clear the key) when the person carries no tag. ``next timer`` is the earliest
    event time at which a tag can flip with this profile (register it; an earlier timer can be
    replaced by it).
    """
    old = state.tags if state is not None else frozenset()
    if profile:
        env = profile_env(profile)
        new = tagset._evaluate_env(env, now_ms) | (old & tagset.paused)
        next_timer = tagset._next_flip_env(env, now_ms)
    else:
        new, next_timer = old & tagset.paused, None
    changes = diff_tags(person, old, new, now_ms, cause, tagset_version=tagset.version)
    return (TagState(new, tagset.version) if new else None), changes, next_timer
