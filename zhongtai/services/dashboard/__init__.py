"""The live dashboard (``zhongtai dashboard``): an ASGI app over the job's Redis keys; docs/dashboard.md."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .app import Dashboard, DashboardOptions, create_app

if TYPE_CHECKING:  # pragma: no cover
    from starlette.applications import Starlette

__all__ = ["Dashboard", "DashboardOptions", "create_app", "serve"]


def serve(app: Starlette, host: str = "127.0.0.1", port: int = 8765, log_level: str = "warning") -> None:
    """Run ``app`` with uvicorn until interrupted (blocking)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=2)
