"""A person's recommendations, read from Redis (the REST API, and an action's ``{{recs}}`` param at send time).

The job writes ``{prefix}:rec:item:{item}`` (each item's similar items) and ``{prefix}:rec:person:{person}``
(the person's recent weighted items and purchases) when ``recs.enabled`` (docs/recommendations.md). A
person's list is :func:`operators.recs.recommend.recommend` over them: the recent items' neighbours summed
with the recent item's weight, minus the recent items and the purchases.

``{{recs}}`` in an action: a rule's param written ``"{{recs}}"`` (or ``"{{recs:5}}"``) is carried verbatim in
the action (it is not an expression); :func:`fill_recs` replaces it with the person's list when the action
is sent. Why at send time and not in the job: the list lives in other keys' state (items), which the
person operator cannot read, and a list read from Redis inside the job would not replay the same.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from operators.recs.recommend import recommend
from state.recs import decode_window_row
from zhongtai.services.profiles import resolve_person

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import Settings

#: The largest k the API and ``{{recs:k}}`` accept.
MAX_K = 100
_RECS = re.compile(r"^\{\{\s*recs(?::(\d+))?\s*\}\}$")


def person_recommendations(store: Any, person: str, k: int) -> list[tuple[str, float]]:
    """Up to ``k`` (item, score) for ``person`` from ``store`` (a ``connectors.redis_store.RedisStore``)."""
    window = decode_window_row(store.rec_window(person))
    if window is None:
        return []
    neighbours = store.similar_items_many(list(dict.fromkeys(s.item for s in window.recent)))
    return recommend(window.recent, lambda item: neighbours.get(item, []), k,
                     exclude={i for i, _ in window.purchased})


def get_recommendations(settings: Settings, identifier: str, k: int = 10,
                        prefix: str | None = None) -> dict[str, object]:
    """``identifier`` (``type:value`` or a person id) → ``{identifier, person, items: [{item, score}...]}``;
    ``{}`` when no person has it. ``ValueError`` for a malformed identifier or a ``k`` out of 1..MAX_K."""
    from connectors.redis_store import RedisStore

    if not 1 <= k <= MAX_K:
        raise ValueError(f"k must be between 1 and {MAX_K}; got {k}")
    store = RedisStore(settings.redis, prefix=prefix)
    try:
        key, pid = resolve_person(settings, store, identifier)
        if pid is None:
            return {}
        items = person_recommendations(store, pid, k)
        return {"identifier": key, "person": pid, "items": [{"item": i, "score": s} for i, s in items]}
    finally:
        store.close()


def fill_recs(params: Mapping[str, Any], person: str,
              lookup: Callable[[str, int], list[tuple[str, float]]]) -> dict[str, Any]:
    """``params`` with every value ``"{{recs}}"`` / ``"{{recs:k}}"`` replaced by the person's list of item ids
    (``lookup(person, k)``, k = 10 by default); other values unchanged. ``ValueError`` for a k out of 1..MAX_K."""
    out = dict(params)
    for name, value in params.items():
        m = _RECS.match(value) if isinstance(value, str) else None
        if m is None:
            continue
        k = int(m.group(1) or 10)
        if not 1 <= k <= MAX_K:
            raise ValueError(f"action param {name!r}: {value!r} asks for {k} items; write {{{{recs:k}}}} with k "
                             f"between 1 and {MAX_K}")
        out[name] = [item for item, _ in lookup(person, k)]
    return out
