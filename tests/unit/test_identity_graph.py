"""Semantics of the streaming identity graph on hand-built observations: merges and survivors, every
guard rail, shared devices and kiosks, the blocklist, split/block/unblock, the fast path, replays.

Pure and fast. Each guard test has a negative control (the rail relaxed: the persons fuse).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from operators.identity import (
    Change,
    ControlError,
    Edge,
    IdentityRules,
    Observation,
    apply_control,
    resolve_batch,
    step,
)
from operators.identity.rules import DEFAULT_LIMITS

from .test_identity_cases import RULES, detached_pid, feed, ob, pid

#: No guard rails: no limits, nothing shareable (plain connected components).
UNLIMITED = IdentityRules(limits={t: 10**6 for t in DEFAULT_LIMITS}, shareable=frozenset())


# --- merges, survivors, ids ------------------------------------------------------------------------


def test_first_observation_founds_one_person_named_after_its_strongest_identifier():
    res = step({}, ob(1, "e1", device_id="D", user_id="A"), RULES)
    assert res.path == "append"
    assert res.mappings == {"user_id:A": pid("user_id:A"), "device_id:D": pid("user_id:A")}
    assert res.changes == (
        Change("attach", pid("user_id:A"), None, ("device_id:D", "user_id:A"), 1, "event:e1"),
    )
    assert res.edges == (Edge("user_id:A", "device_id:D", True, "merged", 1, "e1"),)
    (cid,) = res.upserts
    assert res.index == {"user_id:A": cid, "device_id:D": cid} and res.deletes == ()


def test_merge_change_record_names_survivor_and_absorbed():
    g = feed([ob(1, "e1", device_id="b"), ob(2, "e2", device_id="a")])
    res = g.observe(ob(3, "e3", device_id="a", cookie_id="k"))
    assert res.mappings == {"cookie_id:k": pid("device_id:a")}
    res = g.observe(ob(4, "e4", device_id="b", cookie_id="k"))
    # anchor b (device b < cookie k); k's person is a's, founded later: b survives, a is absorbed.
    assert res.changes == (
        Change(
            "merge", pid("device_id:b"), pid("device_id:a"), ("cookie_id:k", "device_id:a"), 4, "event:e4"
        ),
    )
    assert res.mappings == {"cookie_id:k": pid("device_id:b"), "device_id:a": pid("device_id:b")}
    assert res.edges == (Edge("device_id:b", "cookie_id:k", True, "merged", 4, "e4"),)
    assert len(g.components) == 1


def test_two_components_joined_by_one_event_become_one():
    g = feed([ob(1, "e1", device_id="x"), ob(2, "e2", device_id="y", cookie_id="cy")])
    assert len(g.components) == 2
    big, small = g.index["device_id:y"], g.index["device_id:x"]
    res = g.observe(ob(3, "e3", device_id="x", cookie_id="cy"))
    # The component with more identifiers keeps its id; only x is re-indexed.
    assert res.deletes == (small,)
    assert list(g.components) == [big] and res.index == {"device_id:x": big}
    assert set(g.mapping.values()) == {pid("device_id:x")}


def test_ties_in_age_go_to_the_stronger_founder():
    g = feed([ob(5, "e", phone="h", email="m")])
    assert set(g.mapping.values()) == {pid("phone:h")}


# --- guard rails -----------------------------------------------------------------------------------


@pytest.mark.parametrize("id_type", list(DEFAULT_LIMITS))
def test_limit_per_type_detaches_the_identifier_over_it(id_type):
    """A chain of events each linking value k-1 and k of one type: the link that would give the
    person limit+1 values of the type is rejected and the new value detached; the rest stay."""
    limit = DEFAULT_LIMITS[id_type]
    v = [f"v{k:02d}" for k in range(limit + 1)]
    obs = [Observation(((id_type, v[k - 1]), (id_type, v[k])), k, f"e{k}") for k in range(1, limit + 1)]
    g = feed(obs)
    assert {g.mapping[f"{id_type}:{x}"] for x in v[:limit]} == {pid(f"{id_type}:v00")}
    assert g.mapping[f"{id_type}:{v[limit]}"] == detached_pid(f"{id_type}:{v[limit]}")
    last = g.observe(obs[-1])
    assert last.path == "fast"
    assert resolve_batch(obs, RULES) == g.mapping
    # Negative control: a higher limit fuses them all.
    relaxed = feed(obs, IdentityRules(limits={**DEFAULT_LIMITS, id_type: limit + 1}))
    assert set(relaxed.mapping.values()) == {pid(f"{id_type}:v00")}


def test_a_detached_device_no_longer_holds_together_whom_it_joined():
    """Dad's phone joined mum's person only through the tablet; once the tablet is found shared
    (the kid logs in on it), it is detached retroactively and dad's phone leaves too."""
    obs = [
        ob(1, "e1", user_id="mum", device_id="T"),
        ob(2, "e2", device_id="T", phone="dad"),
        ob(3, "e3", user_id="mum", email="m"),
    ]
    g = feed(obs)
    assert set(g.mapping.values()) == {pid("user_id:mum")}
    res = g.observe(ob(4, "e4", user_id="kid", device_id="T"))
    assert g.mapping == {
        "user_id:mum": pid("user_id:mum"),
        "email:m": pid("user_id:mum"),
        "phone:dad": pid("phone:dad"),
        "device_id:T": detached_pid("device_id:T"),
        "user_id:kid": pid("user_id:kid"),
    }
    assert set(res.changes) == {
        Change("attach", pid("user_id:kid"), None, ("user_id:kid",), 4, "event:e4"),
        Change("split", pid("user_id:mum"), detached_pid("device_id:T"), ("device_id:T",), 4, "event:e4"),
        Change("split", pid("user_id:mum"), pid("phone:dad"), ("phone:dad",), 4, "event:e4"),
    }
    assert resolve_batch([*obs, ob(4, "e4", user_id="kid", device_id="T")], RULES) == g.mapping


