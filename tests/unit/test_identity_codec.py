"""The versioned state codec of identity components (state/identity.py): round trips, old versions."""

from __future__ import annotations

import subprocess
import sys

import pytest

from operators.identity import Combo
from operators.identity.engine import new_component
from state.identity import CodecError, decode_component, encode_component, encode_component_v1

from .test_identity_cases import RULES, detached_pid, feed, ob, pid

OBS = [
    ob(1, "e1", user_id="A", device_id="D", cookie_id="C"),
    ob(2, "e2", user_id="B", device_id="D"),
    ob(3, "e3", user_id="B", phone="h", email="m"),
]


def test_round_trip_keeps_everything():
    g = feed(OBS)
    (comp,) = g.components.values()
    blob = encode_component(comp)
    assert blob[0] == 2
    back = decode_component(blob, RULES)
    assert back == comp
    assert (
        back.person_of == comp.person_of
        and back.combo_at == comp.combo_at
        and back.detached == {"device_id:D"}
    )
    assert back.combos[1].edges == (("user_id:B", "device_id:D", "limit:user_id"),)


def test_identifiers_are_written_once_per_blob():
    (comp,) = feed(OBS).components.values()
    assert encode_component(comp).count(b"user_id:B") == 1


def test_old_v1_blobs_still_decode_and_re_derive_the_persons():
    blob = b'\x01["c1",[[1,"e1",["user_id:A","device_id:D"]],[2,"e2",["user_id:B","device_id:D"]]]]'
    comp = decode_component(blob, RULES)
    assert comp.cid == "c1"
    assert comp.person_of == {
        "user_id:A": pid("user_id:A"),
        "user_id:B": pid("user_id:B"),
        "device_id:D": detached_pid("device_id:D"),
    }
    assert comp == new_component(
        "c1",
        [Combo(1, "e1", ("user_id:A", "device_id:D")), Combo(2, "e2", ("user_id:B", "device_id:D"))],
        RULES,
    )


def test_v1_of_any_component_decodes_to_the_same_component():
    for comp in feed(OBS).components.values():
        assert decode_component(encode_component_v1(comp), RULES) == comp


@pytest.mark.parametrize(
    ("blob", "error"),
    [(b"", "empty"), (b"\x07[]", "version 7"), (b"\x02{not json", "not valid JSON")],
)
def test_unknown_or_broken_blobs_fail_loudly(blob, error):
    with pytest.raises(CodecError, match=error):
        decode_component(blob, RULES)


def test_pure_modules_load_without_pyflink():
    code = (
        "import sys; sys.modules['pyflink'] = None\n"
        "import operators.identity, operators.identity.batch, operators.identity.quality, state.identity\n"
        "import zhongtai.devtools.generator.identity\n"
        "assert 'pyflink' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
