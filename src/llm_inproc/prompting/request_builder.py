"""The one place where messages become a :class:`GenerationRequest`, for the Session and
the server alike: the order of roles checked, the system prompt's template rendered,
the prompt path chosen (a raw encoding, a ``--chat-template`` override, or the model's
own chat template) and the stop markers that go with it; with tools, the format the
model writes calls in, the grammar that holds it to it, and where the tools go.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..backends.base import GenerationRequest
from ..errors import InvalidInputError
from ..sampling import Sampling
from ..tools.types import ToolRequest
from .chat_template import fallback_encoding, render_chat_template, tools_polyfill
from .encoding import END_OF_TURN_MARKERS, TURN_START_MARKERS, PromptEncoding, check_order
from .messages import Message, Role, render_system_prompt

__all__ = ["NAMED_TEMPLATES", "build_request", "check_template"]

NAMED_TEMPLATES = {"chatml": "qwen2", "gemma": "gemma", "llama3": "llama", "phi3": "phi3"}
"""``--chat-template`` names, as llama-server's built-in ones, to our formats by architecture."""

_TEMPLATE_MARKERS = END_OF_TURN_MARKERS + TURN_START_MARKERS


def check_template(template: str) -> None:
    """Refuse a ``--chat-template`` that is neither a known name nor a Jinja template."""
    if template and template not in NAMED_TEMPLATES and "{" not in template:
        raise InvalidInputError(
            f"--chat-template {template!r} is not a known format "
            f"({', '.join(NAMED_TEMPLATES)}) nor a Jinja template"
        )


def build_request(
    messages: Sequence[Message],
    sampling: Sampling,
    *,
    model: str,
    encoding: PromptEncoding | None,
    template: str = "",
    tools: ToolRequest | None = None,
    chat_template: str | None = None,
    local: bool = True,
    template_tokens: tuple[str, str] = ("", ""),
    template_kwargs: Mapping[str, Any] | None = None,
) -> GenerationRequest:
    """The request for ``messages``: through ``template`` when given (a name from
    :data:`NAMED_TEMPLATES` or a Jinja template), else the raw ``encoding``, else the
    model's own chat template (applied by the backend). ``model`` fills ``{{.Model}}``.

    With ``tools``: when ``local`` (the model runs here), the format is read from
    ``chat_template`` (the model's) or ``template``, and the request carries the grammar;
    otherwise the tools go to the server, which does all that itself.
    """
    if not isinstance(messages, (list, tuple)):
        raise InvalidInputError(
            "messages must be a list of Message, e.g. [Message(Role.USER, 'Hi')]"
        )
    msgs = list(messages)
    check_order(msgs)
    if tools is not None and tools.choice != "none" and (sampling.grammar or sampling.json_schema):
        raise InvalidInputError(
            "a request with tools cannot also have a grammar or json_schema: the tools' "
            "format is the grammar; drop one (or pass tool_choice='none')"
        )
    if msgs[0].role is Role.SYSTEM:
        msgs[0] = Message(Role.SYSTEM, render_system_prompt(msgs[0].content, model))
    if not local and (tools is not None or any(m.tool_calls or m.tool_call_id for m in msgs)):
        return GenerationRequest(
            sampling,
            messages=msgs,
            stops=_stops(_TEMPLATE_MARKERS, sampling),
            tools=tools,
            template_kwargs=dict(template_kwargs or {}),
        )
    if (
        tools is not None
        and tools.choice == "none"
        and not _generic_with_calls(msgs, template or chat_template, encoding)
    ):
        tools = None  # not shown to the model at all: it cannot call what it does not see
    if template and template not in NAMED_TEMPLATES:
        req = _tool_fields(tools, msgs, template, None)
        bos, eos = template_tokens  # as the model's own template gets them
        offered = tools.offered if tools is not None else ()
        text = render_chat_template(
            template,
            req.messages,
            bos_token=bos,
            eos_token=eos,
            tools=offered,
            variables=template_kwargs,
        )
        return dataclasses.replace(
            req,
            sampling=sampling,
            prompt=text,
            messages=(),
            stops=_stops(_TEMPLATE_MARKERS, sampling),
        )
    if template:
        encoding = fallback_encoding(NAMED_TEMPLATES[template])
    if encoding is not None:
        markers = encoding.stop_markers() + (_TEMPLATE_MARKERS if template else ())
        req = _tool_fields(tools, msgs, None, encoding)
        return dataclasses.replace(
            req,
            sampling=sampling,
            prompt=encoding.encode(_plain(req.messages)),
            messages=(),
            stops=_stops(markers, sampling),
        )
    req = _tool_fields(tools, msgs, chat_template, None)
    return dataclasses.replace(
        req,
        sampling=sampling,
        stops=_stops(_TEMPLATE_MARKERS, sampling),
        template_kwargs=dict(template_kwargs or {}),
    )


