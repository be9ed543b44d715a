"""OpenAI's Responses API (``/v1/responses``, ``/v1/responses/input_tokens``), as
llama-server serves it: the request becomes a chat request (:mod:`.responses_request`),
the reply a ``response`` whose ``output`` holds a ``reasoning`` item (where the template
thinks), a ``message`` item and ``function_call`` items, or a stream of typed events (the
thinking as ``response.reasoning_text.delta``, first).

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
from ..prompting.reasoning import Thinking
from ..tools.types import ToolCall
from .conversation import answer_conversation, count_conversation
from .loop import Done, NamedEvents, state_of
from .parse import Generation, parse_json
from .responses_request import parse_responses
from .state import ServerState
from .thinking import SplitPieces

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


def _has_text(done: Done, text: str) -> bool:
    # Beside calls, whitespace is what is left of the call markup, not text.
    return bool(text.strip() if done.reply.tool_calls else text)


def _reasoning_item(item_id: str, thought: str, status: str) -> dict[str, Any]:
    """A ``reasoning`` output item, as llama-server writes one (no summary, no encryption)."""
    content = [{"text": thought, "type": "reasoning_text"}] if thought else []
    return {
        "id": item_id,
        "summary": [],
        "type": "reasoning",
        "content": content,
        "encrypted_content": "",
        "status": status,
    }


class _Responses(SplitPieces, NamedEvents):
    def __init__(self, state: ServerState, gen: Generation, thinking: Thinking | None) -> None:
        super().__init__(gen)
        self.model, self.created = state.model_name, int(time.time())
        self.id, self.message_id = wire.new_id("resp_"), wire.new_id("msg_")
        self.reasoning_id = wire.new_id("rs_")
        self.thinking = thinking
        self.thought = ""
        """The reasoning streamed so far."""
        self.text = ""
        """The text streamed so far (without the reasoning)."""
        self.text_started = False

    def _progress(self, kind: str) -> dict[str, Any]:
        response = {"id": self.id, "object": "response", "status": "in_progress"}
        return {"type": kind, "response": response}

    def head(self, index: int) -> list[dict[str, Any]]:
        return [self._progress("response.created"), self._progress("response.in_progress")]

    def _thought(self, thought: str) -> list[dict[str, Any]]:
        if not thought:
            return []
        out = []
        if not self.thought:
            item = _reasoning_item(self.reasoning_id, "", "in_progress")
            out.append({"type": "response.output_item.added", "item": item})
        self.thought += thought
        delta = {"delta": thought, "item_id": self.reasoning_id}
        return [*out, {"type": "response.reasoning_text.delta", **delta}]

    def _text(self, text: str) -> list[dict[str, Any]]:
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
        self.text += text
        delta = {"type": "response.output_text.delta", "item_id": self.message_id, "delta": text}
        return [*out, delta]

    def _split(self, done: Done) -> tuple[str, str]:
        """The whole reply's reasoning ("" if none) and text."""
        if self.thinking is None:
            return "", done.content
        thought, text = self.thinking.whole(done.content)
        return thought or "", text

    def _output(
        self, done: Done, message_id: str, text: str | None, thought: str, reasoning_id: str
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if thought:
            out.append(_reasoning_item(reasoning_id, thought, "completed"))
        if text is not None:
            out.append(
                {
                    "type": "message",
                    "status": "completed",
                    "id": message_id,
                    "content": [_text_part(text)],
                    "role": "assistant",
                }
            )
        return out + [_call_item(c, "completed", c.raw) for c in done.reply.tool_calls]

    def tail(self, done: Done) -> list[dict[str, Any]]:
        out = self.held()
        for call in done.reply.tool_calls:
            item = _call_item(call, "in_progress", "")
            out.append({"type": "response.output_item.added", "item": item})
            if call.raw:
                delta = {"delta": call.raw, "item_id": item["id"]}
                out.append({"type": "response.function_call_arguments.delta", **delta})
        text = self.text if self.text_started else None
        output = self._output(done, self.message_id, text, self.thought, self.reasoning_id)
        items = [{"type": "response.output_item.done", "item": item} for item in output]
        if self.thought:  # the reasoning is done first, as llama-server ends it
            out.append(items.pop(0))
        if text is not None:
            at = {"item_id": self.message_id}
            out.append({"type": "response.output_text.done", **at, "text": text})
            out.append({"type": "response.content_part.done", **at, "part": _text_part(text)})
        out += items
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
        thought, text = self._split(done)
        return {
            "completed_at": int(time.time()),
            "created_at": self.created,
            "id": self.id,
            "model": self.model,
            "object": "response",
            "output": self._output(
                done,
                wire.new_id("msg_"),
                text if _has_text(done, text) else None,
                thought,
                wire.new_id("rs_"),
            ),
            "status": "completed",
            "usage": _usage(done.cost),
        }


async def create(request: Request) -> Response:
    """``POST /v1/responses`` (also ``/responses``)."""
    state = state_of(request)
    body = parse_json(await request.body())
    session = state.ready()
    req = parse_responses(body, state.settings.defaults)

    def make_format(_: int, thinking: Thinking | None) -> _Responses:
        return _Responses(state, req.gen, thinking)

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
