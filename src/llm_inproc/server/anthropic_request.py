"""An Anthropic Messages request read into our chat request: ``system`` and ``messages``
(text, ``tool_use`` and ``tool_result`` blocks) as :class:`Message` values, ``tools`` and
``tool_choice`` as one :class:`ToolRequest`, and the sampling fields as the chat body that
:func:`parse_generation` reads.

It follows llama-server's ``server_chat_convert_anthropic_to_oai``: the same fields pass
(``max_tokens`` defaults to 4096, ``stop_sequences`` are the stop strings, only
``temperature``, ``top_p``, ``top_k`` and ``stream`` of the sampling fields), an assistant
turn without ``content`` and a turn left empty are dropped, ``thinking`` blocks are
dropped (there is no reasoning to continue here).

Where llama-server would quietly lose what the client sent, this refuses with a 400 that
names the block: an image or document (the model reads text only), a block type it does
not know, a server tool, a conversation with no message at all (llama-server answers the
template's bare generation prompt; our Session needs a message, a system prompt will do).
``tool_choice`` ``{"type": "tool", "name"}`` forces that tool and ``{"type": "none"}``
offers none (llama-server reads them as "any tool" and "auto"). A user turn's
``tool_result`` blocks come before its text, the order Anthropic requires them in
(llama-server puts the text first).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInputError
from ..prompting.messages import Message, Role
from ..tools.types import Tool, ToolCall, ToolRequest, tool_request
from .errors import invalid
from .parse import Defaults, Generation, parse_generation

__all__ = ["AnthropicRequest", "parse_anthropic", "parse_conversation"]

DEFAULT_MAX_TOKENS = 4096
"""llama-server's ``max_tokens`` when a request leaves it out (Anthropic requires it)."""

_PASSED = ("temperature", "top_p", "top_k", "stream")
_DROPPED = frozenset({"thinking", "redacted_thinking"})
_NO_VISION = frozenset({"image", "document"})


@dataclass(frozen=True)
class AnthropicRequest:
    """What a ``/v1/messages`` body asks for."""

    messages: list[Message]
    tools: ToolRequest | None
    gen: Generation


def _text_blocks(where: str, blocks: list[Any]) -> list[str]:
    """The texts of an array that may hold only text blocks (a system prompt, a result)."""
    out: list[str] = []
    for j, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind in _NO_VISION:
            raise invalid(f"{where}[{j}]: {kind} blocks are not supported; the model reads text")
        if kind != "text" or not isinstance(block.get("text"), str):
            raise invalid(f'{where}[{j}]: must be a text block ({{"type": "text", "text": ...}})')
        out.append(block["text"])
    return out


def _system(body: Mapping[str, Any]) -> list[Message]:
    system = body.get("system")
    if system is None:
        return []
    if isinstance(system, str):
        return [Message(Role.SYSTEM, system)]
    if isinstance(system, list):
        return [Message(Role.SYSTEM, "".join(_text_blocks("system", system)))]
    raise invalid("Field 'system': must be a string or an array of text blocks")


def _tool_use(where: str, block: Mapping[str, Any]) -> ToolCall:
    call_id, name, args = block.get("id", ""), block.get("name"), block.get("input", {})
    if not isinstance(call_id, str):
        raise invalid(f"{where}.id: must be a string (the call's id)")
    if not isinstance(name, str) or not name:
        raise invalid(f"{where}.name: a tool_use block needs the tool's name")
    if not isinstance(args, dict):
        raise invalid(f"{where}.input: must be an object (the call's arguments)")
    return ToolCall(id=call_id, name=name, arguments=args)


def _tool_result(where: str, block: Mapping[str, Any]) -> Message:
    call_id, content = block.get("tool_use_id", ""), block.get("content")
    if not isinstance(call_id, str):
        raise invalid(f"{where}.tool_use_id: must be a string (the id of the tool_use)")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list):
        text = "".join(_text_blocks(f"{where}.content", content))
    else:
        raise invalid(f"{where}.content: must be a string or an array of text blocks")
    if not isinstance(block.get("is_error", False), bool):
        raise invalid(f"{where}.is_error: must be true or false")
    return Message(Role.TOOL_CALL_RESULT, text, tool_call_id=call_id)