def test_rejected_edge_is_recorded_with_the_type_over_its_limit():
    g = feed([ob(1, "e1", user_id="A", cookie_id="c")])
    res = g.observe(ob(2, "e2", user_id="B", cookie_id="c"))
    assert res.edges == (Edge("user_id:B", "cookie_id:c", False, "limit:user_id", 2, "e2"),)
    assert res.mappings == {"user_id:B": pid("user_id:B"), "cookie_id:c": detached_pid("cookie_id:c")}
    assert set(res.changes) == {
        Change("attach", pid("user_id:B"), None, ("user_id:B",), 2, "event:e2"),
        Change("split", pid("user_id:A"), detached_pid("cookie_id:c"), ("cookie_id:c",), 2, "event:e2"),
    }


def test_cookie_limit_detaches_the_51st_cookie():
    obs = [ob(k, f"e{k}", device_id="d", cookie_id=f"c{k:02d}") for k in range(51)]
    g = feed(obs)
    assert {g.mapping[f"cookie_id:c{k:02d}"] for k in range(50)} == {pid("device_id:d")}
    assert g.mapping["cookie_id:c50"] == detached_pid("cookie_id:c50")
    assert set(feed(obs, UNLIMITED).mapping.values()) == {pid("device_id:d")}


def test_shared_family_tablet_does_not_fuse_its_users():
    obs = [
        ob(1, "e1", user_id="mum", device_id="tablet", cookie_id="tc"),
        ob(2, "e2", user_id="mum", device_id="mum-phone"),
        ob(3, "e3", user_id="kid", device_id="tablet", cookie_id="tc"),
        ob(4, "e4", user_id="kid", device_id="kid-phone"),
        ob(5, "e5", device_id="tablet", cookie_id="tc"),
    ]
    g = feed(obs)
    assert g.mapping["user_id:mum"] == g.mapping["device_id:mum-phone"] == pid("user_id:mum")
    assert g.mapping["user_id:kid"] == g.mapping["device_id:kid-phone"] == pid("user_id:kid")
    assert g.mapping["device_id:tablet"] == detached_pid("device_id:tablet")
    assert g.mapping["cookie_id:tc"] == detached_pid("cookie_id:tc")
    assert g.mapping == resolve_batch(obs, RULES)
    # Negative control: without limits the family is one person.
    assert len(set(feed(obs, UNLIMITED).mapping.values())) == 1


