"""Chat messages and the system-prompt template."""

from __future__ import annotations

import datetime as _dt
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from ..errors import InvalidInputError

if TYPE_CHECKING:
    from ..tools.types import ToolCall

__all__ = ["Message", "Role", "render_system_prompt"]

logger = logging.getLogger(__name__)


class Role(str, Enum):
    """Who wrote a message. The values are the wire names of the reference."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    AVAILABLE_TOOLS = "available_tools"
    TOOL_CALL = "tool_call"
    TOOL_CALL_RESULT = "tool_call_result"

    def __str__(self) -> str:
        return self.value


@dataclass(init=False)
class Message:
    """One turn of a conversation.

    Tools add two kinds of turn: the model's calls (``Role.TOOL_CALL``, with
    :attr:`tool_calls`; ``content`` is any text the model wrote beside them) and a tool's
    result (``Role.TOOL_CALL_RESULT``, with :attr:`tool_call_id` naming the call it answers).
    """

    role: Role
    """The author; a :class:`Role` (its string value is accepted and converted)."""
    content: str
    """The text of the turn."""
    tool_calls: tuple[ToolCall, ...]
    """The calls of a ``TOOL_CALL`` turn (an assistant turn that called tools)."""
    tool_call_id: str
    """For a ``TOOL_CALL_RESULT`` turn: the id of the call it answers."""

    def __init__(
        self,
        role: Role | str,
        content: str,
        *,
        tool_calls: Iterable[ToolCall] = (),
        tool_call_id: str = "",
    ) -> None:
        try:
            self.role = Role(role)
        except ValueError:
            valid = ", ".join(r.value for r in Role)
            raise InvalidInputError(f"unknown message role {role!r}; use one of: {valid}") from None
        if not isinstance(content, str):
            raise InvalidInputError(
                f"message content must be a string, not {type(content).__name__}"
            )
        self.content = content
        from ..tools.types import ToolCall

        calls = tuple(tool_calls)
        if any(not isinstance(c, ToolCall) for c in calls):
            raise InvalidInputError("tool_calls must be ToolCall values")
        if calls and self.role is not Role.TOOL_CALL:
            raise InvalidInputError(
                f"only a 'tool_call' message carries tool_calls, not a {self.role.value!r} one"
            )
        if not isinstance(tool_call_id, str):
            raise InvalidInputError("tool_call_id must be a string")
        if tool_call_id and self.role is not Role.TOOL_CALL_RESULT:
            raise InvalidInputError(
                f"only a 'tool_call_result' message answers a call (tool_call_id), "
                f"not a {self.role.value!r} one"
            )
        self.tool_calls = calls
        self.tool_call_id = tool_call_id

    @classmethod
    def result(cls, call: ToolCall | str, content: str) -> Message:
        """The result of a tool call, to append after the model's ``TOOL_CALL`` turn."""
        call_id = call if isinstance(call, str) else call.id
        return cls(Role.TOOL_CALL_RESULT, content, tool_call_id=call_id)


# Go's text/template syntax, restricted to the two fields the reference exposes.
# "{{- " and " -}}" trim the white space before and after the action, as in Go.
_ACTION = re.compile(r"(\s*)\{\{(?:(-)\s)?\s*(.*?)\s*(?:\s(-))?\}\}(\s*)", re.DOTALL)
_FIELDS = {".Now", ".Model"}


def _go_time(now: _dt.datetime) -> str:
    """Format like Go's ``Monday 2006-01-02T15:04:05 MST`` layout."""
    zone = now.tzname() or now.strftime("%z") or "UTC"
    return now.strftime("%A %Y-%m-%dT%H:%M:%S ") + zone


def render_system_prompt(text: str, model: str, now: _dt.datetime | None = None) -> str:
    """Expand ``{{.Now}}`` and ``{{.Model}}`` in a system prompt.

    A prompt that is not a valid template (an unknown field, an unclosed action)
    is returned unchanged, as the reference did, and the problem is logged.
    """
    if "{{" not in text:
        return text
    if text.count("{{") != len(_ACTION.findall(text)):
        logger.warning(
            "system prompt is not a valid template (unclosed '{{'); the whole prompt is used "
            "as is, so no field in it is expanded"
        )
        return text
    fields = [m[2] for m in _ACTION.findall(text)]
    unknown = [f for f in fields if f not in _FIELDS]
    if unknown:
        # As Go's text/template: one bad action makes the whole template invalid.
        logger.warning(
            "system prompt template uses unknown field %r (known: %s); the whole prompt is "
            "used as is, so no field in it is expanded",
            unknown[0],
            ", ".join(sorted(_FIELDS)),
        )
        return text
    when = now or _dt.datetime.now().astimezone()
    values = {".Now": _go_time(when), ".Model": str(model)}

    def expand(m: re.Match[str]) -> str:
        before, trim_before, name, trim_after, after = m.groups()
        return ("" if trim_before else before) + values[name] + ("" if trim_after else after)

    return _ACTION.sub(expand, text)
