"""Every keyed state of the job is declared in ``state/`` (one module per family), with a version suffix and
a TTL or the stated reason for none; no pipeline creates a state descriptor of its own."""

from __future__ import annotations

import importlib
import re

from state import DECLARATIONS
from tests.helpers import ROOT

_NAME = re.compile(r"^[a-z]+(-[a-z]+)*-v[0-9]+$")
_DESCRIPTOR = re.compile(r"(Value|Map|List|Reducing|Aggregating)StateDescriptor\(")


def test_every_declaration_is_versioned_and_says_its_ttl() -> None:
    assert len({d.name for d in DECLARATIONS}) == len(DECLARATIONS)
    for d in DECLARATIONS:
        assert _NAME.match(d.name), d.name
        assert d.ttl and (not d.ttl.startswith("none") or len(d.ttl) > len("none: ") + 10), d
        # the name is a constant of the module that declares it
        mod = importlib.import_module(d.module)
        assert d.name in {v for v in vars(mod).values() if isinstance(v, str)}, (d.module, d.name)


def test_descriptors_are_created_only_in_state() -> None:
    offenders = []
    for folder in ("pipelines", "connectors", "operators", "zhongtai"):
        for p in (ROOT / folder).rglob("*.py"):
            if _DESCRIPTOR.search(p.read_text()):
                offenders.append(str(p.relative_to(ROOT)))
    assert offenders == []
    # and every descriptor in state/ is declared
    names = set()
    for p in (ROOT / "state").glob("*.py"):
        names |= set(re.findall(r'"([a-z]+(?:-[a-z]+)*-v[0-9]+)"', p.read_text()))
    assert names == {d.name for d in DECLARATIONS}


def test_the_check_finds_an_undeclared_descriptor(tmp_path) -> None:
    # negative control: the pattern the test greps for matches the inline descriptor it replaced
    assert _DESCRIPTOR.search('ValueStateDescriptor("zt-exp-registry-v1", Types.PICKLED_BYTE_ARRAY())')
    assert not _NAME.match("identity_components")  # the old, unversioned name
