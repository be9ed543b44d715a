"""The chat-template prompt path: the GGUF's own Jinja template, or a format by architecture.

Used when a model has no raw :class:`~llm_inproc.prompting.encoding.PromptEncoding` in the
catalogue. Templates run in Jinja's sandbox: they come from downloaded files.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError
from .encoding import PromptEncoding
from .messages import Message, Role

if TYPE_CHECKING:
    from ..tools.types import Tool, ToolCall

__all__ = [
    "fallback_encoding",
    "render_chat_template",
    "render_raw",
    "template_messages",
    "tools_polyfill",
]

_GEMMA = PromptEncoding(
    system_token_start="<start_of_turn>user\n",
    system_token_end="<end_of_turn>\n",
    user_token_start="<start_of_turn>user\n",
    user_token_end="<end_of_turn>\n",
    assistant_token_start="<start_of_turn>model\n",
    assistant_token_end="<end_of_turn>\n",
)
_CHATML = PromptEncoding(
    system_token_start="<|im_start|>system\n",
    system_token_end="<|im_end|>\n",
    user_token_start="<|im_start|>user\n",
    user_token_end="<|im_end|>\n",
    assistant_token_start="<|im_start|>assistant\n",
    assistant_token_end="<|im_end|>\n",
)
_LLAMA3 = PromptEncoding(
    begin_of_text="<|begin_of_text|>",
    system_token_start="<|start_header_id|>system<|end_header_id|>\n\n",
    system_token_end="<|eot_id|>",
    user_token_start="<|start_header_id|>user<|end_header_id|>\n\n",
    user_token_end="<|eot_id|>",
    assistant_token_start="<|start_header_id|>assistant<|end_header_id|>\n\n",
    assistant_token_end="<|eot_id|>",
)
_PHI3 = PromptEncoding(
    system_token_start="<|system|>\n",
    system_token_end="<|end|>\n",
    user_token_start="<|user|>\n",
    user_token_end="<|end|>\n",
    assistant_token_start="<|assistant|>\n",
    assistant_token_end="<|end|>\n",
)

_BY_ARCH = {
    "gemma": _GEMMA,
    "gemma2": _GEMMA,
    "gemma3": _GEMMA,
    "gemma3n": _GEMMA,
    "qwen2": _CHATML,
    "qwen3": _CHATML,
    "llama": _LLAMA3,
    "phi3": _PHI3,
}


def fallback_encoding(architecture: str) -> PromptEncoding:
    """A known raw format for a GGUF that carries no chat template (ChatML otherwise)."""
    return _BY_ARCH.get(architecture, _CHATML)


_ROLE_NAMES = {
    Role.SYSTEM: "system",
    Role.USER: "user",
    Role.ASSISTANT: "assistant",
    Role.AVAILABLE_TOOLS: "system",
    Role.TOOL_CALL: "assistant",
    Role.TOOL_CALL_RESULT: "tool",
}


class _Arguments(dict[str, Any]):
    """A call's arguments for a template: a dict (``|tojson``, ``.items()``) that prints as
    its JSON text, for the templates that write ``{{ arguments }}`` as a string."""

    def __str__(self) -> str:
        return json.dumps(self, ensure_ascii=False)

    def __add__(self, other: Any) -> Any:
        return str(self) + other if isinstance(other, str) else NotImplemented

    def __radd__(self, other: Any) -> Any:
        return other + str(self) if isinstance(other, str) else NotImplemented


def _tojson(
    value: Any,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
    ensure_ascii: bool = False,
) -> str:
    """Hugging Face's ``tojson``: plain JSON (Jinja's own escapes ``<`` and ``>`` for HTML)."""
    return json.dumps(
        value, indent=indent, separators=separators, sort_keys=sort_keys, ensure_ascii=ensure_ascii
    )


@lru_cache(maxsize=8)
def _compile(source: str) -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )

    def raise_exception(message: str) -> None:
        raise InvalidInputError(f"the model's chat template refused the messages: {message}")

    def strftime_now(layout: str) -> str:
        return _dt.datetime.now().strftime(layout)

    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.filters["tojson"] = _tojson
    return env.from_string(source)


def _call(call: ToolCall) -> dict[str, Any]:
    args = _Arguments(call.arguments)
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": args}}


def template_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Messages as chat templates take them (OpenAI's shape, arguments as objects)."""
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for m in messages:
        item: dict[str, Any] = {"role": _ROLE_NAMES[m.role], "content": m.content}
        if m.tool_calls:
            item["tool_calls"] = [_call(c) for c in m.tool_calls]
            names.update((c.id, c.name) for c in m.tool_calls)
        if m.role is Role.TOOL_CALL_RESULT:
            item["tool_call_id"] = m.tool_call_id
            if m.tool_call_id in names:
                item["name"] = names[m.tool_call_id]
        out.append(item)
    return out