def test_store_kiosk_used_by_many_keeps_every_user_apart():
    obs = []
    for u in range(30):
        obs.append(ob(10 * u, f"k{u}", user_id=f"u{u}", device_id="kiosk", cookie_id="kc"))
        obs.append(ob(10 * u + 1, f"own{u}", user_id=f"u{u}", device_id=f"own{u}"))
    g = feed(obs)
    users = {g.mapping[f"user_id:u{u}"] for u in range(30)}
    assert users == {pid(f"user_id:u{u}") for u in range(30)}
    assert all(g.mapping[f"device_id:own{u}"] == pid(f"user_id:u{u}") for u in range(30))
    assert g.mapping["device_id:kiosk"] == detached_pid("device_id:kiosk")
    assert len(set(feed(obs, UNLIMITED).mapping.values())) == 1


def test_a_second_phone_seen_only_on_a_device_makes_it_a_shared_device():
    """Two persons with a phone each on one tablet: the tablet would bridge two phone holders, so it
    is shared (``shared:phone``) and detached; the phones stay apart. Negative control: without the
    shareable types (limits only, phone ≤ 2) the tablet merges them."""
    obs = [ob(0, "e0", device_id="d", phone="h0"), ob(1, "e1", device_id="d", phone="h1")]
    g = feed(obs[:1])
    res = g.observe(obs[1])
    assert res.edges == (Edge("phone:h1", "device_id:d", False, "shared:phone", 1, "e1"),)
    assert g.mapping == {
        "phone:h0": pid("phone:h0"),
        "phone:h1": pid("phone:h1"),
        "device_id:d": detached_pid("device_id:d"),
    }
    assert resolve_batch(obs, RULES) == g.mapping
    limits_only = IdentityRules(shareable=frozenset())
    assert set(feed(obs, limits_only).mapping.values()) == {pid("phone:h0")}
    assert set(resolve_batch(obs, limits_only).values()) == {pid("phone:h0")}


def test_a_second_phone_linked_directly_still_joins_and_a_third_is_over_the_limit():
    """A person may hold two phones when an event links them directly (here with the account); the
    device then joins nobody new, so it is not shared. A third phone is over the limit (``limit:phone``)."""
    obs = [
        ob(0, "e0", user_id="u", device_id="d", phone="h0"),
        ob(1, "e1", user_id="u", phone="h1"),
        ob(2, "e2", device_id="d", phone="h1"),
    ]
    g = feed(obs)
    assert set(g.mapping.values()) == {pid("user_id:u")}
    res = g.observe(ob(3, "e3", user_id="u", phone="h2"))
    assert res.edges == (Edge("user_id:u", "phone:h2", False, "limit:phone", 3, "e3"),)
    assert g.mapping["phone:h2"] == detached_pid("phone:h2")
    assert resolve_batch([*obs, ob(3, "e3", user_id="u", phone="h2")], RULES) == g.mapping


def test_a_shared_device_bridging_two_accounts_of_different_types_is_caught_by_the_other_type():
    """The 1M-event failure (docs/identity.md): a household tablet first used by an account holder
    (user_id + own phone), then by a member without an account (own phone, e-mail). No user_id
    conflict, so the limits alone let the tablet fuse the two; both hold a phone, so it is shared.
    Negative control: with the limits only (the rule before) the two are one person."""
    obs = [
        ob(1, "e1", user_id="dad", phone="dad", device_id="dad-phone"),
        ob(2, "e2", user_id="dad", device_id="tablet", cookie_id="tc"),
        ob(3, "e3", phone="kid", email="kid", device_id="kid-phone"),
        ob(4, "e4", phone="kid", device_id="tablet"),
    ]
    g = feed(obs)
    assert g.mapping == {
        "user_id:dad": pid("user_id:dad"),
        "phone:dad": pid("user_id:dad"),
        "device_id:dad-phone": pid("user_id:dad"),
        "cookie_id:tc": pid("user_id:dad"),
        "device_id:tablet": detached_pid("device_id:tablet"),
        "phone:kid": pid("phone:kid"),
        "email:kid": pid("phone:kid"),
        "device_id:kid-phone": pid("phone:kid"),
    }
    assert resolve_batch(obs, RULES) == g.mapping
    limits_only = IdentityRules(shareable=frozenset())
    assert set(feed(obs, limits_only).mapping.values()) == {pid("user_id:dad")}
    assert set(resolve_batch(obs, limits_only).values()) == {pid("user_id:dad")}


# --- blocklist -----------------------------------------------------------------------------------------


