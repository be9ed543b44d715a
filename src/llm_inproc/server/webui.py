"""The chat page at ``/`` and ``--path`` static files."""

from __future__ import annotations

from starlette.routing import BaseRoute

from .flags import ServerSettings

__all__ = ["routes"]


def routes(settings: ServerSettings) -> list[BaseRoute]:
    return []
