"""A reply's thinking, apart from its answer: the markers a chat template wraps reasoning in
(``<think>`` … ``</think>`` for Qwen3 and DeepSeek R1), found by rendering the template, and
the split of a reply (whole or piece by piece) into reasoning and content, as llama-server's
``--reasoning-format deepseek`` returns them (``reasoning_content`` beside ``content``)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "ReasoningSplitter",
    "Thinking",
    "ThinkingMarkers",
    "ThinkingSplit",
    "split_reasoning",
    "thinking_markers",
]

# Pairs a template may name without rendering a past turn's reasoning (DeepSeek R1 drops it
# from the history, yet its replies think inside these).
_KNOWN = (("<think>", "</think>"), ("<|START_THINKING|>", "<|END_THINKING|>"))
_THOUGHT, _ANSWER = "\x01THOUGHT\x02", "\x01ANSWER\x02"


@dataclass(frozen=True)
class ThinkingMarkers:
    """Where a template's reasoning starts and ends."""

    start: str
    end: str

    def opening(self, prompt: str) -> str:
        """Where ``prompt`` (a rendered generation prompt) already opened the thinking, so
        that the reply starts inside it (DeepSeek R1's template ends with ``<think>\\n``):
        the prompt's end from the start marker on; else ""."""
        if not prompt.rstrip().endswith(self.start):
            return ""
        return prompt[prompt.rindex(self.start) :]


@dataclass(frozen=True)
class ThinkingSplit:
    """How one reply's thinking is told apart: its template's markers, where its prompt
    opened the thinking, and where the thinking goes (a ``reasoning_format``: ``deepseek``
    apart from the text, ``deepseek-legacy`` apart and in it, ``none`` in it only)."""

    markers: ThinkingMarkers
    opening: str = ""
    """The prompt's end from the start marker on, where the prompt opened the thinking
    (R1's ``<think>\\n``); "" where the reply opens it."""
    style: str = "deepseek"

    @classmethod
    def of(cls, markers: ThinkingMarkers, prompt: str, style: str = "deepseek") -> ThinkingSplit:
        """The split for a reply to the rendered ``prompt``."""
        return cls(markers, markers.opening(prompt), style)

    def start(self) -> Thinking:
        """A fresh split for one reply's text, whole or piece by piece."""
        return Thinking(self)


class Thinking:
    """One reply's split (:class:`ThinkingSplit`): :meth:`whole` for a whole reply, or
    :meth:`feed` for each streamed piece and :meth:`flush` at its end."""

    def __init__(self, split: ThinkingSplit) -> None:
        self.markers, self.opening = split.markers, split.opening
        self.apart = split.style != "none"
        """Whether the thinking is returned apart (all but ``none``)."""
        self.keep = split.style in ("none", "deepseek-legacy")
        """Whether the text keeps the thinking as written; it then starts with the opening,
        so that it shows the whole thinking block."""
        self._splitter = ReasoningSplitter(split.markers, opened=bool(split.opening))
        self._unopened = bool(split.opening) and self.keep

    def whole(self, text: str) -> tuple[str | None, str]:
        """``(reasoning or None, text)`` of the whole reply."""
        thought, answer = split_reasoning(text, self.markers, opened=bool(self.opening))
        return (thought if self.apart else None), (self.opening + text if self.keep else answer)

    def feed(self, piece: str) -> tuple[str, str]:
        """``(reasoning, text)`` a streamed piece adds."""
        return self._out(*self._splitter.feed(piece), raw=piece)

    def flush(self) -> tuple[str, str]:
        """``(reasoning, text)`` held back until the reply's end."""
        return self._out(*self._splitter.flush(), raw="")

    def _out(self, thought: str, answer: str, raw: str) -> tuple[str, str]:
        text = raw if self.keep else answer
        if text and self._unopened:
            self._unopened = False
            text = self.opening + text
        return (thought if self.apart else ""), text


