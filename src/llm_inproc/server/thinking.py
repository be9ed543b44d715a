"""Where one chat result's thinking goes, as ``reasoning_format`` says: apart from the
answer (``reasoning_content``, Anthropic's ``thinking`` block), also kept in the text
(``deepseek-legacy``), or left in the text as written (``none``). Shared by the routes that
answer a conversation, whole or streamed."""

from __future__ import annotations

from typing import Any

from ..prompting.reasoning import ReasoningSplitter, ThinkingMarkers, split_reasoning
from .errors import invalid
from .state import ServerState

__all__ = ["STYLES", "SplitPieces", "Thinking", "reasoning_style", "thinking_for"]

STYLES = ("auto", "none", "deepseek", "deepseek-legacy")


def reasoning_style(value: object) -> str:
    """A ``reasoning_format`` value, checked."""
    if value not in STYLES:
        raise invalid(f"'reasoning_format' must be one of {', '.join(STYLES)}; got {value!r}")
    return str(value)


class Thinking:
    """One result's split. ``opening``: the prompt's end from the start marker on, where
    the prompt opened the thinking (R1's ``<think>\\n``), else ""."""

    def __init__(self, markers: ThinkingMarkers, opening: str, style: str) -> None:
        self.markers, self.opening = markers, opening
        self.split = style != "none"
        """Whether the thinking is returned apart (all but ``none``)."""
        self.keep = style in ("none", "deepseek-legacy")
        """Whether the text keeps the thinking as written; it then starts with the opening,
        so that it shows the whole thinking block."""
        self._splitter = ReasoningSplitter(markers, opened=bool(opening))
        self._unopened = bool(opening) and self.keep

    def whole(self, text: str) -> tuple[str | None, str]:
        """``(reasoning or None, text)`` of the whole reply."""
        thought, answer = split_reasoning(text, self.markers, opened=bool(self.opening))
        return (thought if self.split else None), (self.opening + text if self.keep else answer)

    def feed(self, piece: str) -> tuple[str, str]:
        """``(reasoning, text)`` a streamed piece adds; :meth:`flush` at the end."""
        return self._out(*self._splitter.feed(piece), raw=piece)

    def flush(self) -> tuple[str, str]:
        return self._out(*self._splitter.flush(), raw="")

    def _out(self, thought: str, answer: str, raw: str) -> tuple[str, str]:
        text = raw if self.keep else answer
        if text and self._unopened:
            self._unopened = False
            text = self.opening + text
        return (thought if self.split else ""), text


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


def thinking_for(state: ServerState, prompt: str, style: str) -> Thinking | None:
    """The split for a result whose rendered prompt is ``prompt``; None where the served
    template does not think."""
    markers = state.thinking_markers()
    if markers is None:
        return None
    return Thinking(markers, markers.opening(prompt), style)
