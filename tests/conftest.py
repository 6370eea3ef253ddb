"""What every tier shares: the folder rule of the test suite (docs/architecture.md, "Tests").

A test module lives in the folder of the most its tests need: ``unit/`` (no services, no Flink), ``pipeline/``
(Flink's embedded mini-cluster, ``flink``), ``integration/`` (the local stack, ``stack``, often with Flink).
Each test still carries its own markers, which select (``make test-unit`` is ``-m "not stack and not flink"``
over the whole tree, so the pure tests of an integration module run there too); the folders say where to look.
Collection stops when a test sits in a folder below what it needs (a ``stack`` test in ``pipeline/``) or a test
module sits directly in ``tests/``, where only the shared helpers live (``helpers.py``, ``workers_env.py``...).
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

#: The markers a folder's tests must not carry: what they need is more than the folder offers.
TOO_MUCH = {"unit": ("stack", "flink"), "pipeline": ("stack",), "integration": ()}


def misplaced(folder: str, markers: set[str]) -> str | None:
    """Why a test with ``markers`` does not belong in ``tests/<folder>/``; None when it does."""
    if folder not in TOO_MUCH:
        return "a test module belongs in tests/unit, tests/pipeline or tests/integration"
    needs = sorted(markers.intersection(TOO_MUCH[folder]))
    if needs:
        home = "integration" if "stack" in needs else "pipeline"
        return f"marked {', '.join(needs)}: move the module to tests/{home} (or the test to a module there)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wrong: dict[str, str] = {}
    for item in items:
        path = Path(item.path).resolve()
        if not path.is_relative_to(HERE):
            continue
        rel = path.relative_to(HERE)
        folder = rel.parts[0] if len(rel.parts) > 1 else ""
        reason = misplaced(folder, {m.name for m in item.iter_markers()})
        if reason:
            wrong.setdefault(f"{rel.as_posix()}::{item.name}", reason)
    if wrong:
        lines = "\n".join(f"  {k}: {v}" for k, v in sorted(wrong.items())[:20])
        raise pytest.UsageError(f"tests in the wrong tier folder ({len(wrong)}):\n{lines}")