def test_junk_values_are_not_identifiers_and_link_nothing():
    obs = [
        ob(1, "e1", user_id="A", device_id="0", openid="null", cookie_id="ffffffff"),
        ob(2, "e2", user_id="B", device_id="0", openid="null", cookie_id="ffffffff"),
    ]
    g = feed(obs)
    assert g.mapping == {"user_id:A": pid("user_id:A"), "user_id:B": pid("user_id:B")}
    res = step(
        {}, ob(3, "e3", device_id="undefined", cookie_id="00000000-0000-0000-0000-000000000000"), RULES
    )
    assert res.path == "noop" and res.mappings == {} and res.upserts == {}
    # Negative control: with an empty blocklist "0" is an identifier shared by A and B.
    open_rules = IdentityRules(blocked_values=frozenset(), blocked_patterns=())
    assert feed(obs, open_rules).mapping["device_id:0"] == detached_pid("device_id:0")


def test_unknown_identifier_types_are_ignored():
    g = feed([ob(1, "e1", user_id="A", imei="86123")])
    assert g.mapping == {"user_id:A": pid("user_id:A")}


# --- split / block / unblock -------------------------------------------------------------------------


#: A tablet shared by two persons that the guard rails cannot see (no type held by both): control.
HOUSE = [
    ob(1, "e1", device_id="T", cookie_id="C1", phone="P1"),
    ob(2, "e2", device_id="T", email="E2"),
    ob(3, "e3", device_id="T2", email="E2"),
]


def _msg(op: str, ident: str = "device_id:T", version: int = 1) -> dict:
    return {"kind": "identity", "op": op, "identifier": ident, "version": version}


def test_block_splits_a_person_again_and_unblock_restores_it():
    g = feed(HOUSE)
    together = dict(g.mapping)
    assert set(together.values()) == {pid("phone:P1")}
    res = g.control(_msg("block"), ts_ms=100, cause="kiosk found")
    assert g.mapping == {
        "phone:P1": pid("phone:P1"),
        "cookie_id:C1": pid("phone:P1"),
        "email:E2": pid("email:E2"),
        "device_id:T2": pid("email:E2"),
    }
    assert res.mappings == {"device_id:T": None, "email:E2": pid("email:E2"), "device_id:T2": pid("email:E2")}
    assert set(res.changes) == {
        Change("detach", pid("phone:P1"), None, ("device_id:T",), 100, "control:block:kiosk found"),
        Change(
            "split",
            pid("phone:P1"),
            pid("email:E2"),
            ("device_id:T2", "email:E2"),
            100,
            "control:block:kiosk found",
        ),
    }
    assert g.mapping == resolve_batch(HOUSE, g.rules)
    # New events carrying the blocked device are resolved without it.
    g.observe(ob(4, "e4", device_id="T", cookie_id="C9"))
    assert g.mapping["cookie_id:C9"] == pid("cookie_id:C9") and "device_id:T" not in g.mapping
    g.control(_msg("unblock", version=2), ts_ms=200)
    assert {k: v for k, v in g.mapping.items() if k != "cookie_id:C9"} == together
    assert g.mapping["cookie_id:C9"] == pid("phone:P1")
    assert g.mapping == resolve_batch([*HOUSE, ob(4, "e4", device_id="T", cookie_id="C9")], g.rules)


def test_split_isolates_an_identifier_which_keeps_a_person_of_its_own():
    g = feed(HOUSE)
    res = g.control(_msg("split"), ts_ms=100)
    assert g.mapping["device_id:T"] == pid("device_id:T")
    assert g.mapping["email:E2"] == g.mapping["device_id:T2"] == pid("email:E2")
    assert g.mapping["phone:P1"] == g.mapping["cookie_id:C1"] == pid("phone:P1")
    assert {c.kind for c in res.changes} == {"split"}
    assert g.mapping == resolve_batch(HOUSE, g.rules)
    assert any(e.reason == "isolated" and not e.accepted for e in res.edges)


