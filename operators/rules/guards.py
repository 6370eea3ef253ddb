"""Guard rails every candidate action passes, in a fixed order (pure).

Order (the first guard that stops an action gives its reason; docs/rules.md has the table):

1. ``group_excluded``: priority and mutual-exclusion groups. Of the rules whose condition is true
   for ONE trigger, only the first of each ``group`` acts (highest ``priority``, ties by rule id);
   :func:`select_by_group`. Decided first: a lower rule does not take over when the winner is
   stopped by a later guard.
2. ``no_consent``: the channel's consent (:func:`consent_allows`), from the person's latest
   ``consent``/``unsubscribe`` event by event time. Policy mode per channel: ``opt_in`` (needs a
   grant), ``opt_out`` (allowed unless revoked), ``none``; a rule's ``consent_required`` turns
   ``opt_out``/``none`` into ``opt_in``, ``consent_channel`` checks another channel's consent.
3. ``quiet_hours``: the rule's quiet hours in the person's time zone (profile ``timezone``, else
   the rule's, else the policy default). ``hold`` → the action is held until the window ends
   (:func:`quiet_release_ms`) and passes guards 2-4 again then; ``drop`` → suppressed.
4. ``frequency_capped``: the rule's own caps (sends of this rule to this person), then the policy
   caps in file order (sends to the cap's channels: one channel = per-channel cap, several =
   across all marketing messages); :func:`frequency_block`.
5. ``budget_exhausted``: the campaign budget, decided downstream by :func:`budget_step` in a step
   keyed by campaign id (exact at any parallelism: one key, one sequential state).

An action that passes 1-4 is recorded as a send at its event time (so a later budget denial still
counts towards the person's caps: caps can only err on the side of sending less).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from operators.rules.model import CHANNELS, Event, Policy, QuietHours, Rule

__all__ = [
    "BudgetState", "Consent", "Send", "budget_step", "consent_allows", "frequency_block", "person_zone",
    "prune_sends", "quiet_release_ms", "select_by_group", "update_consent",
]

_MIN_MS = 60_000


# ------------------------------------------------------------------------------------------- groups


def select_by_group(firing: Sequence[Rule]) -> tuple[list[Rule], list[tuple[Rule, Rule]]]:
    """Split the rules firing for one trigger into (acting, [(excluded, winner)]).

    ``firing`` may come in any order; the winner of a group is the highest priority, ties broken
    by the smaller rule id. Rules without a group always act. Acting rules keep priority order.
    """
    ordered = sorted(firing, key=lambda r: (-r.priority, r.id))
    winners: dict[str, Rule] = {}
    acting: list[Rule] = []
    excluded: list[tuple[Rule, Rule]] = []
    for r in ordered:
        if r.group is None:
            acting.append(r)
        elif r.group in winners:
            excluded.append((r, winners[r.group]))
        else:
            winners[r.group] = r
            acting.append(r)
    return acting, excluded


# ------------------------------------------------------------------------------------------ consent


@dataclass(frozen=True, slots=True)
class Consent:
    """The latest consent decision for one channel (event time ``ts_ms``)."""

    channel: str
    granted: bool
    ts_ms: int


_TRUE = {True, "true", "yes", "1", "opt_in", "granted", "subscribe", "subscribed"}


def update_consent(consent: tuple[Consent, ...], event: Event) -> tuple[Consent, ...]:
    """Fold a ``consent`` or ``unsubscribe`` event into the per-channel consent.

    ``consent``: ``props.channel`` (or ``props.channels``, a list; absent = every channel) and
    ``props.granted`` (true/false; also ``props.status`` opt_in/opt_out). ``unsubscribe``:
    ``props.channel``/``channels`` (absent = every channel), never a grant. The latest event time
    wins; at the same ms a revocation wins. Other events leave consent unchanged.
    """
    if event.event_type not in ("consent", "unsubscribe"):
        return consent
    p = event.props
    raw_chans = p.get("channels") or p.get("channel") or list(CHANNELS)
    chans = [raw_chans] if isinstance(raw_chans, str) else raw_chans if isinstance(raw_chans, (list, tuple)) else []
    if event.event_type == "unsubscribe":
        granted = False
    else:
        raw = p.get("granted", p.get("status"))
        granted = isinstance(raw, (bool, int, str)) and (raw.lower() if isinstance(raw, str) else raw) in _TRUE
    cur = {c.channel: c for c in consent}
    for ch in chans:
        if not isinstance(ch, str) or ch not in CHANNELS:
            continue
        old = cur.get(ch)
        if old is None or event.ts_ms > old.ts_ms or (event.ts_ms == old.ts_ms and not granted):
            cur[ch] = Consent(ch, granted, event.ts_ms)
    return tuple(sorted(cur.values(), key=lambda c: c.channel))


def consent_allows(consent: tuple[Consent, ...], channel: str, policy: Policy, rule: Rule) -> tuple[bool, str]:
    """(allowed, detail). The channel checked is ``rule.constraints.consent_channel`` or ``channel``."""
    ch = rule.constraints.consent_channel or channel
    mode = policy.consent.get(ch, "opt_in")
    if rule.constraints.consent_required:
        mode = "opt_in"
    if mode == "none":
        return True, ""
    entry = next((c for c in consent if c.channel == ch), None)
    if mode == "opt_out":
        return (entry is None or entry.granted), f"{ch}:opted_out"
    return (entry is not None and entry.granted), f"{ch}:{'opted_out' if entry else 'no_opt_in'}"


# -------------------------------------------------------------------------------------- quiet hours


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def person_zone(profile: Mapping[str, Any] | None, rule_tz: str | None, policy: Policy) -> str:
    """The time zone for quiet hours: the profile's ``timezone`` if valid, else the rule's, else the policy's."""
    tz = (profile or {}).get("timezone")
    if isinstance(tz, str) and _zone(tz) is not None:
        return tz
    return rule_tz or policy.default_timezone


