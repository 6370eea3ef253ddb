"""Channel adapters (one module per family) behind the ``base.ChannelAdapter`` contract; the channels that
installed plugins add (entry points ``zhongtai.channels``, config/plugins.py) are built here too."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from config.plugins import BUILTIN_CHANNELS, CHANNEL_GROUP, channel_names, load_plugin
from connectors.channels.base import ChannelAdapter

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import WorkerSettings


def build_adapter(channel: str, cfg: WorkerSettings, clock: Callable[[], float] = time.time,
                  plugins: dict[str, dict[str, Any]] | None = None) -> ChannelAdapter:
    """The configured adapter of ``channel``: a built-in one, or a plugin's, built by its factory from its
    validated section ``plugins[channel]`` (``PluginError`` when the section is invalid)."""
    if channel not in channel_names():
        raise ValueError(f"unknown channel {channel!r}; choose one of {', '.join(channel_names())} (a plugin's "
                         "channel needs its package installed: `zhongtai plugins list`)")
    if channel not in BUILTIN_CHANNELS:
        factory, config = load_plugin(CHANNEL_GROUP, channel, plugins or {})
        adapter: ChannelAdapter = factory(config, templates=cfg.templates, clock=clock)
        return adapter
    if channel == "email":
        from connectors.channels.smtp import SmtpAdapter

        return SmtpAdapter(cfg.smtp, cfg.templates, clock)
    from connectors.channels.http import build_http_adapter

    return build_http_adapter(channel, getattr(cfg, channel), cfg.templates, clock)
