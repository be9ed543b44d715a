"""Chat messages and the system-prompt template."""

from __future__ import annotations

import datetime as _dt
import logging
import re
from dataclasses import dataclass
from enum import Enum

from ..errors import InvalidInputError

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
    """One turn of a conversation."""

    role: Role
    """The author; a :class:`Role` (its string value is accepted and converted)."""
    content: str
    """The text of the turn."""

    def __init__(self, role: Role | str, content: str) -> None:
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