def _in_window(minute: int, qh: QuietHours) -> bool:
    if qh.start_min < qh.end_min:
        return qh.start_min <= minute < qh.end_min
    return minute >= qh.start_min or minute < qh.end_min


def quiet_release_ms(qh: QuietHours, tz_name: str, ts_ms: int) -> int | None:
    """None if ``ts_ms`` is outside the quiet window in ``tz_name``; else the epoch ms it ends.

    Wall-clock semantics (zoneinfo): the window is [start, end) local time on the local calendar,
    so across a DST change the window keeps its local times and the release is the UTC instant of
    the local ``end`` that day (``08:00`` New York is 12:00 UTC in summer, 13:00 in winter). An
    ``end`` that falls into a spring-forward gap releases at the PEP 495 ``fold=0`` instant, i.e.
    the wall time shifted by the gap (02:30 → 03:30), never inside the window. An ambiguous ``end``
    (the repeated hour of a fall-back) releases at the first of its two instants after ``ts_ms``.
    """
    zone = _zone(tz_name) or ZoneInfo("UTC")
    local = datetime.fromtimestamp(ts_ms / 1000, tz=UTC).astimezone(zone)
    minute = local.hour * 60 + local.minute
    if not _in_window(minute, qh):
        return None
    day = local.date()
    if qh.start_min >= qh.end_min and minute >= qh.start_min:
        day = day + timedelta(days=1)  # evening part of a window that wraps midnight
    h, m = divmod(qh.end_min, 60)
    # An ambiguous end (the repeated hour of a fall-back) has two instants: the first one after ts.
    # A nonexistent one (spring-forward gap) has none: fold=0, the wall time shifted by the gap.
    ends = []
    for fold in (0, 1):
        ms = int(datetime(day.year, day.month, day.day, h, m, tzinfo=zone, fold=fold).timestamp() * 1000)
        back = datetime.fromtimestamp(ms / 1000, tz=zone)
        if (back.hour, back.minute) == (h, m):
            ends.append(ms)
    if not ends:
        return int(datetime(day.year, day.month, day.day, h, m, tzinfo=zone).timestamp() * 1000)
    return next((e for e in sorted(ends) if e > ts_ms), max(ends))