def render_chat_template(
    template: str,
    messages: Sequence[Message],
    *,
    bos_token: str = "",
    eos_token: str = "",
    tools: Sequence[Tool] = (),
    generation_prompt: bool | None = None,
    variables: Mapping[str, Any] | None = None,
) -> str:
    """Render ``messages`` with a Hugging Face style chat template, ready for the reply;
    ``tools`` are passed as templates expect them (OpenAI's tool objects); ``variables``
    are the other values it reads (``enable_thinking``, true unless they say otherwise, as
    llama-server renders).

    A last assistant message is a prefill, as llama-server continues it: the conversation
    before it, the template's generation prompt, then its text, which the reply goes on
    from (``"The answer is"``, an opening brace)."""
    from jinja2 import TemplateError

    if messages and messages[-1].role is Role.ASSISTANT:
        if len(messages) >= 2 and messages[-2].role is Role.ASSISTANT:
            raise InvalidInputError(
                "Cannot have 2 or more assistant messages at the end of the list; "
                "the last one is continued, so merge them"
            )
        head = render_chat_template(
            template,
            messages[:-1],
            bos_token=bos_token,
            eos_token=eos_token,
            tools=tools,
            generation_prompt=True,
            variables=variables,
        )
        return head + messages[-1].content
    extra: dict[str, Any] = {}
    if tools:
        extra["tools"] = [t.to_openai() for t in tools]
    if any(m.tool_calls for m in messages) and not _shows_calls(template):
        messages = _as_text(messages)
    try:
        compiled = _compile(template)
        return str(
            compiled.render(
                messages=template_messages(messages),
                add_generation_prompt=generation_prompt
                if generation_prompt is not None
                else not messages or messages[-1].role is not Role.TOOL_CALL,
                bos_token=bos_token,
                eos_token=eos_token,
                **{"enable_thinking": True, **(variables or {})},  # R1's closes it else
                **extra,
            )
        )
    except TemplateError as e:
        raise InvalidInputError(
            f"the model's chat template failed on these messages ({e}); "
            "check the roles (some templates refuse a system message) or use a raw prompt encoding"
        ) from e


def render_raw(template: str, messages: list[dict[str, Any]]) -> str:
    """``messages`` (already in the template's shape) rendered as history, without the
    generation prompt: for looking at how a template writes a turn."""
    return str(_compile(template).render(messages=messages, add_generation_prompt=False))


_PROBE_TOOL = "zq_probe_tool"


@lru_cache(maxsize=8)
def _shows_calls(template: str) -> bool:
    """Whether ``template`` writes an assistant turn's ``tool_calls``."""
    from ..tools.types import ToolCall

    call = ToolCall("call_zq", _PROBE_TOOL, {})
    msgs = [Message(Role.USER, "zq"), Message(Role.TOOL_CALL, "", tool_calls=[call])]
    try:
        shown = _compile(template).render(
            messages=template_messages(msgs), add_generation_prompt=False
        )
    except Exception:  # a template that refuses the probe shows nothing of it either
        return False
    return _PROBE_TOOL in str(shown)


def _as_text(messages: Sequence[Message]) -> list[Message]:
    """Tool turns as text, for a template that ignores ``tool_calls`` (as minja's polyfill):
    a call turn as the JSON the generic tool format answers with, a result as the user
    telling what the tool returned (small models answer from that, not from a role they
    never saw in training)."""
    names: dict[str, str] = {}
    out: list[Message] = []
    for m in messages:
        if m.tool_calls:
            names.update((c.id, c.name) for c in m.tool_calls)
            calls = [c.to_dict() for c in m.tool_calls]
            body: dict[str, Any] = {"tool_calls": calls}
            if m.content:
                body["content"] = m.content
            m = Message(Role.ASSISTANT, json.dumps(body, ensure_ascii=False, indent=2))
        elif m.role is Role.TOOL_CALL_RESULT:
            name = names.get(m.tool_call_id, "the tool")
            m = Message(Role.USER, f"The tool {name} returned: {m.content}")
        out.append(m)
    return out


@lru_cache(maxsize=8)
def _call_example(template: str) -> str | None:
    """How ``template`` writes a call, or None when it does not show tools to the model
    (then the tools must be described in the system prompt, as minja's polyfill does)."""
    from ..tools.types import Tool, ToolCall

    probe = Tool(_PROBE_TOOL, "probe", {"type": "object", "properties": {"x": {"type": "string"}}})
    ask = [Message(Role.USER, "zq_question")]
    try:
        shown = render_chat_template(template, ask, tools=[probe])
        if _PROBE_TOOL in shown:
            return None
        call = ToolCall("call_zq", "get_weather", {"city": "Paris"})
        before = render_chat_template(template, ask)
        after = render_chat_template(
            template, [*ask, Message(Role.TOOL_CALL, "", tool_calls=[call])]
        )
    except InvalidInputError:
        return ""
    i = 0
    while i < min(len(before), len(after)) and before[i] == after[i]:
        i += 1
    while i > 0 and after[i - 1] not in ">\n":  # not inside a marker such as <|...|>
        i -= 1
    example = after[i:].strip()
    return example if "get_weather" in example else ""


def tools_polyfill(template: str, tools: Sequence[Tool]) -> str:
    """System-prompt text that shows ``tools`` to a model whose template does not; empty
    when the template shows them itself."""
    example = _call_example(template)
    if example is None:
        return ""
    listing = json.dumps([t.to_openai() for t in tools], ensure_ascii=False, indent=2)
    text = f"You can call any of the following tools to satisfy the user's requests: {listing}"
    if example:
        text += f"\n\nExample tool call syntax:\n\n{example}"
    return text
