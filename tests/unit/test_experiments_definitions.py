"""Experiment definitions: the YAML file, errors with file/line/field, control messages, assign()."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from operators.experiments import assignment
from operators.experiments.definitions import (
    DefinitionError,
    ExperimentDefinition,
    ExperimentRegistry,
    MetricSpec,
    assign,
    control_message,
    definition_from_mapping,
    load_definitions,
    parse_definitions,
    validate_file,
)
from tests.helpers import ROOT

SHIPPED = ROOT / "config" / "experiments.yaml"
DAY = 86_400_000
NOV1 = 1_793_491_200_000  # 2026-11-01T00:00:00Z

VALID = """\
experiments:
  - key: exp-a
    variants:
      - {key: control, weight: 0.5}
      - {key: treat, weight: 0.5}
    namespace: [ns, 0.0, 0.5]
    assign_on: [register]
    conversion: {event_type: purchase, window: 2d}
    cuped: {covariate_days: 7}
"""


def errors_of(text: str, source: str = "exp.yaml") -> list[str]:
    with pytest.raises(DefinitionError) as info:
        parse_definitions(text, source)
    return list(info.value.errors)


# ---- the YAML form -------------------------------------------------------------------------------------


def test_the_shipped_file_holds_the_two_examples():
    coupon, banner = load_definitions(SHIPPED)
    assert coupon == ExperimentDefinition(
        assignment.Experiment(
            key="coupon-value", variations=("coupon10", "coupon20"), weights=(0.5, 0.5), coverage=1.0,
            hash_seed="coupon-value-2026", unit="person", namespace=("coupons", 0.0, 0.5), hash_version=2,
            start_ms=NOV1,
        ),
        version=1, assign_on=("register",), conversion=MetricSpec("coupon_redeem", 7 * DAY),
        revenue=MetricSpec("purchase", 7 * DAY), covariate_days=30,
    )  # fmt: skip
    assert banner.key == "homepage-banner" and banner.unit == "device" and banner.assign_on == ()
    assert banner.variations == ("control", "free-trial", "limited-offer")
    assert banner.experiment.coverage == 0.8 and banner.experiment.stop_ms == NOV1 + 30 * DAY
    assert banner.targeting == "'潜在流失用户' in tags or not ('高价值客户' in tags)"
    assert validate_file(SHIPPED) == []


def test_defaults_and_round_trip_through_json():
    (d,) = parse_definitions("experiments:\n  - {key: k, variants: [a, b]}\n")
    assert (d.version, d.unit, d.experiment.hash_version, d.experiment.seed, d.experiment.weights) == (
        1, "person", 2, "k", None)  # fmt: skip
    assert (d.conversion, d.revenue, d.covariate_days, d.assign_on, d.targeting) == (
        MetricSpec("purchase"), MetricSpec("purchase"), 0, (), None)  # fmt: skip
    for defn in (*load_definitions(SHIPPED), d):
        again = definition_from_mapping(json.loads(json.dumps(defn.to_dict())))
        assert again == defn


@pytest.mark.parametrize("old, new, expected", [
    ("key: exp-a", "key: 'a b'", "exp.yaml:2: experiments[0].key: must be a name"),
    ("{key: treat, weight: 0.5}", "{key: treat, weight: 0.6}",
     "exp.yaml:3: experiments[0].variants: weights [0.5, 0.6] sum to 1.1; they must sum to 1"),
    ("{key: treat, weight: 0.5}", "{key: treat}", "exp.yaml:3: experiments[0].variants: give a weight to every"),
    ("{key: treat, weight: 0.5}", "{key: control, weight: 0.5}",
     "exp.yaml:5: experiments[0].variants[1].key: duplicate variant 'control'"),
    ("{key: treat, weight: 0.5}", "{key: treat, weight: -0.5}", "exp.yaml:5: experiments[0].variants[1].weight: must be >= 0"),
    ("[ns, 0.0, 0.5]", "[ns, 0.6, 0.5]", "exp.yaml:6: experiments[0].namespace: needs a name and 0 <= start < end <= 1"),
    ("window: 2d", "window: 2 weeks", "exp.yaml:8: experiments[0].conversion.window: must be milliseconds or a duration"),
    ("window: 2d", "window: 0", "exp.yaml:8: experiments[0].conversion.window: must be positive"),
    ("event_type: purchase", "event_type: 'no spaces'", "exp.yaml:8: experiments[0].conversion.event_type: must be"),
    ("covariate_days: 7", "covariate_days: -1", "exp.yaml:9: experiments[0].cuped.covariate_days: must be a whole number >= 0"),
    ("assign_on: [register]", "assign_on: [exposure]", "exp.yaml:7: experiments[0].assign_on: exposure events carry"),
    ("assign_on: [register]", "assign_on: register", "exp.yaml:7: experiments[0].assign_on: must be a list"),
    ("    variants:", "    colour: blue\n    variants:", "exp.yaml:3: experiments[0].colour: unknown field; known: key,"),
    ("    variants:", "    coverage: 1.5\n    variants:", "exp.yaml:3: experiments[0].coverage: must be within [0, 1], got 1.5"),
    ("    variants:", "    unit: cookie\n    variants:", "exp.yaml:3: experiments[0].unit: must be one of person, device"),
    ("    variants:", "    hash_version: 3\n    variants:", "exp.yaml:3: experiments[0].hash_version: must be 2"),
    ("    variants:", "    start: 2026-11-01T00:00:00\n    variants:", "exp.yaml:3: experiments[0].start: an ISO 8601 time needs a time zone"),
    ("    variants:", "    start: 2000\n    stop: 1000\n    variants:", "exp.yaml:4: experiments[0].stop: must be after start"),
    ("    variants:", "    version: -2\n    variants:", "exp.yaml:3: experiments[0].version: must be a whole number >= 0"),
])  # fmt: skip
def test_errors_name_file_line_and_field(old, new, expected):
    assert old in VALID
    errors = errors_of(VALID.replace(old, new, 1))
    assert len(errors) == 1 and errors[0].startswith(expected), errors


def test_the_valid_text_of_the_error_cases_is_valid():
    # Negative control for the table above: the unmodified text raises nothing.
    (d,) = parse_definitions(VALID, "exp.yaml")
    assert d.conversion == MetricSpec("purchase", 2 * DAY) and d.covariate_days == 7


def test_every_problem_of_a_file_is_reported_at_once():
    text = VALID.replace("key: exp-a", "key: exp-a\n    coverage: 2").replace("window: 2d", "window: x")
    assert [e.split(": ")[0:2] for e in errors_of(text)] == [
        ["exp.yaml:3", "experiments[0].coverage"], ["exp.yaml:9", "experiments[0].conversion.window"]]  # fmt: skip


def test_file_level_problems():
    assert errors_of("experiments: {}\n") == [
        "exp.yaml:1: experiments: the file must hold `experiments:` with a list of definitions"]  # fmt: skip
    assert errors_of("experiments: [\n")[0].startswith("exp.yaml: not valid YAML")
    two = VALID + VALID.split("\n", 1)[1]
    assert errors_of(two)[0] == "exp.yaml:10: experiments[1].key: duplicate key 'exp-a' (also experiments[0])"
    overlapping = VALID + VALID.split("\n", 1)[1].replace("exp-a", "exp-b").replace("0.0, 0.5", "0.4, 1.0")
    assert errors_of(overlapping) == [
        ("exp.yaml: namespace 'ns': 'exp-b' [0.4, 1) overlaps 'exp-a' [0, 0.5); give experiments of one "
         "namespace disjoint slices")]  # fmt: skip
    disjoint = overlapping.replace("0.4, 1.0", "0.5, 1.0")
    assert [d.key for d in parse_definitions(disjoint)] == ["exp-a", "exp-b"]
    assert validate_file(ROOT / "no-such-file.yaml")[0].endswith("cannot read the experiments file: No such file or directory")


def test_targeting_is_compiled_with_its_position_in_the_file():
    text = VALID.replace("    assign_on: [register]\n", "    targeting: \"'vip' in tags and\"\n")
    (error,) = errors_of(text)
    assert error.startswith("exp.yaml:7:34:") and "experiments[0].targeting: does not compile" in error, error
    ok = parse_definitions(VALID.replace("    assign_on: [register]\n", "    targeting: \"'vip' in tags\"\n"))
    assert ok[0].targeting == "'vip' in tags"


def test_stream_assignment_with_targeting_needs_person_units():
    text = VALID.replace("    assign_on: [register]\n", "    assign_on: [register]\n    targeting: \"'vip' in tags\"\n")
    (d,) = parse_definitions(text)  # person (the default): the stream evaluates the person's tags
    assert (d.unit, d.targeting, d.assign_on) == ("person", "'vip' in tags", ("register",))
    (error,) = errors_of(text.replace("    variants:", "    unit: device\n    variants:"))
    assert error.startswith("exp.yaml:8: experiments[0].assign_on: the stream evaluates targeting on person tags"), error


def test_a_running_experiment_keeps_its_variants_and_unit():
    (d,) = parse_definitions(VALID)
    reg = ExperimentRegistry.of([d])
    raw = d.to_dict()
    for change in ({"variants": ["control", "treat", "t2"]}, {"unit": "device"}):
        msg = {"kind": "experiment", "op": "upsert", "key": d.key, "version": 2, "definition": {**raw, **change}}
        same, res = reg.apply(msg, 0)
        assert same is reg and not res.accepted and "cannot change" in res.reason, res
    msg = {"kind": "experiment", "op": "upsert", "key": d.key, "version": 2, "definition": {**raw, "coverage": 0.5}}
    new, res = reg.apply(msg, 0)
    assert res.accepted and new.definitions[d.key].experiment.coverage == 0.5


# ---- assign() ------------------------------------------------------------------------------------------


def test_assign_is_the_growthbook_assignment():
    (d,) = parse_definitions(VALID.replace("    variants:", f"    start: {NOV1}\n    stop: {NOV1 + DAY}\n    coverage: 0.7\n    variants:"))
    inside = NOV1 + 1
    picked = 0
    for i in range(3000):
        unit = f"user-{i}"
        expected = assignment.assign(d.experiment, unit, inside)
        assert assign(d, unit, inside) == (None if expected is None else expected.variation_id)
        assert assign(d, unit) == assign(d, unit, inside)  # no time: the window is not checked
        assert assign(d, unit, NOV1 - 1) is None and assign(d, unit, NOV1 + DAY) is None
        picked += expected is not None
    assert 0.3 < picked / 3000 < 0.4  # namespace half x coverage 0.7
    assert assign(d, "") is None and assign(d, None) is None


# ---- control messages ----------------------------------------------------------------------------------


def registry() -> ExperimentRegistry:
    return ExperimentRegistry.of(parse_definitions(VALID))


def upsert(version: int, **changes) -> dict:
    (d,) = parse_definitions(VALID)
    body = {**d.to_dict(), **changes}
    return {"kind": "experiment", "op": "upsert", "key": "exp-a", "version": version, "definition": body}


def test_upsert_replaces_with_a_higher_version():
    reg, res = registry().apply(upsert(2, coverage=0.5), now_ms=0)
    assert res.accepted and res.reason is None and (res.key, res.op, res.version) == ("exp-a", "upsert", 2)
    assert reg.definitions["exp-a"].experiment.coverage == 0.5 and reg.definitions["exp-a"].version == 2
    new = {**upsert(1, key="exp-new", namespace=["ns", 0.5, 1.0]), "key": "exp-new"}
    reg2, res2 = reg.apply(new, now_ms=0)
    assert res2.accepted and sorted(reg2.definitions) == ["exp-a", "exp-new"] and reg2.versions["exp-new"] == 1


@pytest.mark.parametrize("message, reason", [
    (upsert(1, coverage=0.5), "stale, 'exp-a' is at version 1; send a version above 1"),
    (upsert(2, coverage=1.5), "definition.coverage: must be within [0, 1], got 1.5"),
    (upsert(2, key="other"), "definition.key 'other' is not 'exp-a'"),
    ({**upsert(2), "definition": None}, "upsert needs a definition object"),
    ({**upsert(2), "kind": "rule"}, "kind must be 'experiment'"),
    ({**upsert(2), "op": "pause"}, "op must be one of upsert, stop, delete"),
    ({**upsert(2), "version": "3"}, "version must be a whole number >= 0"),
    ({"kind": "experiment", "op": "stop", "key": "nope", "version": 5}, "no running experiment 'nope'"),
    ({"kind": "experiment", "op": "stop", "key": "exp-a", "version": 5, "stop_ms": "soon"}, "stop_ms must be epoch"),
])  # fmt: skip
def test_stale_or_broken_messages_are_rejected_and_the_old_definition_stays(message, reason):
    before = registry()
    after, res = before.apply(message, now_ms=0)
    assert not res.accepted and reason in res.reason, res.reason
    assert after is before


def test_an_overlapping_namespace_is_rejected():
    other = {**upsert(1, key="exp-b", namespace=["ns", 0.25, 0.75]), "key": "exp-b"}
    reg, res = registry().apply(other, now_ms=0)
    assert not res.accepted and "overlaps 'exp-a'" in res.reason and "exp-b" not in reg.definitions


def test_stop_sets_the_stop_time_and_never_extends_it():
    reg, res = registry().apply(control_message("stop", "exp-a", 2), now_ms=NOV1)
    assert res.accepted and reg.definitions["exp-a"].experiment.stop_ms == NOV1
    reg, res = reg.apply(control_message("stop", "exp-a", 3, stop_ms=NOV1 + DAY), now_ms=0)
    assert res.accepted and reg.definitions["exp-a"].experiment.stop_ms == NOV1
    started = ExperimentRegistry.of(parse_definitions(VALID.replace("    variants:", f"    start: {NOV1}\n    variants:")))
    _, res = started.apply(control_message("stop", "exp-a", 2), now_ms=NOV1 - 1)
    assert not res.accepted and "before the start" in res.reason


def test_delete_keeps_the_version_so_a_replay_cannot_resurrect():
    reg, res = registry().apply(control_message("delete", "exp-a", 4), now_ms=0)
    assert res.accepted and reg.definitions == {} and reg.versions == {"exp-a": 4}
    again, res = reg.apply(upsert(3), now_ms=0)
    assert not res.accepted and "stale" in res.reason and again is reg
    back, res = reg.apply(upsert(5), now_ms=0)
    assert res.accepted and back.definitions["exp-a"].version == 5


def test_control_message_is_json_and_applies():
    (d,) = parse_definitions(VALID)
    msg = json.loads(json.dumps(control_message("upsert", d.key, 7, d)))
    reg, res = ExperimentRegistry().apply(msg, now_ms=0)
    assert res.accepted and reg.definitions["exp-a"] == definition_from_mapping({**d.to_dict(), "version": 7})
    assert [x.key for x in reg.running()] == ["exp-a"]


def test_the_module_imports_without_pyflink():
    code = (
        "import sys; sys.modules['pyflink'] = None\n"
        "import operators.experiments.definitions\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('pyflink', 'redis', 'confluent_kafka', 'happybase')]\n"
        "assert bad == ['pyflink'], bad\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
