"""Tag definitions: load, validate, evaluate, hot-update, diff (pure).

A tag is a named boolean expression (operators/expr/) over a person's profile, i.e. the output of
``operators.profile_windows.evaluate`` (``PROFILE_FIELDS``; money fields arrive as 2-decimal strings
and are turned into exact ``Decimal`` values). Fields are available bare (``gmv_90d``) and under
``profile.`` (``profile.gmv_90d``); a missing field (``last_purchase`` of a person who never bought)
is null. Tags cannot read other tags or the event: rules do that (issue 4).

File format (``config/tags.yaml``)::

    version: 1                # optional: the tag set version (default 1)
    tags:
      - name: churn_risk      # ^[a-z][a-z0-9_]{0,63}$, unique
        description: ...      # required text
        expression: purchases >= 2 and days_since(last_purchase) >= 30
        enabled: true         # optional (default true); false = paused
        version: 1            # optional per-tag version (default 1)

Loading rejects unknown keys, duplicates, wrong types and broken expressions with
``file:line:column`` pointing into the YAML file (block scalars and quoted strings included).

Run-time changes come as control messages (``apply_control``), each with a per-tag version that must
be greater than the tag's current (or deleted) version; anything else is rejected with a reason and
the old ``TagSet`` keeps running. Every applied message gives a new ``TagSet`` whose ``version`` is
one higher, so all parallel instances that apply the same messages in the same order agree.

Semantics of the states of a tag for a person (``tag_step``):

* enabled: evaluated at every step; added / removed as the expression says;
* paused: memberships are frozen (neither added nor removed) until it is resumed or deleted;
* deleted: removed at the person's next step. The Flink wrapper should run ``tag_step`` for every
  key when the tag set changes (``applyToKeyedState``) so that removals and new tags do not wait for
  the person's next event.

Time: ``TagSet.next_flip_ms`` is the earliest event time after ``now_ms`` at which a tag can change
with the profile unchanged (``days_since(...)``...). Rolling window fields (``views_7d``...) are
computed by the profile as of ``last_seen`` and do not age by themselves; a wrapper that re-evaluates
the profile at timer time gets the aged windows, but only time functions schedule timers.

The package: ``fields`` (what an expression reads, ``profile_env``), ``records`` (definition, control
result, change, state), ``loading`` (the YAML file with exact positions), ``tagset`` (``TagSet``:
evaluation and control), ``step`` (``tag_step``, ``diff_tags``) and ``memo`` (``tag_step_memo``).
"""

from __future__ import annotations

from operators.messages import TagChange
from operators.tags.fields import MONEY_FIELDS, PROFILE_FIELDS, TAG_NAMES, profile_env
from operators.tags.loading import TAGS_FILE
from operators.tags.memo import TagMemo, tag_step_memo
from operators.tags.records import (
    TAG_NAME_RE,
    ControlResult,
    TagConfigError,
    TagDefinition,
    TagState,
)
from operators.tags.step import diff_tags, tag_step
from operators.tags.tagset import TagSet

__all__ = [
    "MONEY_FIELDS",
    "PROFILE_FIELDS",
    "TAGS_FILE",
    "TAG_NAMES",
    "TAG_NAME_RE",
    "ControlResult",
    "TagChange",
    "TagConfigError",
    "TagDefinition",
    "TagMemo",
    "TagSet",
    "TagState",
    "diff_tags",
    "profile_env",
    "tag_step",
    "tag_step_memo",
]
