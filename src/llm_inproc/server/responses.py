"""OpenAI's Responses API (``/v1/responses``), as llama-server serves it."""

from __future__ import annotations

from starlette.routing import BaseRoute

__all__ = ["routes"]


def routes() -> list[BaseRoute]:
    return []
