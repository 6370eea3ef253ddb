"""Tag definitions (operators/tags/): loading with exact YAML positions, evaluation on real profiles,
timers, control messages, diffs and the per-person step."""

from __future__ import annotations

import pickle
import subprocess
import sys
from decimal import Decimal

import pytest

from operators import profile_windows
from operators.tags import (
    MONEY_FIELDS,
    PROFILE_FIELDS,
    TAGS_FILE,
    ControlResult,
    TagChange,
    TagConfigError,
    TagMemo,
    TagSet,
    TagState,
    diff_tags,
    profile_env,
    tag_step,
    tag_step_memo,
)
from tests.helpers import ROOT

D = 86_400_000
H = 3_600_000
T = 1_764_028_800_000 + 5 * H + 123  # 2025-11-25 05:00:00.123 UTC


def profile_hash(**f: object) -> dict[str, str]:
    return {k: str(v) for k, v in f.items()}


def lapsed_vip() -> dict[str, object]:
    """A real profile: 9 purchases, 4 of them 60 days ago, last purchase 41 days ago, a cart 2 h ago."""
    last_seen = T - H
    h = profile_hash(
        first_seen=T - 200 * D, last_seen=last_seen, events=412, views=300, carts=25, purchases=9, gmv_cents=612050,
        last_purchase=T - 41 * D,
    )
    h[f"dp:{(T - 60 * D) // D}"] = "4"
    h[f"dg:{(T - 60 * D) // D}"] = "182000"
    h[f"dp:{(T - 41 * D) // D}"] = "1"
    h[f"dg:{(T - 41 * D) // D}"] = "1000"
    h[f"hc:{(T - 2 * H) // H}"] = "1"
    h[f"hv:{(T - 2 * H) // H}"] = "3"
    h[f"m:{(T - 2 * H) // 60_000}"] = "3,1,0,4,0,0,0,0"
    return profile_windows.evaluate(h)


def newcomer() -> dict[str, object]:
    return profile_windows.evaluate(profile_hash(first_seen=T - 2 * D - 5, last_seen=T - 2 * D, events=3, views=3, carts=0,
                                                 purchases=0, gmv_cents=0))


SHIPPED = TagSet.load()


# ---------------------------------------------------------------------------------------------- fields and the shipped file


def test_profile_fields_are_what_profile_windows_returns():
    assert PROFILE_FIELDS == frozenset({
        "first_seen", "last_seen", "last_purchase", "events", "views", "carts", "purchases", "gmv", "views_1h",
        "views_24h", "views_7d", "carts_7d", "purchases_30d", "gmv_30d", "purchases_90d", "gmv_90d",
    })
    assert MONEY_FIELDS == frozenset({"gmv", "gmv_30d", "gmv_90d"})
    assert set(lapsed_vip()) == PROFILE_FIELDS  # a real profile carries exactly these
    env = profile_env({"gmv": "12.50", "gmv_30d": "oops", "views": 3})
    assert env["gmv"] == Decimal("12.50") and env["gmv_30d"] is None and env["profile"]["gmv"] == Decimal("12.50")


def test_shipped_tags_load_with_descriptions():
    assert SHIPPED.version == 1 and SHIPPED.source == str(TAGS_FILE)
    assert [d.name for d in SHIPPED.definitions] == [
        "cart_abandoner", "churn_risk", "high_value", "new_user", "potential_churn", "vip_lapsed"]
    assert all(d.description and d.enabled and d.version == 1 for d in SHIPPED.definitions)
    assert SHIPPED.get("high_value").description.startswith("高价值客户")
    assert SHIPPED.get("vip_lapsed").expr.text == "gmv >= 5000 and days_since(last_purchase) >= 30"