def _blocks(i: int, role: str, blocks: list[Any]) -> list[Message]:
    """One turn's content blocks: the tool results first, then the turn itself (its text,
    with the calls of an assistant turn); nothing when nothing is left."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    results: list[Message] = []
    for j, block in enumerate(blocks):
        where = f"messages[{i}].content[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if not isinstance(block, dict) or not isinstance(kind, str):
            raise invalid(f"{where}: must be a content block, an object with a 'type'")
        if kind == "text":
            if not isinstance(block.get("text"), str):
                raise invalid(f"{where}.text: a text block needs a string 'text'")
            texts.append(block["text"])
        elif kind == "tool_use" and role == "assistant":
            calls.append(_tool_use(where, block))
        elif kind == "tool_result" and role == "user":
            results.append(_tool_result(where, block))
        elif kind in ("tool_use", "tool_result"):
            owner = "assistant" if kind == "tool_use" else "user"
            raise invalid(f"{where}: {kind} blocks belong in {owner} messages")
        elif kind in _NO_VISION:
            raise invalid(f"{where}: {kind} blocks are not supported; the model reads text")
        elif kind not in _DROPPED:
            raise invalid(
                f"{where}.type: {json.dumps(kind)} is not supported; "
                "use text, tool_use or tool_result blocks"
            )
    text = "\n".join(texts)
    if calls:
        return [*results, Message(Role.TOOL_CALL, text, tool_calls=calls)]
    if texts:
        turn = Role.USER if role == "user" else Role.ASSISTANT
        return [*results, Message(turn, text)]
    return results


def _turn(i: int, m: Any) -> list[Message]:
    if not isinstance(m, dict):
        raise invalid(f"messages[{i}]: must be an object with 'role' and 'content'")
    role = m.get("role")
    if role not in ("user", "assistant"):
        raise invalid(
            f"messages[{i}].role: {json.dumps(role)} is not supported; use user or assistant "
            "(the system prompt goes in 'system')"
        )
    if "content" not in m:
        if role == "assistant":
            return []
        raise invalid(f"messages[{i}]: All non-assistant messages must contain 'content'")
    content = m["content"]
    if isinstance(content, str):
        return [Message(Role.USER if role == "user" else Role.ASSISTANT, content)]
    if isinstance(content, list):
        return _blocks(i, role, content)
    raise invalid(f"messages[{i}].content: must be a string or an array of content blocks")


def parse_conversation(body: Mapping[str, Any]) -> tuple[list[Message], ToolRequest | None]:
    """``system``, ``messages``, ``tools`` and ``tool_choice`` (also what ``count_tokens``
    reads)."""
    if "messages" not in body:
        raise invalid("Field 'messages': is required; send an array of {role, content} turns")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise invalid("Field 'messages': must be an array of {role, content} turns")
    out = _system(body)
    for i, m in enumerate(messages):
        try:
            out.extend(_turn(i, m))
        except InvalidInputError as e:  # from Message and ToolCall themselves
            text = str(e)
            raise invalid(text if text.startswith("messages[") else f"messages[{i}]: {e}") from None
    if not out:
        raise invalid(
            "Field 'messages': no message to answer; send at least one user message "
            "(or a system prompt)"
        )
    return out, _tools(body)


def _tool(i: int, t: Any) -> Tool:
    if not isinstance(t, dict):
        raise invalid(f"tools[{i}]: must be an object with name, description and input_schema")
    kind = t.get("type", "custom")
    if kind not in ("custom", None):
        raise invalid(
            f"tools[{i}].type: {json.dumps(kind)} is a server tool, which this server does not "
            "run; give client tools (name, description, input_schema)"
        )
    fn = {"name": t.get("name"), "description": t.get("description") or ""}
    if t.get("input_schema") is not None:
        fn["parameters"] = t["input_schema"]
    try:
        return Tool.from_openai(fn, where=f"tools[{i}]")
    except InvalidInputError as e:
        raise invalid(f"tools[{i}]: {e}") from None


def _choice(body: Mapping[str, Any]) -> tuple[str | None, bool]:
    """``tool_choice`` as ours (a mode or a tool's name) and whether calls may come in
    parallel (only when ``disable_parallel_tool_use`` is false, as our chat route's
    ``parallel_tool_calls`` is off unless asked for)."""
    choice = body.get("tool_choice")
    if choice is None:
        return None, False
    if not isinstance(choice, dict):
        raise invalid(
            'Field \'tool_choice\': must be an object, {"type": "auto"}, {"type": "any"}, '
            '{"type": "tool", "name": ...} or {"type": "none"}'
        )
    parallel = choice.get("disable_parallel_tool_use", True)
    if not isinstance(parallel, bool):
        raise invalid("Field 'tool_choice.disable_parallel_tool_use': must be true or false")
    kind = choice.get("type")
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise invalid('Field \'tool_choice.name\': {"type": "tool"} needs the tool\'s name')
        return name, not parallel
    modes = {"auto": "auto", "any": "required", "none": "none"}
    if kind not in modes:
        raise invalid(
            f"Field 'tool_choice.type': {json.dumps(kind)} is not valid; "
            "use auto, any, tool or none"
        )
    return modes[kind], not parallel


def _tools(body: Mapping[str, Any]) -> ToolRequest | None:
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise invalid("Field 'tools': must be an array of {name, description, input_schema}")
    found = [_tool(i, t) for i, t in enumerate(tools or [])]
    choice, parallel = _choice(body)
    try:
        return tool_request(found, choice, parallel)
    except InvalidInputError as e:
        raise invalid(str(e)) from None


def _chat_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """The sampling fields as a chat completion's body (llama-server passes these only)."""
    stops = body.get("stop_sequences")
    if stops is not None and not (
        isinstance(stops, list) and all(isinstance(s, str) for s in stops)
    ):
        raise invalid("Field 'stop_sequences': must be an array of strings")
    max_tokens = body.get("max_tokens")
    out: dict[str, Any] = {
        "max_tokens": DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens,
        "stop": stops,
    }
    out.update((k, body[k]) for k in _PASSED if k in body)
    return out


def parse_anthropic(body: Mapping[str, Any], defaults: Defaults) -> AnthropicRequest:
    """A ``/v1/messages`` body (``metadata`` is accepted and not used)."""
    messages, tools = parse_conversation(body)
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise invalid("Field 'metadata': must be an object")
    gen = parse_generation(_chat_body(body), defaults, "chat")
    return AnthropicRequest(messages, tools, gen)
