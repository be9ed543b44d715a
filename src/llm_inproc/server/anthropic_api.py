"""Anthropic's Messages API (``/v1/messages``, ``/v1/messages/count_tokens``), as
llama-server serves it: the request becomes a chat request (:mod:`.anthropic_request`),
the reply a ``message`` with ``thinking`` (where the template thinks and
``--reasoning-format`` is not ``none``), ``text`` and ``tool_use`` blocks, or a stream of
Anthropic's typed events.

The shapes are llama-server's (``to_json_anthropic`` and ``to_json_anthropic_stream``):
the id is a ``chatcmpl-`` one, ``stop_reason`` is ``end_turn``, ``max_tokens`` or
``tool_use`` (a stop sequence ends the turn too: ``end_turn``, naming it in
``stop_sequence``), ``usage`` counts cached prompt tokens apart
(``cache_read_input_tokens``); a stream sends no ``ping``, opens the text block with its
first text, opens each ``tool_use`` block (index after the text's) with its arguments as
one ``input_json_delta``, and closes the text block after the calls' opening, as
llama-server does. Errors have llama-server's shape (``{"error": {"code", "message",
"type"}}``), also as a stream's ``error`` event.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .. import wire
from ..prompting.reasoning import Thinking
from ..tools.types import ToolCall
from .anthropic_request import parse_anthropic, parse_conversation
from .conversation import answer_conversation, count_conversation
from .errors import translate
from .loop import Done, NamedEvents, state_of
from .parse import Generation, parse_json
from .state import ServerState
from .thinking import SplitPieces

__all__ = ["routes"]


def stop_reason(done: Done) -> str:
    """``max_tokens`` when the budget ended it, ``tool_use`` when it called, else
    ``end_turn`` (llama-server's three)."""
    if done.cost.finish_reason == "length":
        return "max_tokens"
    return "tool_use" if done.reply.tool_calls else "end_turn"


def _has_text(done: Done, text: str) -> bool:
    # Beside calls, whitespace is what is left of the call markup, not text.
    return bool(text.strip() if done.reply.tool_calls else text)


def _tool_use(call: ToolCall) -> dict[str, Any]:
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": dict(call.arguments)}


class _Messages(SplitPieces, NamedEvents):
    def __init__(
        self, state: ServerState, gen: Generation, n_prompt: int, thinking: Thinking | None
    ) -> None:
        super().__init__(gen)
        self.model, self.id, self.n_prompt = state.model_name, wire.new_id(), n_prompt
        self.thinking = thinking
        self.thinking_started = False
        self.text_started = False

    def _block(self, kind: str, index: int, **data: Any) -> dict[str, Any]:
        return {"type": kind, "index": index, **data}

    def head(self, index: int) -> list[dict[str, Any]]:
        """``message_start``; the cache is not known before the end, so the whole prompt
        counts as input here."""
        message: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": self.model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "cache_read_input_tokens": 0,
                "input_tokens": self.n_prompt,
                "output_tokens": 0,
            },
        }
        return [{"type": "message_start", "message": message}]

    def _thought(self, thought: str) -> list[dict[str, Any]]:
        """A ``thinking`` block, first (index 0), as llama-server streams it."""
        if not thought:
            return []
        out = []
        if not self.thinking_started:
            self.thinking_started = True
            start = {"type": "thinking", "thinking": ""}
            out.append(self._block("content_block_start", 0, content_block=start))
        delta = {"type": "thinking_delta", "thinking": thought}
        return [*out, self._block("content_block_delta", 0, delta=delta)]

    def _text(self, text: str) -> list[dict[str, Any]]:
        if not text:
            return []
        out = []
        at = 1 if self.thinking_started else 0
        if not self.text_started:
            self.text_started = True
            start = {"type": "text", "text": ""}
            out.append(self._block("content_block_start", at, content_block=start))
        delta = {"type": "text_delta", "text": text}
        return [*out, self._block("content_block_delta", at, delta=delta)]

    def tail(self, done: Done) -> list[dict[str, Any]]:
        out = self.held()
        first = int(self.thinking_started) + int(self.text_started)
        calls = done.reply.tool_calls
        for i, call in enumerate(calls):
            block = {"type": "tool_use", "id": call.id, "name": call.name}
            out.append(self._block("content_block_start", first + i, content_block=block))
            if call.raw:
                json_delta = {"type": "input_json_delta", "partial_json": call.raw}
                out.append(self._block("content_block_delta", first + i, delta=json_delta))
        if self.thinking_started:  # closed with an empty signature (a local model signs none)
            signature = {"type": "signature_delta", "signature": ""}
            out.append(self._block("content_block_delta", 0, delta=signature))
        out += [self._block("content_block_stop", i) for i in range(first + len(calls))]
        delta: dict[str, Any] = {
            "stop_reason": stop_reason(done),
            "stop_sequence": done.stopping_word or None,
        }
        usage = {"output_tokens": done.cost.generated.count}
        out.append({"type": "message_delta", "delta": delta, "usage": usage})
        return [*out, {"type": "message_stop"}]

    def whole(self, done: Done) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        text = done.content
        if self.thinking is not None:
            thought, text = self.thinking.whole(text)
            if thought:
                content.append({"type": "thinking", "thinking": thought, "signature": ""})
        if _has_text(done, text):
            content.append({"type": "text", "text": text})
        content += [_tool_use(c) for c in done.reply.tool_calls]
        cost = done.cost
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "content": content,
            "model": self.model,
            "stop_reason": stop_reason(done),
            "stop_sequence": done.stopping_word or None,
            "usage": {
                "cache_read_input_tokens": cost.cached_tokens,
                "input_tokens": cost.prompt.count,
                "output_tokens": cost.generated.count,
            },
        }

    def error(self, exc: BaseException) -> bytes:
        """llama-server's ``error`` event: the error object itself as its data."""
        return wire.sse_named_event("error", translate(exc).body()["error"])


async def messages(request: Request) -> Response:
    """``POST /v1/messages``."""
    state = state_of(request)
    body = parse_json(await request.body())
    session = state.ready()
    req = parse_anthropic(body, state.settings.defaults)

    def make_format(n_prompt: int, thinking: Thinking | None) -> _Messages:
        return _Messages(state, req.gen, n_prompt, thinking)

    return await answer_conversation(
        request, state, session, req.messages, req.tools, req.gen, make_format
    )


async def count_tokens(request: Request) -> Response:
    """``POST /v1/messages/count_tokens``: ``{"input_tokens": N}``, the prompt the
    conversation (with its system prompt and tools) makes."""
    state = state_of(request)
    body = parse_json(await request.body())
    session = state.ready()
    conversation, tools = parse_conversation(body)
    n = await count_conversation(state, session, conversation, tools)
    return JSONResponse({"input_tokens": n})


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
    ]