def _tool_fields(
    tools: ToolRequest | None,
    msgs: list[Message],
    template: str | None,
    encoding: PromptEncoding | None,
) -> GenerationRequest:
    """The messages (with what the format adds to them) and the tool fields of a request."""
    from ..tools.formats import detect_format, encoding_format

    if tools is None:
        return GenerationRequest(Sampling(), messages=msgs)
    if encoding is not None and encoding.tool_call_token_start:
        fmt = encoding_format(
            encoding.tool_call_token_start,
            encoding.tool_call_token_end,
            encoding.tools_available_token_start,
            encoding.tools_available_token_end,
        )
        if msgs[0].role is not Role.AVAILABLE_TOOLS:
            block = json.dumps([t.to_openai() for t in tools.offered], separators=(",", ":"))
            msgs = [Message(Role.AVAILABLE_TOOLS, block), *msgs]
    else:
        fmt = detect_format(template)
    hint = fmt.instructions(tools)
    if not hint and template:
        hint = tools_polyfill(template, tools.offered)
    if hint:
        if msgs[0].role is Role.SYSTEM:
            msgs[0] = Message(Role.SYSTEM, msgs[0].content + "\n\n" + hint)
        else:
            msgs = [Message(Role.SYSTEM, hint), *msgs]
    return GenerationRequest(
        Sampling(), messages=msgs, tools=tools, tool_format=fmt, constraint=fmt.constraint(tools)
    )


def _plain(messages: Sequence[Message]) -> list[Message]:
    """Tool turns as a raw encoding writes them: calls and results as JSON text."""
    out: list[Message] = []
    for m in messages:
        if m.tool_calls:
            calls = [c.to_dict() for c in m.tool_calls]
            m = Message(m.role, json.dumps(calls, ensure_ascii=False))
        elif m.tool_call_id:
            result = {"call_id": m.tool_call_id, "content": m.content}
            m = Message(m.role, json.dumps(result, ensure_ascii=False))
        out.append(m)
    return out


def _stops(markers: tuple[str, ...], sampling: Sampling) -> tuple[str, ...]:
    """The reply's stop strings: the turn markers, and the caller's own.

    Under a grammar the grammar decides where the reply ends (llama.cpp allows an
    end-of-generation token only where the grammar is complete), and a marker's text
    inside it, such as ``</s>`` in a JSON string, is content: cut there, the document
    would end half-written with ``finish_reason="stop"``."""
    if sampling.grammar or sampling.json_schema is not None:
        markers = ()
    return tuple(dict.fromkeys(markers + sampling.stop))


def _generic_with_calls(
    msgs: Sequence[Message], template: str | None, encoding: PromptEncoding | None
) -> bool:
    """Whether a ``tool_choice="none"`` request must still go through the generic JSON
    format: its history shows calls as that JSON, which the model would copy as text."""
    from ..tools.formats import GenericFormat, detect_format

    if not any(m.tool_calls for m in msgs):
        return False
    if encoding is not None:
        return not encoding.tool_call_token_start
    if template in NAMED_TEMPLATES:
        return True
    return isinstance(detect_format(template), GenericFormat)
