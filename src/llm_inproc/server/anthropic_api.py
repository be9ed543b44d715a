"""Anthropic's Messages API (``/v1/messages``), as llama-server serves it."""

from __future__ import annotations

from starlette.routing import BaseRoute

__all__ = ["routes"]


def routes() -> list[BaseRoute]:
    return []
