"""OpenAI's Responses API (``/v1/responses``, ``/v1/responses/input_tokens``), as
llama-server serves it: the request becomes a chat request (:mod:`.responses_request`),
the reply a ``response`` whose ``output`` holds a ``message`` item and ``function_call``
items, or a stream of typed events.

The shapes and the event sequence are llama-server's (``to_json_oaicompat_resp`` and its
stream): ``response.created`` and ``response.in_progress``; with the first text
``response.output_item.added`` and ``response.content_part.added``, then
``response.output_text.delta`` per piece; each call's ``response.output_item.added`` with
its arguments in one ``response.function_call_arguments.delta``; then
``response.output_text.done``, ``response.content_part.done``, the items'
``response.output_item.done`` and ``response.completed`` (with llama-server's
``timings``). Like llama-server, events carry no ``sequence_number``, ``output_index`` or
``content_index``, and nothing is stored. A call's item id is ``fc_`` and its ``call_id``
``call_`` before the call's own id, as llama-server writes them.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .. import wire
from ..tools.types import ToolCall
from .conversation import answer_conversation, count_conversation
from .loop import Done, NamedEvents, state_of
from .parse import Generation, parse_json
from .responses_request import parse_responses
from .state import ServerState
from .thinking import Thinking

__all__ = ["routes"]


def _usage(cost: wire.Cost) -> dict[str, Any]:
    n_prompt = cost.prompt.count + cost.cached_tokens
    return {
        "input_tokens": n_prompt,
        "output_tokens": cost.generated.count,
        "total_tokens": n_prompt + cost.generated.count,
        "input_tokens_details": {"cached_tokens": cost.cached_tokens},
    }


def _call_ids(call: ToolCall) -> tuple[str, str]:
    """The item's id and the ``call_id`` (ours start ``call_`` already: not twice)."""
    own = call.id.removeprefix("call_")
    return "fc_" + own, "call_" + own


def _call_item(call: ToolCall, status: str, arguments: str) -> dict[str, Any]:
    item_id, call_id = _call_ids(call)
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call_id,
        "name": call.name,
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _has_text(done: Done) -> bool:
    # Beside calls, whitespace is what is left of the call markup, not text.
    return bool(done.content.strip() if done.reply.tool_calls else done.content)


class _Responses(NamedEvents):
    def __init__(self, state: ServerState, gen: Generation) -> None:
        super().__init__(gen)
        self.model, self.created = state.model_name, int(time.time())
        self.id, self.message_id = wire.new_id("resp_"), wire.new_id("msg_")
        self.text_started = False

    def _progress(self, kind: str) -> dict[str, Any]:
        response = {"id": self.id, "object": "response", "status": "in_progress"}
        return {"type": kind, "response": response}

    def head(self, index: int) -> list[dict[str, Any]]:
        return [self._progress("response.created"), self._progress("response.in_progress")]

    def piece(self, text: str, n: int, index: int) -> list[dict[str, Any]]:
        if not text:
            return []
        out = []
        if not self.text_started:
            self.text_started = True
            item = {
                "content": [],
                "id": self.message_id,
                "role": "assistant",
                "status": "in_progress",
                "type": "message",
            }
            part = {"type": "output_text", "text": ""}
            out.append({"type": "response.output_item.added", "item": item})
            out.append(
                {"type": "response.content_part.added", "item_id": self.message_id, "part": part}
            )
        delta = {"type": "response.output_text.delta", "item_id": self.message_id, "delta": text}
        return [*out, delta]

    def _output(self, done: Done, message_id: str, text: bool) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if text:
            out.append(
                {
                    "type": "message",
                    "status": "completed",
                    "id": message_id,
                    "content": [_text_part(done.content)],
                    "role": "assistant",
                }
            )
        return out + [_call_item(c, "completed", c.raw) for c in done.reply.tool_calls]

    def tail(self, done: Done) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for call in done.reply.tool_calls:
            item = _call_item(call, "in_progress", "")
            out.append({"type": "response.output_item.added", "item": item})
            if call.raw:
                delta = {"delta": call.raw, "item_id": item["id"]}
                out.append({"type": "response.function_call_arguments.delta", **delta})
        output = self._output(done, self.message_id, self.text_started)
        if self.text_started:
            at = {"item_id": self.message_id}
            out.append({"type": "response.output_text.done", **at, "text": done.content})
            out.append(
                {"type": "response.content_part.done", **at, "part": _text_part(done.content)}
            )
        out += [{"type": "response.output_item.done", "item": item} for item in output]
        response = {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": "completed",
            "model": self.model,
            "output": output,
            "usage": _usage(done.cost),
        }
        timings = wire.timings(done.cost)
        return [*out, {"type": "response.completed", "response": response, "timings": timings}]

    def whole(self, done: Done) -> dict[str, Any]:
        return {
            "completed_at": int(time.time()),
            "created_at": self.created,
            "id": self.id,
            "model": self.model,
            "object": "response",
            "output": self._output(done, wire.new_id("msg_"), _has_text(done)),
            "status": "completed",
            "usage": _usage(done.cost),
        }


async def create(request: Request) -> Response:
    """``POST /v1/responses`` (also ``/responses``)."""
    state = state_of(request)
    body = parse_json(await request.body())
    session = state.ready()
    req = parse_responses(body, state.settings.defaults)

    def make_format(_: int, __: Thinking | None) -> _Responses:  # (thinking: kept in the text)
        return _Responses(state, req.gen)

    return await answer_conversation(
        request, state, session, req.messages, req.tools, req.gen, make_format
    )


async def input_tokens(request: Request) -> Response:
    """``POST /v1/responses/input_tokens``: the prompt tokens the request's input (with its
    instructions and tools) makes."""
    state = state_of(request)
    body = parse_json(await request.body())
    session = state.ready()
    req = parse_responses(body, state.settings.defaults)
    n = await count_conversation(state, session, req.messages, req.tools)
    return JSONResponse({"object": "response.input_tokens", "input_tokens": n})


def routes() -> list[BaseRoute]:
    post = ["POST"]
    return [
        Route("/v1/responses", create, methods=post),
        Route("/responses", create, methods=post),
        Route("/v1/responses/input_tokens", input_tokens, methods=post),
        Route("/responses/input_tokens", input_tokens, methods=post),
    ]