@lru_cache(maxsize=16)
def thinking_markers(template: str) -> ThinkingMarkers | None:
    """The markers ``template`` (Jinja source) wraps reasoning in, or None if it has none.

    As llama.cpp's template analysis does: render an assistant turn with and without
    ``reasoning_content``; the text that appears around the reasoning is the markers. A
    template that never renders past reasoning still names its pair in its source."""
    found = _rendered_markers(template)
    if found is not None:
        return found
    for start, end in _KNOWN:
        if start in template and end in template:
            return ThinkingMarkers(start, end)
    return None


def _rendered_markers(template: str) -> ThinkingMarkers | None:
    from .chat_template import render_raw

    user = {"role": "user", "content": "Hi"}
    answer = {"role": "assistant", "content": _ANSWER}
    try:
        shown = render_raw(template, [user, {**answer, "reasoning_content": _THOUGHT}])
        plain = render_raw(template, [user, answer])
    except Exception:  # a template that refuses these turns: its source may still tell
        return None
    at, answer_at = shown.find(_THOUGHT), shown.find(_ANSWER)
    if not 0 <= at < answer_at:
        return None  # it does not show past reasoning
    common = 0
    while common < min(len(plain), at) and plain[common] == shown[common]:
        common += 1
    start = shown[common:at].strip()
    end = shown[at + len(_THOUGHT) : answer_at].strip()
    return ThinkingMarkers(start, end) if start and end else None


def split_reasoning(text: str, markers: ThinkingMarkers, *, opened: bool) -> tuple[str, str]:
    """``(reasoning, content)`` of a whole reply. ``opened``: the prompt opened the thinking.
    A reply that never closes it is all reasoning (cut by ``max_tokens``, say); one that
    does not begin with it is all content."""
    splitter = ReasoningSplitter(markers, opened=opened)
    thought, answer = splitter.feed(text)
    more_thought, more_answer = splitter.flush()
    return thought + more_thought, answer + more_answer


class ReasoningSplitter:
    """Splits a streamed reply into reasoning and content as its pieces come. A marker may
    arrive over several pieces, so text that could still be the start of one is held back
    until the next piece (or :meth:`flush`) tells."""

    def __init__(self, markers: ThinkingMarkers, *, opened: bool) -> None:
        self._markers = markers
        self._state = "thinking" if opened else "before"
        self._held = ""
        self._fresh = True
        """No thought yet: the whitespace that starts it is left out."""

    def feed(self, piece: str) -> tuple[str, str]:
        """The reasoning and the content that ``piece`` adds (either may be empty)."""
        self._held += piece
        thought: list[str] = []
        answer: list[str] = []
        while self._held:
            if self._state == "before":  # leading whitespace, then the start marker or not
                rest = self._held.lstrip()
                if not rest or self._markers.start.startswith(rest):
                    break  # not yet known
                if rest.startswith(self._markers.start):
                    self._held = rest[len(self._markers.start) :]
                    self._state = "thinking"
                else:
                    self._state = "answering"
            elif self._state == "thinking":
                if self._fresh:
                    self._held = self._held.lstrip()
                    if not self._held:
                        break
                    self._fresh = False
                end = self._held.find(self._markers.end)
                if end < 0:
                    keep = _partial_suffix(self._held, self._markers.end)
                    thought.append(self._held[: len(self._held) - keep])
                    self._held = self._held[len(self._held) - keep :]
                    break
                thought.append(self._held[:end])
                self._held = self._held[end + len(self._markers.end) :]
                self._state = "after"
            elif self._state == "after":  # the answer starts past the whitespace
                rest = self._held.lstrip()
                if not rest:
                    self._held = ""
                    break
                self._held = rest
                self._state = "answering"
            else:
                answer.append(self._held)
                self._held = ""
        return "".join(thought), "".join(answer)

    def flush(self) -> tuple[str, str]:
        """What was held back, at the reply's end."""
        held, self._held = self._held, ""
        if self._state == "thinking":
            return held, ""
        if self._state == "before":  # a reply too short to tell: content, unless blank
            return "", held if held.strip() else ""
        return "", held if self._state == "answering" else ""


def _partial_suffix(text: str, marker: str) -> int:
    """The length of the longest end of ``text`` that begins ``marker``."""
    for n in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0
