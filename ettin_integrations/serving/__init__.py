"""The rerank HTTP service: Cohere- and TEI-shaped routes over one shared engine (``ettin-rerank serve``).

``create_app`` is imported on first use, so reading the settings (the CLI's ``--help``) needs
neither FastAPI nor torch.
"""

from __future__ import annotations

from typing import Any

from .settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module 'ettin_integrations.serving' has no attribute {name!r}")
