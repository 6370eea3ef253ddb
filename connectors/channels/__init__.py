"""Channel adapters (one module per family) behind the ``base.ChannelAdapter`` contract."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from connectors.channels.base import CHANNELS, ChannelAdapter

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import WorkerSettings


def build_adapter(channel: str, cfg: WorkerSettings, clock: Callable[[], float] = time.time) -> ChannelAdapter:
    """The configured adapter of ``channel`` (one of ``CHANNELS``)."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}; choose one of {', '.join(CHANNELS)}")
    if channel == "email":
        from connectors.channels.smtp import SmtpAdapter

        return SmtpAdapter(cfg.smtp, cfg.templates, clock)
    from connectors.channels.http import build_http_adapter

    return build_http_adapter(channel, getattr(cfg, channel), cfg.templates, clock)