def test_control_on_an_unknown_identifier_changes_only_the_rules():
    g = feed(HOUSE)
    res = g.control(_msg("block", "device_id:never"), ts_ms=1)
    assert res.path == "noop" and "device_id:never" in g.rules.blocked_identifiers
    g.observe(ob(9, "e9", device_id="never", cookie_id="x"))
    assert "device_id:never" not in g.mapping


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ([], "must be a JSON object"),
        (
            {"kind": "tag", "op": "block", "identifier": "device_id:a", "version": 1},
            "'kind' must be 'identity'",
        ),
        (
            {"kind": "identity", "op": "merge", "identifier": "device_id:a", "version": 1},
            "'op' must be one of",
        ),
        ({"kind": "identity", "op": "block", "identifier": 5, "version": 1}, "'identifier' must be a string"),
        ({"kind": "identity", "op": "block", "identifier": "abc", "version": 1}, "not of the form"),
        ({"kind": "identity", "op": "block", "identifier": "device_id:", "version": 1}, "empty value"),
        ({"kind": "identity", "op": "block", "identifier": "imei:1", "version": 1}, "not configured"),
        (
            {"kind": "identity", "op": "block", "identifier": "device_id:a", "version": "1"},
            "'version' must be",
        ),
        (
            {"kind": "identity", "op": "block", "identifier": "device_id:a", "version": True},
            "'version' must be",
        ),
        (
            {"kind": "identity", "op": "block", "identifier": "device_id:a", "version": 1, "x": 1},
            "unknown fields",
        ),
    ],
)
def test_bad_control_messages_are_rejected_with_a_reason(message, error):
    with pytest.raises(ControlError, match=error):
        apply_control(message, RULES)


def test_good_control_message_parses():
    cmd = apply_control(_msg("split", "phone:abc", 7), RULES)
    assert (cmd.op, cmd.identifier, cmd.version) == ("split", "phone:abc", 7)


# --- fast path and replays ------------------------------------------------------------------------------


def test_a_known_combination_takes_the_fast_path_and_changes_nothing():
    g = feed([ob(1, "e1", device_id="d", cookie_id="c")])
    before = dict(g.components)
    res = g.observe(ob(5, "e5", cookie_id="c", device_id="d"))
    assert res.path == "fast" and res.upserts == {} and res.mappings == {} and res.edges == ()
    assert g.components == before
    # Earlier than the stored key: the combination moves earlier (a replay), nothing else changes.
    res = g.observe(ob(0, "e0", device_id="d", cookie_id="c"))
    assert res.path == "replay" and res.mappings == {} and res.changes == ()
    (comp,) = g.components.values()
    assert [(c.ts_ms, c.event_id) for c in comp.combos] == [(0, "e0")]


def test_a_new_combination_inside_one_person_appends_without_mapping_changes():
    g = feed([ob(1, "e1", device_id="d", cookie_id="c"), ob(2, "e2", device_id="d", user_id="u")])
    res = g.observe(ob(3, "e3", user_id="u", cookie_id="c"))
    assert res.path == "append" and res.mappings == {} and res.changes == ()
    assert res.edges == (Edge("user_id:u", "cookie_id:c", True, "same", 3, "e3"),)


def test_late_observation_replays_the_component_and_emits_only_the_difference():
    g = feed([ob(2, "e2", device_id="x"), ob(3, "e3", device_id="x", cookie_id="y")])
    assert set(g.mapping.values()) == {pid("device_id:x")}
    res = g.observe(ob(1, "e1", cookie_id="y"))  # y was seen first after all: its person is older
    assert res.path == "replay"
    assert res.mappings == {"device_id:x": pid("cookie_id:y"), "cookie_id:y": pid("cookie_id:y")}
    assert res.changes == (
        Change(
            "merge",
            pid("cookie_id:y"),
            pid("device_id:x"),
            ("cookie_id:y", "device_id:x"),
            1,
            "late_event:e1",
        ),
    )
    assert res.edges == ()  # e1 has no link; e3's decision (merged) did not change


def test_late_observation_that_changes_nothing_emits_nothing():
    g = feed([ob(2, "e2", device_id="x", cookie_id="y"), ob(3, "e3", device_id="x", cookie_id="z")])
    res = g.observe(ob(1, "e1", device_id="x"))
    assert res.path == "replay" and res.mappings == {} and res.changes == ()


def test_the_passed_components_are_not_modified():
    g = feed([ob(1, "e1", device_id="x", cookie_id="y")])
    comps = dict(g.components)
    snapshot = {k: replace(v) for k, v in comps.items()}
    step(comps, ob(2, "e2", device_id="x", cookie_id="q"), RULES)
    assert comps == snapshot