def test_shipped_tags_on_real_profiles():
    vip = lapsed_vip()
    assert (vip["gmv"], vip["gmv_90d"], vip["purchases_90d"], vip["purchases_30d"], vip["carts_7d"]) == ("6120.50", "1830.00", 5, 0, 1)
    assert SHIPPED.evaluate(vip, T) == frozenset({"high_value", "churn_risk", "vip_lapsed", "cart_abandoner"})
    # the same person 13 days after their last visit also becomes a potential churner at exactly 14 days
    assert "potential_churn" not in SHIPPED.evaluate(vip, T - H + 14 * D - 1)
    assert "potential_churn" in SHIPPED.evaluate(vip, T - H + 14 * D)
    assert SHIPPED.evaluate(newcomer(), T) == frozenset({"new_user"})
    assert SHIPPED.evaluate({}, T) == frozenset()
    # never purchased: days_since(null) is null, so churn/lapsed tags stay off however long ago
    never = dict(newcomer(), purchases=2, gmv="9000.00")
    assert "last_purchase" not in never and SHIPPED.evaluate(never, T + 400 * D) == frozenset()
    # negative control: the same person with a last purchase long ago does get both
    assert SHIPPED.evaluate(dict(never, last_purchase=T - 31 * D), T) == frozenset({"churn_risk", "vip_lapsed", "new_user"})


def test_next_flip_is_the_earliest_tag_boundary():
    vip = lapsed_vip()
    # vip at T: potential_churn flips at last_seen + 14 d; nothing earlier can change
    assert SHIPPED.next_flip_ms(vip, T) == T - H + 14 * D
    new = newcomer()
    assert SHIPPED.next_flip_ms(new, T) == T - 2 * D - 5 + 7 * D  # new_user ends
    assert SHIPPED.next_flip_ms({}, T) is None


# ---------------------------------------------------------------------------------------------- timers via tag_step


def test_tag_step_timer_flips_exactly_at_the_boundary():
    new = newcomer()
    state, changes, timer = tag_step(None, new, T, SHIPPED, person="p1")
    assert state == TagState(frozenset({"new_user"}), 1)
    assert changes == [TagChange("p1", "new_user", "add", T, "profile", 1)]
    boundary = T - 2 * D - 5 + 7 * D
    assert timer == boundary
    # negative control: one ms early nothing changes (a timer scheduled by "now + 1 day" granularity would be wrong)
    early_state, early_changes, early_timer = tag_step(state, new, boundary - 1, SHIPPED, person="p1", cause="timer")
    assert (early_state, early_changes, early_timer) == (state, [], boundary)
    end_state, end_changes, end_timer = tag_step(state, new, boundary, SHIPPED, person="p1", cause="timer")
    assert end_state is None  # no tag left: the key is cleared
    assert end_changes == [TagChange("p1", "new_user", "remove", boundary, "timer", 1)]
    assert end_timer is None  # 3 events: potential_churn needs 10, nothing else can flip


def test_time_based_churn_tag_flips_without_events():
    vip = lapsed_vip()
    ts = TagSet.from_yaml_text(
        "tags:\n  - name: idle_buyer\n    description: no purchase for 45 days\n"
        "    expression: days_since(last_purchase) >= 45\n", "t.yaml")
    state, changes, timer = tag_step(None, vip, T, ts, person="p")
    assert (state, changes) == (None, [])
    assert timer == T - 41 * D + 45 * D
    state, changes, timer = tag_step(state, vip, timer, ts, person="p", cause="timer")
    assert changes == [TagChange("p", "idle_buyer", "add", T + 4 * D, "timer", 1)] and timer is None


# ---------------------------------------------------------------------------------------------- YAML errors with positions


def load_error(text: str) -> TagConfigError:
    with pytest.raises(TagConfigError) as info:
        TagSet.from_yaml_text(text, "conf/tags.yaml")
    return info.value


HEAD = "version: 2\ntags:\n  - name: ok\n    description: fine\n    expression: views > 1\n"


