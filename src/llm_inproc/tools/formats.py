"""How each chat-template family writes tool calls: detection from the template's source,
the grammar that constrains a call, the parser that reads calls back, and the stream
filter that keeps call markup out of what a user sees.

(Interface pinned; the implementations are written in this module.)
"""

from __future__ import annotations

from typing import Protocol

from .types import Constraint, ToolCall, ToolRequest

__all__ = ["ToolFormat", "ToolStream", "detect_format", "encoding_format"]


class ToolStream(Protocol):
    """Filters one reply's text as it streams."""

    def feed(self, piece: str) -> str:
        """The part of the text so far that can be shown to the user now (maybe empty):
        text before any call markup; held back while it could still be the start of it."""
        ...

    def finish(self) -> tuple[str, tuple[ToolCall, ...]]:
        """At the end: the reply's content (markup removed, stripped) and its calls.
        Never raises: output that does not parse is content."""
        ...


class ToolFormat(Protocol):
    name: str
    """``generic``, ``hermes``, ``llama3``, ``mistral``, ``functionary_v3_1``,
    ``functionary_v3_2``, ``command_r7b``, ``deepseek_r1`` or ``encoding``."""

    def instructions(self, request: ToolRequest) -> str:
        """Text to add to the system prompt, for formats whose template does not show the
        tools to the model (generic); empty otherwise."""
        ...

    def constraint(self, request: ToolRequest) -> Constraint | None:
        """The grammar for ``request`` (None for ``choice == "none"``)."""
        ...

    def stream(self, request: ToolRequest) -> ToolStream:
        """A filter for one reply."""
        ...


def detect_format(template: str | None) -> ToolFormat:
    """The format a chat template speaks, as llama.cpp's ``common/chat.cpp`` detects it;
    the generic JSON format when it has no tool syntax (or there is no template)."""
    raise NotImplementedError


def encoding_format(start: str, end: str, available_start: str, available_end: str) -> ToolFormat:
    """The format of a raw ``PromptEncoding`` with tool tokens: calls between
    ``tool_call_token_start`` and ``_end``."""
    raise NotImplementedError
