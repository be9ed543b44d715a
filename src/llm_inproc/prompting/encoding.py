"""Raw ``/completion`` prompt encoding and reply clean-up, as pure functions.

Both the in-process engine and the HTTP backends use these, so a reply is
cleaned the same way whichever backend produced it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import InvalidInputError
from .messages import Message, Role

__all__ = [
    "END_OF_TURN_MARKERS",
    "TURN_START_MARKERS",
    "PromptEncoding",
    "ReplyCleaner",
    "clean_reply",
]

END_OF_TURN_MARKERS: tuple[str, ...] = (
    "<|eot_id|>",
    "<end_of_turn>",
    "<|end|>",
    "<|endoftext|>",
    "<|im_end|>",
    "</s>",
)
"""Markers that end a reply; they never reach the caller."""

TURN_START_MARKERS: tuple[str, ...] = ("<start_of_turn>", "<|im_start|>", "<|start_header_id|>")
"""Markers that open a new turn: a model that writes one has finished its reply (base
models often go on to invent the user's next message)."""


@dataclass(frozen=True)
class PromptEncoding:
    """How to turn messages into a raw prompt for a model without a usable chat template.

    Each role has a start and an end string wrapped around its messages. A role
    whose start and end are both empty is not supported by the encoding.
    """

    begin_of_text: str = ""
    """Emitted once at the very beginning of the prompt."""
    system_token_start: str = ""
    system_token_end: str = ""
    user_token_start: str = ""
    user_token_end: str = ""
    assistant_token_start: str = ""
    """Also appended after the last message so the model answers."""
    assistant_token_end: str = ""
    """Where the model's reply ends; generation stops there."""
    tools_available_token_start: str = ""
    tools_available_token_end: str = ""
    tool_call_token_start: str = ""
    tool_call_token_end: str = ""
    tool_call_result_token_start: str = ""
    tool_call_result_token_end: str = ""

    @classmethod
    def from_dict(cls, data: Any, where: str = "prompt_encoding") -> PromptEncoding:
        """Build from a YAML mapping; unknown keys and non-strings are errors naming the key."""
        if not isinstance(data, dict):
            raise InvalidInputError(f"{where}: expected a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        for key, value in data.items():
            if key not in known:
                raise InvalidInputError(
                    f"{where}: unknown key {key!r}; valid keys: {', '.join(sorted(known))}"
                )
            if not isinstance(value, str):
                raise InvalidInputError(
                    f"{where}.{key}: expected a string, got {type(value).__name__}"
                )
        enc = cls(**data)
        enc.validate()
        return enc

    def to_dict(self) -> dict[str, str]:
        """The YAML mapping, with empty fields left out."""
        return {k: v for k, v in asdict(self).items() if v}

    def validate(self) -> None:
        """Check the encoding can express a conversation and tell where a reply ends."""
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, str):
                raise InvalidInputError(
                    f"prompt_encoding.{f.name}: expected a string, got {type(value).__name__}"
                )
            if "\x00" in value:
                raise InvalidInputError(f"prompt_encoding.{f.name}: contains a NUL character")
        if not (self.user_token_start or self.user_token_end):
            raise InvalidInputError(
                "prompt_encoding: user_token_start and user_token_end are both empty; "
                "the model could not tell user turns apart"
            )
        if not self.assistant_token_end.strip():
            raise InvalidInputError(
                "prompt_encoding: assistant_token_end is empty; set it to the marker that ends "
                "the model's turn (for example '<end_of_turn>\\n') so generation knows where "
                "to stop"
            )

    def _delimiters(self, role: Role) -> tuple[str, str]:
        return {
            Role.SYSTEM: (self.system_token_start, self.system_token_end),
            Role.USER: (self.user_token_start, self.user_token_end),
            Role.ASSISTANT: (self.assistant_token_start, self.assistant_token_end),
            Role.AVAILABLE_TOOLS: (
                self.tools_available_token_start,
                self.tools_available_token_end,
            ),
            Role.TOOL_CALL: (self.tool_call_token_start, self.tool_call_token_end),
            Role.TOOL_CALL_RESULT: (
                self.tool_call_result_token_start,
                self.tool_call_result_token_end,
            ),
        }[role]

    def encode(self, messages: Sequence[Message]) -> str:
        """Build the raw prompt: begin, each message wrapped, then the assistant start."""
        check_order(messages)
        parts = [self.begin_of_text]
        for i, msg in enumerate(messages):
            start, end = self._delimiters(msg.role)
            if not (start or end):
                raise InvalidInputError(
                    f"message {i}: this model's prompt encoding has no tokens for role "
                    f"{msg.role.value!r}; drop the message or use another model"
                )
            parts += (start, msg.content, end)
        if messages[-1].role is not Role.ASSISTANT:
            parts.append(self.assistant_token_start)
        return "".join(parts)

    def stop_markers(self) -> tuple[str, ...]:
        """Where a reply ends: end-of-turn and turn-start markers, and this encoding's own
        assistant end and user/system starts."""
        own = (self.assistant_token_end, self.user_token_start, self.system_token_start)
        markers = END_OF_TURN_MARKERS + TURN_START_MARKERS + tuple(m.strip() for m in own)
        return tuple(m for m in dict.fromkeys(markers) if m)


_CONVERSATION_ROLES = {Role.USER, Role.ASSISTANT, Role.TOOL_CALL, Role.TOOL_CALL_RESULT}


def check_order(messages: Sequence[Message]) -> None:
    """Enforce the reference's order rules; errors name the index and the role."""
    if not messages:
        raise InvalidInputError("no messages: pass at least one message")
    started = False
    for i, msg in enumerate(messages):
        if not isinstance(msg, Message):
            raise InvalidInputError(f"message {i}: expected a Message, got {type(msg).__name__}")
        if msg.role is Role.AVAILABLE_TOOLS and i != 0:
            raise InvalidInputError(
                f"message {i}: role 'available_tools' may only be the first message"
            )
        if msg.role is Role.SYSTEM and started:
            raise InvalidInputError(
                f"message {i}: role 'system' must come before any user, assistant or tool message"
            )
        if msg.role in _CONVERSATION_ROLES:
            started = True


class ReplyCleaner:
    """Incrementally removes end-of-turn markers and ``\\u2581`` from generated text.

    ``feed`` returns the text that is safe to show now: anything that might be
    the beginning of a marker is held back until the next piece decides it.
    Once a marker is seen, :attr:`stopped` is set and everything after it is dropped.
    """

    __slots__ = ("_buf", "_find", "_firsts", "_maxlen", "_prefixes", "matched", "stopped")

    def __init__(self, markers: Iterable[str] = END_OF_TURN_MARKERS) -> None:
        normalized = (m.replace("\u2581", " ") for m in markers)
        unique = tuple(m for m in dict.fromkeys(normalized) if m)
        # Per piece: one regex search for a whole marker, and a set lookup for a partial one.
        self._find = re.compile("|".join(map(re.escape, unique))).search if unique else None
        self._prefixes = frozenset(m[:k] for m in unique for k in range(1, len(m)))
        self._firsts = frozenset(m[0] for m in unique)
        self._maxlen = max((len(m) for m in unique), default=0)
        self._buf = ""
        self.stopped = False
        self.matched = ""
        """The marker that stopped the reply (as found, ``\\u2581`` mapped), else empty."""

    def feed(self, piece: str) -> str:
        """Add generated text; return what can be shown now."""
        if self.stopped:
            return ""
        buf = self._buf + piece.replace("\u2581", " ")
        found = self._find(buf) if self._find else None
        if found is not None:
            self.stopped = True
            self.matched = found.group(0)
            self._buf = ""
            return buf[: found.start()]
        hold = len(buf)
        start = max(0, len(buf) - self._maxlen + 1)
        if not self._firsts.isdisjoint(buf[start:]):
            for i in range(start, len(buf)):
                if buf[i:] in self._prefixes:
                    hold = i
                    break
        self._buf = buf[hold:]
        return buf[:hold]

    def finish(self) -> str:
        """Release what was held back once generation is over."""
        out, self._buf = ("" if self.stopped else self._buf), ""
        return out


def clean_reply(text: str, markers: Iterable[str] = END_OF_TURN_MARKERS) -> str:
    """Clean a whole reply: cut at the first marker, map ``\\u2581``, strip whitespace."""
    cleaner = ReplyCleaner(markers)
    return (cleaner.feed(text) + cleaner.finish()).strip()