@pytest.mark.parametrize(
    "tail, line, column, message",
    [
        # plain scalar
        ("  - name: bad\n    description: d\n    expression: gmv_90d >= 1000 or purchase_90d >= 5\n", 8, 36,
         "unknown name 'purchase_90d'; did you mean 'purchases_90d' or 'purchases_30d' or 'purchases'?"),
        ("  - name: bad\n    description: d\n    expression: days_since(last_purchase_ms) >= 30\n", 8, 28,
         "unknown name 'last_purchase_ms'; did you mean 'last_purchase' or 'purchases' or 'purchases_90d'?"),
        ("  - name: bad\n    description: d\n    expression: gmv > 'high'\n", 8, 21, "'>' between a number and a string is always false"),
        ("  - name: bad\n    description: d\n    expression: views >\n", 8, 24, "unexpected end of expression: an operand is missing"),
        # literal block: the error is on the third line of the block
        ("  - name: bad\n    description: d\n    expression: |\n      views > 1\n        and carts > 0\n        and dayz_since(last_seen) > 3\n",
         11, 13, "unknown function 'dayz_since'; did you mean days_since()?"),
        # folded block
        ("  - name: bad\n    description: d\n    expression: >\n      views > 1 and\n      carts = 0\n", 10, 13,
         "'=' is not an operator; use '==' to compare"),
        # plain scalar continued on the next line
        ("  - name: bad\n    description: d\n    expression: views > 1\n      and carts = 0\n", 9, 17,
         "'=' is not an operator; use '==' to compare"),
        # double-quoted with an escape before the error, single-quoted with a doubled quote
        ('  - name: bad\n    description: d\n    expression: "views > 1 and \\"x\\" == lower(\'Y\') and gmv_99d > 0"\n', 8, 56,
         "unknown name 'gmv_99d'; did you mean 'gmv_90d' or 'gmv_30d' or 'gmv'?"),
        ("  - name: bad\n    description: d\n    expression: 'views > 1 and ''it'' == \"x\" and bogus > 0'\n", 8, 50,
         "unknown name 'bogus'; known: carts, carts_7d, events, first_seen, gmv, gmv_30d, gmv_90d, last_purchase, last_seen, profile, purchases, purchases_30d, purchases_90d, traits, views, views_1h, views_24h, views_7d"),
        # structure
        ("  - name: bad\n    description: d\n    expresion: views > 1\n", 8, 5,
         "unknown key 'expresion' in a tag definition; allowed: name, description, expression, enabled, version"),
        ("  - name: ok\n    description: d\n    expression: views > 2\n", 6, 11, "duplicate tag 'ok' (first defined at line 3)"),
        ("  - name: Bad-Name\n    description: d\n    expression: views > 2\n", 6, 11,
         "tag name 'Bad-Name' must match ^[a-z][a-z0-9_]{0,63}$ (lower case, digits, '_')"),
        ("  - name: bad\n    description: d\n", 6, 5, "tag definition without 'expression'"),
        ("  - name: bad\n    description: d\n    expression: views > 1\n    enabled: maybe\n", 9, 14, "'enabled' of bad must be true or false"),
        ("  - name: bad\n    description: d\n    expression: 42\n", 8, 17, "'expression' of bad must be text"),
        ("  - name: bad\n    description: d\n    expression: gmv + 1\n", 8, 17, "'expression' of bad must be a condition (true/false), it gives a number"),
        ("  - name: bad\n    description: d\n    description: e\n    expression: views > 1\n", 8, 5,
         "duplicate key 'description' in a tag definition (first at line 7)"),
        ("  - name: bad\n    description: '   '\n    expression: views > 1\n", 7, 18, "'description' of bad is empty"),
        ("  - name: bad\n    description: d\n    expression: [views\n", 9, 1, "invalid YAML: expected ',' or ']', but got '<stream end>'"),
    ],
)
def test_yaml_errors_point_at_file_line_and_column(tail, line, column, message):
    e = load_error(HEAD + tail)
    assert (e.source, e.line, e.column, e.message) == ("conf/tags.yaml", line, column, message)


def test_yaml_error_rendering_shows_the_yaml_line():
    e = load_error(HEAD + "  - name: bad\n    description: d\n    expression: gmv_90d >= 1000 or purchase_90d >= 5\n")
    assert str(e) == (
        "conf/tags.yaml:8:36: unknown name 'purchase_90d'; did you mean 'purchases_90d' or 'purchases_30d' or 'purchases'?\n"
        "        expression: gmv_90d >= 1000 or purchase_90d >= 5\n"
        "                                       ^"
    )


