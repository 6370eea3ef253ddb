"""Run-time experiment definitions, pure: control step, definition rows, replay, state codec, targeting."""

from __future__ import annotations

import json

from operators.experiments.control import (
    control_step,
    definition_from_record,
    eligible,
    packed_row,
    registry_from_bytes,
    registry_to_bytes,
    unpack_row,
)
from operators.experiments.definitions import ExperimentRegistry, control_message, parse_definitions

(LIVE, VIP) = parse_definitions("""
experiments:
  - key: live
    unit: device
    variants: [control, banner]
    start: 1000
    assign_on: [page_view]
  - key: vip
    variants: [plain, gift]
    targeting: "'high_value' in tags and not ('churn_risk' in tags)"
    assign_on: [login]
""")


def messages() -> list[str]:
    broken = {**LIVE.to_dict(), "coverage": 2}
    return [json.dumps(m) for m in (
        control_message("upsert", "live", 1, LIVE),
        control_message("upsert", "vip", 1, VIP),
        {"kind": "experiment", "op": "upsert", "key": "live", "version": 2, "definition": broken},
        control_message("stop", "live", 3),
        control_message("upsert", "live", 3, LIVE),  # stale
        {"kind": "tag", "op": "upsert", "name": "x"},  # another consumer's
        control_message("delete", "vip", 4),
    )]  # fmt: skip


def fold(msgs: list[str]) -> tuple[ExperimentRegistry, list, list]:
    reg, results, rows = ExperimentRegistry(), [], []
    for i, m in enumerate(msgs):
        reg, res, row = control_step(reg, m, 5000 + i)
        results.append(res)
        rows.append(row)
    return reg, results, rows


def test_results_and_rows_of_each_message():
    reg, results, rows = fold(messages())
    assert [None if r is None else (r["key"], r["op"], r["version"], r["status"]) for r in results] == [
        ("live", "upsert", 1, "applied"), ("vip", "upsert", 1, "applied"), ("live", "upsert", 2, "rejected"),
        ("live", "stop", 3, "applied"), ("live", "upsert", 3, "rejected"), None, ("vip", "delete", 4, "applied")]
    assert "coverage" in results[2]["reason"] and "stale" in results[4]["reason"]
    assert [r is not None for r in rows] == [True, True, False, True, False, False, True]
    version, record = unpack_row(rows[3][1])
    assert (rows[3][0], version, record["stop_ms"], record["start_ms"]) == ("live", 3, 5003, 1000)
    assert definition_from_record(rows[3][1].split("|", 2)[2]).experiment.stop_ms == 5003
    assert unpack_row(rows[6][1]) == (4, None)  # deleted
    assert list(reg.definitions) == ["live"] and reg.versions == {"live": 3, "vip": 4}


def test_rows_order_by_version_as_text_and_replay_gives_the_same_state():
    assert packed_row("k", 9, LIVE)[1] < packed_row("k", 10, LIVE)[1] < packed_row("k", 10, None)[1].replace(
        "|0|", "|1|")  # fmt: skip
    once = fold(messages())[0]
    twice = fold(messages() + messages())[0]  # the topic replayed from its start
    assert registry_to_bytes(twice) == registry_to_bytes(once)
    assert registry_from_bytes(registry_to_bytes(once)) == once


def test_not_json_is_rejected_with_what_to_do():
    reg = ExperimentRegistry()
    same, res, row = control_step(reg, b"{nope", 0)
    assert same is reg and row is None and res["status"] == "rejected" and "send a JSON object" in res["reason"]


def test_targeting_on_tag_sets():
    assert eligible(LIVE, None)  # no targeting: everybody
    assert eligible(VIP, frozenset({"high_value"}))
    assert eligible(VIP, "new_user,high_value")
    assert not eligible(VIP, frozenset({"high_value", "churn_risk"}))
    assert not eligible(VIP, frozenset()) and not eligible(VIP, None)
