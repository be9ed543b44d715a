"""A :class:`~.types.Tool` from a Python function's signature, type hints and docstring."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .types import Tool

__all__ = ["tool_from_function"]


def tool_from_function(fn: Callable[..., Any]) -> Tool:
    """The tool ``fn`` describes."""
    raise NotImplementedError