@pytest.mark.parametrize(
    "text, line, column, message",
    [
        ("", 1, 1, "empty tag file: expected 'tags:' with a list of tag definitions"),
        ("version: 1\n", 1, 1, "missing key 'tags' (a list of tag definitions)"),
        ("tags: {}\n", 1, 7, "'tags' must be a list of tag definitions ('- name: ...')"),
        ("version: 0\ntags: []\n", 1, 10, "'version' must be at least 1"),
        ("tagz: []\n", 1, 1, "unknown key 'tagz' in the tag file; allowed: version, tags"),
        ("- a\n", 1, 1, "the tag file must be a mapping with keys version, tags"),
    ],
)
def test_file_structure_errors(text, line, column, message):
    e = load_error(text)
    assert (e.line, e.column, e.message) == (line, column, message)


def test_valid_file_fields_and_paused_tags():
    ts = TagSet.from_yaml_text(HEAD + "  - name: quiet\n    description: d\n    expression: profile.views == 0\n    enabled: false\n    version: 7\n")
    assert ts.version == 2 and ts.paused == frozenset({"quiet"})
    q = ts.get("quiet")
    assert (q.version, q.enabled, q.expr.names) == (7, False, frozenset({"profile"}))
    assert ts.evaluate({"views": 0, "last_seen": 1}, 0) == frozenset()  # paused: not evaluated
    assert ts.evaluate({"views": 5}, 0) == frozenset({"ok"})


# ---------------------------------------------------------------------------------------------- control messages


def upsert(name: str, version: int, expression: str, **extra: object) -> dict:
    return {"kind": "tag", "op": "upsert", "name": name, "version": version,
            "definition": {"description": f"{name} v{version}", "expression": expression, **extra}}


def test_control_upsert_version_and_rejections_keep_the_old_set():
    ts0 = SHIPPED
    ts1, r1 = ts0.apply_control(upsert("big_spender", 1, "gmv >= 10000"))
    assert r1 == ControlResult("tag", "big_spender", 1, "applied", None, 2)
    assert ts1.version == 2 and ts1.get("big_spender").expr.text == "gmv >= 10000" and ts0.get("big_spender") is None
    for version in (1, 0):
        same, r = ts1.apply_control(upsert("big_spender", version, "gmv >= 1"))
        assert same is ts1 and r.status == "rejected"
    assert ts1.apply_control(upsert("big_spender", 1, "gmv >= 1"))[1].reason == \
        "version 1 is not greater than the current version 1 of tag 'big_spender'"
    assert ts1.apply_control(upsert("high_value", 1, "gmv >= 1"))[1].reason == \
        "version 1 is not greater than the current version 1 of tag 'high_value'"
    broken, r = ts1.apply_control(upsert("big_spender", 2, "gmv >= 10000 and"))
    assert broken is ts1 and r.status == "rejected"
    assert r.reason == ("invalid expression: control:tag:big_spender@v2:1:17: unexpected end of expression: an operand is missing\n"
                        "    gmv >= 10000 and\n                    ^")
    _, r = ts1.apply_control(upsert("big_spender", 2, "gmvv >= 1"))
    assert r.reason.startswith("invalid expression: control:tag:big_spender@v2:1:1: unknown name 'gmvv'; did you mean 'gmv'")
    ts2, r2 = ts1.apply_control(upsert("big_spender", 5, "gmv >= 20000"))
    assert r2.status == "applied" and ts2.version == 3 and ts2.get("big_spender").version == 5
    rich = {"gmv": "15000.00", "gmv_90d": "15000.00"}
    assert ts2.evaluate(rich, 0) == frozenset({"high_value"})
    assert ts1.evaluate(rich, 0) == frozenset({"high_value", "big_spender"})  # the old set is unchanged


