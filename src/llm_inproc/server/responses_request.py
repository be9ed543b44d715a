"""An OpenAI Responses request read into our chat request: ``instructions`` and ``input``
(a string, or items: messages, ``function_call`` and ``function_call_output``) as
:class:`Message` values, the flat function ``tools`` and ``tool_choice`` as one
:class:`ToolRequest`, and the rest as the chat body that :func:`parse_generation` reads.

It follows llama-server's ``server_chat_convert_responses_to_chatcmpl``: ``instructions``
become the system prompt, ``max_output_tokens`` is ``max_tokens``, the other fields pass
through as a chat completion's (so llama.cpp's sampling fields work here too), an
assistant message or call right after an assistant turn joins it, non-function tools are
skipped, ``reasoning`` items are dropped (no reasoning to continue here), and
``previous_response_id`` is refused (nothing is stored). It is more lenient in two
places, where the official client's own shapes would otherwise fail: an assistant
message without ``"type": "message"`` is read as one, and ``tool_choice`` may name a
function (``{"type": "function", "name"}``). Images and files are refused: the model reads
text only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInputError
from ..prompting.messages import Message, Role
from ..tools.types import Tool, ToolCall, ToolRequest, tool_request
from .errors import invalid
from .parse import Defaults, Generation, parse_generation

__all__ = ["ResponsesRequest", "parse_input", "parse_responses"]

_ROLES = {"user": Role.USER, "system": Role.SYSTEM, "developer": Role.SYSTEM}
_NOT_CHAT = ("input", "instructions", "tools", "tool_choice", "max_output_tokens", "n", "n_cmpl")


@dataclass(frozen=True)
class ResponsesRequest:
    """What a ``/v1/responses`` body asks for."""

    messages: list[Message]
    tools: ToolRequest | None
    gen: Generation


@dataclass
class _Turn:
    """A message being gathered (an assistant turn may grow over several items)."""

    role: Role
    texts: list[str] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    call_id: str = ""

    def message(self) -> Message:
        text = "\n".join(self.texts)
        if self.calls:
            return Message(Role.TOOL_CALL, text, tool_calls=self.calls)
        return Message(self.role, text, tool_call_id=self.call_id)


def _parts(where: str, content: Any, kinds: tuple[str, ...]) -> list[str]:
    """The texts of a message's content: a string, or parts of the ``kinds`` given."""
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise invalid(f"{where}: must be a string or an array of content parts")
    out: list[str] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_image", "input_file"):
            raise invalid(f"{where}[{j}]: {kind} is not supported; the model reads text")
        if kind == "refusal" and isinstance(part.get("refusal"), str):
            out.append(part["refusal"])
            continue
        if kind not in kinds:
            raise invalid(f"{where}[{j}].type: must be one of {', '.join(kinds)}")
        if not isinstance(part.get("text"), str):
            raise invalid(f"{where}[{j}].text: a {kind} part needs a string 'text'")
        out.append(part["text"])
    return out


def _string(where: str, item: Mapping[str, Any], key: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise invalid(f"{where}.{key}: must be a string")
    return value


def _call(where: str, item: Mapping[str, Any]) -> ToolCall:
    raw = _string(where, item, "arguments")
    try:
        args = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as e:
        raise invalid(f"{where}.arguments: not valid JSON ({e.msg} at {e.pos})") from None
    if not isinstance(args, dict):
        raise invalid(f"{where}.arguments: must be a JSON object's text")
    name = _string(where, item, "name")
    return ToolCall(id=_string(where, item, "call_id"), name=name, arguments=args, raw=raw)


def _item(where: str, item: Any, turns: list[_Turn]) -> None:
    """Read one input item onto ``turns``."""
    if not isinstance(item, dict):
        raise invalid(f"{where}: must be an object (a message or a function call item)")
    kind, role = item.get("type"), item.get("role")
    after_assistant = bool(turns) and turns[-1].role is Role.ASSISTANT
    if role in _ROLES and kind in (None, "message"):
        texts = _parts(f"{where}.content", item.get("content"), ("input_text",))
        turns.append(_Turn(_ROLES[role], texts))
    elif role == "assistant" and kind in (None, "message"):
        texts = _parts(f"{where}.content", item.get("content", []), ("output_text", "input_text"))
        if after_assistant:
            turns[-1].texts += texts
        else:
            turns.append(_Turn(Role.ASSISTANT, texts))
    elif kind == "function_call":
        call = _call(where, item)
        if after_assistant:
            turns[-1].calls.append(call)
        else:
            turns.append(_Turn(Role.ASSISTANT, calls=[call]))
    elif kind == "function_call_output":
        call_id = _string(where, item, "call_id")
        texts = _parts(f"{where}.output", item.get("output"), ("input_text",))
        turns.append(_Turn(Role.TOOL_CALL_RESULT, ["".join(texts)], call_id=call_id))
    elif kind != "reasoning":
        raise invalid(
            f"{where}: cannot tell the item's kind; send a message (role and content), a "
            "function_call or a function_call_output"
        )


def parse_input(body: Mapping[str, Any]) -> list[Message]:
    """``instructions`` and ``input`` as our conversation."""
    if "input" not in body:
        raise invalid("Field 'input': is required; send a string or an array of input items")
    if body.get("previous_response_id"):
        raise invalid(
            "Field 'previous_response_id': not supported, nothing is stored; send the whole "
            "conversation in 'input'"
        )
    turns: list[_Turn] = []
    if "instructions" in body:
        instructions = body["instructions"]
        if instructions is not None and not isinstance(instructions, str):
            raise invalid("Field 'instructions': must be a string")
        turns.append(_Turn(Role.SYSTEM, [instructions or ""]))
    given = body["input"]
    if isinstance(given, str):
        turns.append(_Turn(Role.USER, [given]))
    elif isinstance(given, list):
        for i, item in enumerate(given):
            _item(f"input[{i}]", item, turns)
    else:
        raise invalid("Field 'input': must be a string or an array of input items")
    try:
        return [t.message() for t in turns]
    except InvalidInputError as e:
        raise invalid(f"Field 'input': {e}") from None


def _tools(body: Mapping[str, Any]) -> ToolRequest | None:
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise invalid('Field \'tools\': must be an array of {"type": "function", "name", ...}')
    found: list[Tool] = []
    for i, t in enumerate(tools or []):
        if not isinstance(t, dict):
            raise invalid(f"tools[{i}]: must be an object")
        if t.get("type") != "function":
            continue  # llama-server skips them too (built-in tools need OpenAI's servers)
        fn = {k: v for k, v in t.items() if k != "type"}
        try:
            found.append(Tool.from_openai(fn, where=f"tools[{i}]"))
        except InvalidInputError as e:
            raise invalid(str(e)) from None
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        choice = choice.get("name")  # the Responses form: {"type": "function", "name"}
    try:
        return tool_request(found, choice, body.get("parallel_tool_calls"))
    except InvalidInputError as e:
        raise invalid(str(e)) from None


def parse_responses(body: Mapping[str, Any], defaults: Defaults) -> ResponsesRequest:
    """A ``/v1/responses`` body."""
    messages = parse_input(body)
    tools = _tools(body)
    chat = {k: v for k, v in body.items() if k not in _NOT_CHAT}
    budget = body.get("max_output_tokens")
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, int):
            raise invalid(
                f"Field 'max_output_tokens': must be an integer, not {json.dumps(budget)}"
            )
        chat["max_tokens"] = budget
    return ResponsesRequest(messages, tools, parse_generation(chat, defaults, "chat"))
