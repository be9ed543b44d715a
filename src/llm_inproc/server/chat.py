"""A chat request's conversation and tools: OpenAI's ``messages`` (assistant turns with
``tool_calls``, ``tool`` results) as our :class:`Message` list, and ``tools``,
``tool_choice`` and ``parallel_tool_calls`` as one validated :class:`ToolRequest`.
Everything wrong is a 400 ``invalid_request_error`` that names the message or field."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidInputError
from ..prompting.messages import Message, Role
from ..tools.types import ToolCall, ToolRequest, tool_request
from .errors import invalid

__all__ = ["parse_messages", "parse_tools"]

_ROLES = {
    "system": Role.SYSTEM,
    "developer": Role.SYSTEM,
    "user": Role.USER,
}


def _content(i: int, message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if content is None:
        if message.get("role") == "assistant":
            return ""
        raise invalid("All non-assistant messages must contain 'content'")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise invalid(
                    f"messages[{i}].content: only text parts are supported "
                    '({"type": "text", "text": ...})'
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise invalid(f"messages[{i}].content: a text part needs a string 'text'")
            texts.append(text)
        return "\n".join(texts)
    raise invalid(f"messages[{i}].content: must be a string or an array of text parts")


def _assistant(i: int, m: Mapping[str, Any]) -> Message:
    """An assistant turn; with ``tool_calls``, the turn that called them (``TOOL_CALL``)."""
    calls = m.get("tool_calls")
    if calls is None or calls == []:
        return Message(Role.ASSISTANT, _content(i, m))
    if not isinstance(calls, list):
        raise invalid(f"messages[{i}].tool_calls: must be an array of tool calls")
    parsed = [
        ToolCall.from_openai(c, where=f"messages[{i}].tool_calls[{j}]") for j, c in enumerate(calls)
    ]
    return Message(Role.TOOL_CALL, _content(i, m), tool_calls=parsed)


def _tool_result(i: int, m: Mapping[str, Any]) -> Message:
    """A ``tool`` message: a call's result, naming the call by ``tool_call_id``."""
    call_id = m.get("tool_call_id")
    if call_id is not None and not isinstance(call_id, str):
        raise invalid(f"messages[{i}].tool_call_id: must be a string (the id of the call)")
    return Message(Role.TOOL_CALL_RESULT, _content(i, m), tool_call_id=call_id or "")


def _message(i: int, m: Any) -> Message:
    if not isinstance(m, dict):
        raise invalid(f"messages[{i}]: must be an object with 'role' and 'content'")
    role = m.get("role")
    if role == "assistant":
        return _assistant(i, m)
    if role == "tool":
        return _tool_result(i, m)
    if isinstance(role, str) and role in _ROLES:
        return Message(_ROLES[role], _content(i, m))
    raise invalid(
        f"messages[{i}].role: {json.dumps(role)} is not supported; "
        "use system, user, assistant or tool"
    )


def parse_messages(body: Mapping[str, Any]) -> list[Message]:
    """``messages`` of a chat request as our :class:`Message` list."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise invalid("Expected 'messages' to be an array")
    if not messages:
        raise invalid("Field 'messages': is empty; send at least one message")
    out: list[Message] = []
    for i, m in enumerate(messages):
        try:
            out.append(_message(i, m))
        except InvalidInputError as e:
            text = str(e)
            raise invalid(text if text.startswith("messages[") else f"messages[{i}]: {e}") from None
    _check_continuation(body, out)
    return out


def _check_continuation(body: Mapping[str, Any], messages: list[Message]) -> None:
    """``continue_final_message`` and ``add_generation_prompt`` as llama-server reads them: a
    last assistant message is always continued (a prefill); asking for both is an error;
    leaving the generation prompt out is possible only to continue such a message."""
    cont = body.get("continue_final_message")
    add = body.get("add_generation_prompt", True)
    if not isinstance(add, bool):
        raise invalid("Field 'add_generation_prompt': must be true or false")
    if cont is not None and not isinstance(cont, (bool, str)):
        raise invalid("Field 'continue_final_message': must be true, false, or \"content\"")
    continuing = cont is True or cont in ("content", "reasoning_content")
    if continuing and add:
        raise invalid("Cannot set both add_generation_prompt and continue_final_message to true.")
    last = messages[-1]
    if last.role is Role.TOOL_CALL and continuing:
        raise invalid("Cannot continue an assistant message that contains tool calls.")
    if (continuing or not add) and last.role is not Role.ASSISTANT:
        raise invalid(
            "continue_final_message (and add_generation_prompt: false) continue a last "
            "assistant message; end the conversation with one, or drop the field"
        )


def parse_tools(body: Mapping[str, Any]) -> ToolRequest | None:
    """``tools``, ``tool_choice`` (a string or OpenAI's ``{"type": "function", "function":
    {"name": ...}}``) and ``parallel_tool_calls``, validated together; None without tools."""
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise invalid(
            'Field \'tools\': must be an array of tools ({"type": "function", "function": '
            '{"name", "description", "parameters"}})'
        )
    try:
        return tool_request(tools, body.get("tool_choice"), body.get("parallel_tool_calls"))
    except InvalidInputError as e:
        raise invalid(str(e)) from None
