"""Where a chat result's thinking goes, as ``reasoning_format`` says (the split itself is
:class:`~llm_inproc.prompting.reasoning.Thinking`): the values a request may name, and the
piece-by-piece split shared by the stream formats that send the thinking apart."""

from __future__ import annotations

from typing import Any

from ..prompting.reasoning import Thinking
from .errors import invalid

__all__ = ["STYLES", "SplitPieces", "reasoning_style"]

STYLES = ("auto", "none", "deepseek", "deepseek-legacy")


def reasoning_style(value: object) -> str:
    """A ``reasoning_format`` value, checked."""
    if value not in STYLES:
        raise invalid(f"'reasoning_format' must be one of {', '.join(STYLES)}; got {value!r}")
    return str(value)


class SplitPieces:
    """For a stream format that sends one result's thinking apart (Anthropic's ``thinking``
    block, a Responses ``reasoning`` item): each piece is split, and its parts go to
    :meth:`_thought` and :meth:`_text`, which write the format's events."""

    thinking: Thinking | None

    def piece(self, text: str, n: int, index: int) -> list[dict[str, Any]]:
        if self.thinking is None:
            return self._text(text)
        thought, text = self.thinking.feed(text)
        return self._thought(thought) + self._text(text)

    def held(self) -> list[dict[str, Any]]:
        """The events for what the split still held at the reply's end."""
        if self.thinking is None:
            return []
        thought, text = self.thinking.flush()
        return self._thought(thought) + self._text(text)

    def _thought(self, thought: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _text(self, text: str) -> list[dict[str, Any]]:
        raise NotImplementedError
