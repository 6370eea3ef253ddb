"""The person operator's one timer: ``engine.next_due`` and ``person.run_due`` fire exactly the engine's
timers that have work, in the same order, and the outputs equal the old way (every time the engine asked
for registered as its own timer, each fired when the watermark passed it).

A seeded random stream of rule events for a few persons (the shipped rules: cart abandonment, item views,
register without login, idle purchase, the onboarding journey, caps) is replayed both ways with the same
watermark (newest event time − 5 s, advanced between events); actions and suppressions must be equal. The
bounded part: the pending times stay at most one per person (the old list grew by one per purchase).
"""

from __future__ import annotations

import heapq
import random
from decimal import Decimal

from operators.person import PersonState, on_rows, run_due
from operators.profile import DictRows, Profile
from operators.rules.engine import evaluate
from operators.rules.model import Event
from operators.tags import TagSet
from pipelines.actions import load_ruleset

T0 = 1_767_232_800_000  # 10:00 in Shanghai: outside the shipped quiet hours
TYPES = ["page_view", "page_view", "page_view", "add_to_cart", "purchase", "register", "login"]
NO_TAGS = TagSet.from_yaml_text("tags: []", "none.yaml")


def _stream(seed: int, n: int) -> list[tuple[str, str, str, int, str]]:
    rnd = random.Random(seed)
    t = T0
    out = []
    for i in range(n):
        t += rnd.choice([1_000, 20_000, 60_000, 600_000, 3_600_000, 86_400_000])
        out.append((f"p{rnd.randrange(4)}", f"e{i}", rnd.choice(TYPES), t, f"item{rnd.randrange(3)}"))
    return out


def _old_way(rs, events):
    states: dict[str, object] = {}
    timers: dict[str, set[int]] = {}
    heap: list[tuple[int, str]] = []
    outs = []
    longest = 0

    def keep(p, res):
        states[p] = res.new_state
        for t in res.timers:
            if t not in timers.setdefault(p, set()):
                timers[p].add(t)
                heapq.heappush(heap, (t, p))
        outs.extend(("a", a.action_id) for a in res.actions)
        outs.extend(("s", s.action.action_id, s.reason) for s in res.suppressed)

    def fire(wm):
        while heap and heap[0][0] <= wm:
            t, p = heapq.heappop(heap)
            timers[p].discard(t)
            if states.get(p) is not None:
                keep(p, evaluate(rs, states[p], None, {}, frozenset(), t))

    for p, eid, et, ts, item in events:
        fire(ts - 5_000 - 1)
        keep(p, evaluate(rs, states.get(p), Event(eid, et, ts, p, {"item_id": item, "campaign": "(none)",
                                                                    "channel": "web", "amount": Decimal(0)}),
                         {}, frozenset(), ts))
        longest = max(longest, len(timers.get(p, ())))
    fire(2**63 - 1)
    return outs, longest


def _new_way(rs, events):
    persons: dict[str, PersonState] = {}
    outs = []
    longest = 0

    def keep(res):
        for o in res:
            if o.kind in ("action", "budget"):
                outs.append(("a", o.item.action_id))
            elif o.kind == "suppressed":
                outs.append(("s", o.item.action.action_id, o.item.reason))

    for p, eid, et, ts, item in events:
        for q, st in persons.items():  # every person's timer (slack 0): as the watermark passes
            keep(run_due(st, ts - 5_000 - 1, DictRows(), NO_TAGS, rs))
        st = persons.setdefault(p, PersonState(p, Profile.empty()))
        row = [ts, "e", eid, ts, None, None, None, None, "0", None, None, None, et, "(none)", "web", item, None]
        keep(on_rows(st, [row], DictRows(), NO_TAGS, rs))
        longest = max(longest, len(st.rule_timers))
    for st in persons.values():
        keep(run_due(st, 2**63 - 1, DictRows(), NO_TAGS, rs))
    return outs, longest


def test_one_timer_per_person_gives_the_same_actions() -> None:
    rs = load_ruleset()
    for seed in range(6):
        events = _stream(seed, 400)
        old, old_longest = _old_way(rs, events)
        new, new_longest = _new_way(rs, events)
        assert sorted(new) == sorted(old), seed
        assert len(old) > 20  # the stream makes the rules act
        assert new_longest <= 1 < old_longest  # bounded vs the old growing list (negative control)