# ---------------------------------------------------------------------------------------- frequency


@dataclass(frozen=True, slots=True)
class Send:
    """One action that passed the guards: when (event time), which rule, which channel, and which
    firing of the rule (actions of one rule for one trigger share it; a rule cap counts firings)."""

    ts_ms: int
    rule_id: str
    channel: str
    firing: str = ""


def prune_sends(sends: tuple[Send, ...], newest_ms: int, max_window_ms: int) -> tuple[Send, ...]:
    """Drop sends that no cap can count any more (older than ``newest_ms - max_window_ms``)."""
    floor = newest_ms - max_window_ms
    return tuple(s for s in sends if s.ts_ms > floor)


def _count_near(sends: Iterable[Send], ts_ms: int, window_ms: int) -> int:
    # |s.ts - ts| < window: a send of any arrival order within one window length either side.
    return sum(1 for s in sends if abs(s.ts_ms - ts_ms) < window_ms)


def frequency_block(sends: tuple[Send, ...], rule: Rule, channel: str, policy: Policy, ts_ms: int,
                    firing: str = "") -> str | None:
    """The first cap a send at ``ts_ms`` would break, as a detail (``rule:30d`` …), or None.

    A cap of ``max`` per ``window`` blocks when ``max`` recorded sends lie within ``window`` of
    ``ts_ms`` on either side. With sends in event-time order this is the usual trailing window;
    with out-of-order triggers it still guarantees that no window of that length ever holds more
    than ``max`` sends. A rule's own cap counts its other firings (``firing`` names this one, so
    the second action of one firing is not capped by the first); policy caps count messages.
    """
    own = {s.firing: s for s in sends if s.rule_id == rule.id and s.firing != firing}.values()
    for cap in rule.constraints.frequency:
        if _count_near(own, ts_ms, cap.window_ms) >= cap.max:
            return f"{cap.name} ({cap.max} per {cap.window_ms // _MIN_MS} min)"
    for cap in policy.frequency:
        if channel not in (cap.channels or ()):
            continue
        if _count_near((s for s in sends if s.channel in (cap.channels or ())), ts_ms, cap.window_ms) >= cap.max:
            return f"{cap.name} ({cap.max} per {cap.window_ms // _MIN_MS} min)"
    return None


# ------------------------------------------------------------------------------------------- budget


@dataclass(frozen=True, slots=True)
class BudgetState:
    """Granted count of one campaign (the step is keyed by campaign id)."""

    campaign: str
    spent: int = 0


def budget_step(state: BudgetState | None, requests: Sequence[Any]) -> tuple[BudgetState | None, tuple[Any, ...], tuple[Any, ...]]:
    """Grant budgeted actions of ONE campaign in the order given, while ``spent < budget_max``.

    ``requests`` are :class:`operators.messages.Action` records (all of one campaign, each with
    ``budget_max`` set; the job keys this step by ``campaign``). Returns (state, granted, denied);
    the budget of a request is its own ``budget_max`` (give every rule of a campaign the same
    max). Denied actions are to be recorded as suppressed with reason ``budget_exhausted``. Because
    one key's state is updated sequentially and checkpointed with the Kafka offsets, the total
    granted never exceeds the max at any parallelism, also through restarts.
    """
    if not requests:
        return state, (), ()
    st = state or BudgetState(requests[0].campaign)
    granted, denied = [], []
    spent = st.spent
    for a in requests:
        if a.campaign != st.campaign:
            raise ValueError(f"budget_step for campaign {st.campaign!r} got action {a.action_id} of campaign "
                             f"{a.campaign!r}; key the budget step by Action.campaign")
        if a.budget_max is not None and spent < a.budget_max:
            spent += 1
            granted.append(a)
        else:
            denied.append(a)
    return replace(st, spent=spent), tuple(granted), tuple(denied)
