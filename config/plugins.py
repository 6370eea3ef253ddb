"""Plugins: channels and enrichers that installed packages add through Python entry points (docs/plugins.md).

Two entry-point groups:

* ``zhongtai.channels``: ``NAME = module:Factory`` adds channel ``NAME``. Rules may send to it, the job writes
  its actions to ``<actions_prefix>NAME``, ``zhongtai worker --channel NAME`` delivers them with the adapter
  ``Factory`` builds (connectors/channels);
* ``zhongtai.enrichers``: ``NAME = module:Factory`` adds an enricher that ``zhongtai enrich NAME`` runs: it reads
  events, calls an outside service and feeds what it learns back as new events (zhongtai/services/enrichers.py).

A factory is a class with a ``config_model`` attribute (a pydantic model: the plugin's own, validated config
section ``plugins.NAME`` of the settings) and a constructor taking that validated config (see the two
example plugins under ``plugins/``).

This module only reads the names (installed packages' metadata, no plugin code is imported), so that the pure
rule schema and the job know every channel, while loading and validating a plugin happens where it runs
(:func:`load_plugin`). The names are read once per process: install a plugin, then restart the job, its workers
and the API.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

#: The channels zhongtai ships (connectors/channels: smtp.py, http.py).
BUILTIN_CHANNELS = ("email", "sms", "push", "webhook", "coupon")
CHANNEL_GROUP = "zhongtai.channels"
ENRICHER_GROUP = "zhongtai.enrichers"
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


class TryLater(Exception):
    """An enricher's outside service cannot answer now (timeout, 5xx, 429): the runner retries the event later."""


class PluginError(ValueError):
    """A plugin is missing, misdeclared, or its config section is invalid; the message says what to do."""


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """One declared plugin: its group, name, ``module:attr`` and the distribution that declares it."""

    group: str
    name: str
    value: str
    dist: str


@cache
def _declared(group: str) -> tuple[EntryPoint, ...]:
    eps = sorted(entry_points(group=group), key=lambda e: e.name)
    for ep in eps:
        if not _NAME.fullmatch(ep.name):
            raise PluginError(f"plugin {ep.name!r} ({group} = {ep.value}): a name is 1-32 lower-case letters, digits "
                              "and _, starting with a letter; rename its entry point")
        if group == CHANNEL_GROUP and ep.name in BUILTIN_CHANNELS:
            raise PluginError(f"plugin channel {ep.name!r} ({ep.value}) has the name of a built-in channel; rename "
                              "its entry point")
    names = [ep.name for ep in eps]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise PluginError(f"{group}: {', '.join(twice)} declared by several installed packages; uninstall one")
    return tuple(eps)


def plugins(group: str) -> list[PluginInfo]:
    """Every installed plugin of ``group`` (by name)."""
    return [PluginInfo(group, ep.name, ep.value, ep.dist.name if ep.dist else "?") for ep in _declared(group)]


def channel_names() -> tuple[str, ...]:
    """The built-in channels, then the plugins' in name order."""
    return BUILTIN_CHANNELS + tuple(ep.name for ep in _declared(CHANNEL_GROUP))


def enricher_names() -> tuple[str, ...]:
    return tuple(ep.name for ep in _declared(ENRICHER_GROUP))


def load_plugin(group: str, name: str, sections: dict[str, dict[str, Any]]) -> tuple[Any, Any]:
    """``(factory, validated config)`` of plugin ``name``: its class, and ``sections[name]`` (the settings'
    ``plugins`` mapping) validated by its ``config_model``. Raises :class:`PluginError` naming the plugin, the
    field and what to do."""
    from pydantic import BaseModel, ValidationError

    found = [ep for ep in _declared(group) if ep.name == name]
    if not found:
        installed = ", ".join(ep.name for ep in _declared(group)) or "none"
        raise PluginError(f"no {group} plugin {name!r} is installed (installed: {installed}); pip install its "
                          "package (`zhongtai plugins list` shows them)")
    try:
        factory = found[0].load()
    except (ImportError, AttributeError) as e:
        raise PluginError(f"plugin {name!r} ({found[0].value}) cannot be imported: {e}") from e
    model = getattr(factory, "config_model", None)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise PluginError(f"plugin {name!r} ({found[0].value}) has no config_model (a pydantic model); fix the plugin")
    try:
        return factory, model.model_validate(sections.get(name) or {})
    except ValidationError as e:
        problems = "; ".join(f"plugins.{name}.{'.'.join(str(x) for x in err['loc'])}: {err['msg']}"
                             for err in e.errors())
        raise PluginError(f"plugin {name!r}: its config section is invalid: {problems}") from None