@pytest.mark.parametrize(
    "msg, reason",
    [
        ("nope", "a control message must be a JSON object"),
        ({"kind": "rule", "op": "upsert", "name": "x", "version": 1}, "kind must be 'tag', got 'rule'"),
        ({"kind": "tag", "op": "drop", "name": "x", "version": 1}, "op must be one of upsert, delete, pause, resume, got 'drop'"),
        ({"kind": "tag", "op": "delete", "name": "X!", "version": 1}, "name must match ^[a-z][a-z0-9_]{0,63}$, got 'X!'"),
        ({"kind": "tag", "op": "delete", "name": "x", "version": True}, "version must be a positive integer, got True"),
        ({"kind": "tag", "op": "delete", "name": "x", "version": 2, "extra": 1},
         "unknown field(s) extra; allowed: definition, kind, name, op, version"),
        ({"kind": "tag", "op": "delete", "name": "nope", "version": 2}, "unknown tag 'nope'"),
        ({"kind": "tag", "op": "pause", "name": "high_value", "version": 2, "definition": {}}, "op 'pause' takes no definition"),
        ({"kind": "tag", "op": "upsert", "name": "fresh", "version": 1}, "upsert needs a 'definition' object with 'expression' (and 'description')"),
        ({"kind": "tag", "op": "upsert", "name": "fresh", "version": 1, "definition": {"expression": "views > 1"}},
         "definition.description must be a non-empty string"),
        (upsert("fresh", 1, "views > 1", colour="red"), "unknown definition field(s) colour; allowed: description, enabled, expression"),
        (upsert("fresh", 1, "views > 1", enabled="yes"), "definition.enabled must be true or false"),
        (upsert("fresh", 1, "views + 1"), "the expression must be a condition (true/false), it gives a number"),
        (upsert("fresh", 1, 5), "definition.expression must be a string"),
    ],
)
def test_control_rejections(msg, reason):
    same, r = SHIPPED.apply_control(msg)
    assert same is SHIPPED and r.status == "rejected" and r.reason == reason and r.tagset_version == 1


def test_control_delete_tombstone_pause_resume_through_tag_step():
    vip = lapsed_vip()
    state, _, _ = tag_step(None, vip, T, SHIPPED, person="p")
    assert state.tags == frozenset({"high_value", "churn_risk", "vip_lapsed", "cart_abandoner"})
    # pause: membership frozen, no change emitted, even when the expression would now say otherwise
    paused, r = SHIPPED.apply_control({"kind": "tag", "op": "pause", "name": "high_value", "version": 2})
    assert r.status == "applied" and paused.get("high_value").enabled is False and paused.version == 2
    no_gmv = dict(vip, gmv_90d="0.00", purchases_90d=0)
    s2, c2, _ = tag_step(state, no_gmv, T, paused, person="p", cause="tagset")
    assert s2 == TagState(state.tags, 2) and c2 == []
    # negative control: with the tag enabled the same profile removes it
    assert tag_step(state, no_gmv, T, SHIPPED, person="p")[1] == [TagChange("p", "high_value", "remove", T, "profile", 1)]
    resumed, r = paused.apply_control({"kind": "tag", "op": "resume", "name": "high_value", "version": 3})
    assert r.status == "applied" and resumed.get("high_value").enabled is True
    assert tag_step(s2, no_gmv, T, resumed, person="p")[1] == [TagChange("p", "high_value", "remove", T, "profile", 3)]
    # delete: members lose the tag at their next step; an old upsert cannot resurrect it
    deleted, r = resumed.apply_control({"kind": "tag", "op": "delete", "name": "vip_lapsed", "version": 2})
    assert r == ControlResult("tag", "vip_lapsed", 2, "applied", None, 4) and deleted.get("vip_lapsed") is None
    s3, c3, _ = tag_step(s2, vip, T, deleted, person="p", cause="tagset")
    assert c3 == [TagChange("p", "vip_lapsed", "remove", T, "tagset", 4)] and s3.tagset_version == 4
    replay, r = deleted.apply_control(upsert("vip_lapsed", 2, "gmv > 0"))
    assert replay is deleted and r.reason == "version 2 is not greater than the current version 2 of tag 'vip_lapsed'"
    assert deleted.apply_control({"kind": "tag", "op": "pause", "name": "vip_lapsed", "version": 9})[1].reason == "unknown tag 'vip_lapsed' (deleted)"
    back, r = deleted.apply_control(upsert("vip_lapsed", 3, "gmv >= 5000"))
    assert r.status == "applied" and back.get("vip_lapsed").version == 3 and dict(back.tombstones) == {}


def test_snapshot_and_pickle_round_trip():
    ts, _ = SHIPPED.apply_control({"kind": "tag", "op": "delete", "name": "new_user", "version": 4})
    ts, _ = ts.apply_control({"kind": "tag", "op": "pause", "name": "churn_risk", "version": 2})
    back = TagSet.from_snapshot(ts.to_snapshot())
    assert back == ts and back.tombstones == (("new_user", 4),) and back.paused == frozenset({"churn_risk"})
    again = pickle.loads(pickle.dumps(ts))
    assert again == ts and again.evaluate(lapsed_vip(), T) == ts.evaluate(lapsed_vip(), T)


