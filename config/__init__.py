"""Validated configuration (pure: no pyflink, no clients)."""

from config.settings import ConfigError, Settings, load_settings

__all__ = ["ConfigError", "Settings", "load_settings"]