# ---------------------------------------------------------------------------------------------- tag_step_memo


#: The shipped tags plus expressions whose next_change_ms search takes other paths: now() (a step per
#: ms), a non-monotone time term, money, ``profile.`` names and a comparison a search cannot reach.
MEMO_TAGS = TagSet.from_yaml_text("""
tags:
  - {name: recent_hour, description: t, expression: "now() - last_seen < 3600000 and views >= 3"}
  - {name: odd_day, description: t, expression: "days_since(first_seen) % 2 == 1"}
  - {name: big_spender, description: t, expression: "profile.gmv_30d >= 100 or hours_since(last_purchase) < 5"}
  - {name: lapsed_viewer, description: t, expression: "views_7d == 0 and days_since(last_seen) >= 3"}
  - {name: never_enough, description: t, expression: "carts > 1000000 and hours_since(last_seen) >= 1"}
  - {name: centennial, description: t, expression: "days_since(first_seen) % 100 == 99"}
""", "memo.yaml")


def _memo_walk(tagsets: list[TagSet], seed: int, steps: int, mutate=None) -> tuple[int, int]:
    """Random profile and timer steps of one person; tag_step_memo must answer exactly what tag_step
    does at every step. Returns (steps whose timer came from a remembered search, steps with a timer)."""
    import random

    from operators.profile import DictRows, Profile

    rnd = random.Random(seed)
    profile, rows, st_full, st_memo, memo = Profile.empty(), DictRows(), None, None, None
    now = T
    reused = timed = 0
    for i in range(steps):
        tagset = tagsets[(i * len(tagsets)) // steps]
        now += rnd.choice([1, 1000, 60_000, 30 * 60_000, H, 5 * H, D, 3 * D])
        kind = rnd.random()
        if kind < 0.7:  # a new or updated minute bucket
            e = rnd.random()
            b = (int(e < 0.6), int(0.6 <= e < 0.8), int(e >= 0.8), 1, 4000 if e >= 0.8 else 0, now, now,
                 now if e >= 0.8 else 0)
            profile.apply(rows, now // 60_000, rows.get(now // 60_000), b)
        elif kind < 0.75 and rows:  # a bucket moved away (merge)
            m = rnd.choice(list(rows))
            profile.apply(rows, m, rows[m], None)
        cause = "profile" if kind < 0.75 else "timer"  # else: time passes with the profile unchanged
        fields = profile.fields()
        full = tag_step(st_full, fields, now, tagset, person="p", cause=cause)
        if mutate is not None and memo is not None:
            memo = mutate(memo)
        got = tag_step_memo(st_memo, fields, now, tagset, memo, person="p", cause=cause)
        assert got[:3] == full, f"step {i}"
        if memo is not None and memo.tagset is tagset and full[2] is not None:
            timed += 1
            reused += any(e[1] == full[2] for e in memo.entries.values())
        st_full, (st_memo, _, _, memo) = full[0], got
    return reused, timed


COUNTS = [((139, 396), (91, 397)), ((130, 394), (85, 398)), ((128, 395), (114, 399)), ((110, 377), (92, 398))]


def test_tag_step_memo_answers_exactly_what_tag_step_does():
    paused, _ = SHIPPED.apply_control({"kind": "tag", "op": "pause", "name": "high_value", "version": 2})
    deleted, _ = paused.apply_control({"kind": "tag", "op": "delete", "name": "new_user", "version": 2})
    counts = [(_memo_walk([SHIPPED, paused, deleted], seed, 400), _memo_walk([MEMO_TAGS], seed + 100, 400))
              for seed in range(4)]
    # (steps whose timer a remembered entry already knew, steps with a timer): the memo is used
    assert counts == COUNTS
    from operators.profile import DictRows, Profile

    one = Profile.empty()
    one.apply(DictRows(), T // 60_000, None, (5, 1, 1, 1, 10000, T, T, T))
    fields = one.fields()
    state, changes, timer, memo = tag_step_memo(None, fields, T, MEMO_TAGS, None, person="p")
    assert (state, changes, timer) == (
        TagState(frozenset({"big_spender", "recent_hour"}), 1),
        [TagChange("p", "big_spender", "add", T, "profile", 1), TagChange("p", "recent_hour", "add", T, "profile", 1)],
        T + H)
    # (member, until, timer_before, since): timer_before is worked out when an entry is first reused
    assert memo.entries["recent_hour"] == (True, T + H, -1, T)
    assert memo.entries["centennial"] == (False, T + 64 * D, -1, T)
    assert memo.entries["never_enough"] == (False, None, None, T)
    again = tag_step_memo(state, fields, T + 1, MEMO_TAGS, memo, person="p")
    assert again[:3] == (state, [], T + H)
    assert again[3].entries["recent_hour"] == (True, T + H, T + H, T)  # flips then: the timer until then
    # centennial's search stops after 64 daily steps without a flip: its answer holds before the first step
    assert again[3].entries["centennial"] == (False, T + 64 * D, T + D, T)
    assert tag_step_memo(None, {}, T, MEMO_TAGS, memo, person="p") == (None, [], None, None)


def test_tag_step_memo_negative_control_a_memo_that_forgets_where_its_search_began():
    """Reusing a search's answer after ``now`` passed its first step gives other timers than tag_step."""
    def forget(memo: TagMemo) -> TagMemo:
        return TagMemo(memo.tagset, memo.fields, {k: (e[0], e[1], e[1], e[3]) for k, e in memo.entries.items()})

    only, _ = MEMO_TAGS.apply_control({"kind": "tag", "op": "delete", "name": "odd_day", "version": 2})
    for name in ("recent_hour", "big_spender", "lapsed_viewer", "never_enough"):
        only, _ = only.apply_control({"kind": "tag", "op": "delete", "name": name, "version": 2})
    assert [d.name for d in only.definitions] == ["centennial"]
    assert _memo_walk([only], 7, 400) == (348, 398)  # the real memo: equal at every step
    with pytest.raises(AssertionError, match="^step 14\n"):
        _memo_walk([only], 7, 400, mutate=forget)


# ---------------------------------------------------------------------------------------------- diffs and records


def test_diff_tags_and_records():
    changes = diff_tags("user_id:7", frozenset({"a", "c", "z"}), frozenset({"c", "b", "y"}), 42, "timer", tagset_version=9)
    assert [(c.op, c.tag) for c in changes] == [("remove", "a"), ("remove", "z"), ("add", "b"), ("add", "y")]
    assert changes[0].as_record() == {"person": "user_id:7", "tag": "a", "op": "remove", "ts": 42, "cause": "timer", "tagset_version": 9}
    assert diff_tags("p", frozenset({"a"}), frozenset({"a"}), 1, "x") == []
    assert ControlResult("tag", "a", 1, "rejected", "why", 3).as_record() == {
        "kind": "tag", "name": "a", "version": 1, "status": "rejected", "reason": "why", "tagset_version": 3}


def test_pure_modules_load_without_pyflink():
    code = "import sys; sys.modules['pyflink'] = None; import operators.expr, operators.tags; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout == "ok\n"


def test_yaml_positions_point_at_the_token_where_a_naive_offset_does_not():
    import yaml

    text = HEAD + ("  - name: bad\n    description: d\n    expression: |\n      views > 1\n"
                   "        and carts > 0\n        and dayz_since(last_seen) > 3\n")
    e = load_error(text)
    lines = text.split("\n")
    assert lines[e.line - 1][e.column - 1 :].startswith("dayz_since(")
    # negative control: the scalar's start mark plus the offset in the expression text lands elsewhere
    node = yaml.compose(text, Loader=yaml.SafeLoader).value[1][1].value[1].value[2][1]
    naive = node.start_mark.index + e.offset
    naive_line = text.count("\n", 0, naive) + 1
    naive_col = naive - text.rfind("\n", 0, naive)
    assert (naive_line, naive_col) != (e.line, e.column)
    assert not lines[naive_line - 1][naive_col - 1 :].startswith("dayz_since(")
