"""The generating routes: ``/completion`` (llama.cpp's own), ``/v1/completions`` and
``/v1/chat/completions``, whole or streamed as Server-Sent Events.

One loop serves the three; each route only says how its bodies look (a ``_Format``).
Streamed pieces are exactly the pieces the whole reply is joined from, so a stream's
text equals the non-streaming reply. A client that goes away stops its generation:
streams are closed by the ASGI server cancelling them, whole replies by a watcher on
the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from .. import wire
from ..backends.base import GenerationRequest
from ..errors import ContextOverflowError
from ..reply import AsyncReplyStream, Reply
from ..session import Session
from .errors import ApiError, translate
from .parse import Generation, parse_generation, parse_json, parse_messages, parse_prompt
from .prompts import chat_request, completion_request
from .state import ServerState

__all__ = ["chat_completions", "completion", "guarded", "oai_completions"]

Handler = Callable[[Request], Awaitable[Response]]


def guarded(handler: Handler) -> Handler:
    """Answer any error a route raises in llama-server's shape."""

    @functools.wraps(handler)
    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as e:
            return translate(e).response()

    return run


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.llm
    return state


def cost_of(reply: Reply) -> wire.Cost:
    return wire.Cost(reply.finish_reason, reply.prompt, reply.cached_tokens, reply.generated)


class _Format:
    """How one route writes its bodies; the defaults are OpenAI's ``[DONE]`` framing."""

    done_marker = True

    def head(self) -> list[dict[str, Any]]:
        return []

    def piece(self, text: str, n: int) -> dict[str, Any]:
        raise NotImplementedError

    def tail(self, cost: wire.Cost) -> list[dict[str, Any]]:
        raise NotImplementedError

    def whole(self, content: str, cost: wire.Cost) -> dict[str, Any]:
        raise NotImplementedError


class _Native(_Format):
    done_marker = False

    def __init__(
        self, state: ServerState, session: Session, req: GenerationRequest, gen: Generation
    ):
        self.model = state.model_name
        self.prompt = session.render(req)
        self.n_ctx = session.model_info.n_ctx
        self.settings = _settings(req, gen)

    def piece(self, text: str, n: int) -> dict[str, Any]:
        return wire.completion_chunk(text, n, 0)

    def tail(self, cost: wire.Cost) -> list[dict[str, Any]]:
        return [self.whole("", cost)]

    def whole(self, content: str, cost: wire.Cost) -> dict[str, Any]:
        return wire.completion_response(
            content,
            cost,
            model=self.model,
            prompt=self.prompt,
            settings=self.settings,
            n_ctx=self.n_ctx,
        )


class _OaiCompletion(_Format):
    def __init__(self, state: ServerState) -> None:
        self.model, self.response_id, self.created = state.model_name, wire.new_id(), _now()

    def piece(self, text: str, n: int) -> dict[str, Any]:
        return wire.oai_completion_chunk(
            text, model=self.model, response_id=self.response_id, created=self.created
        )

    def tail(self, cost: wire.Cost) -> list[dict[str, Any]]:
        chunk = wire.oai_completion_chunk(
            "", model=self.model, response_id=self.response_id, created=self.created, cost=cost
        )
        return [chunk]

    def whole(self, content: str, cost: wire.Cost) -> dict[str, Any]:
        return wire.oai_completion_response(
            content, cost, model=self.model, response_id=self.response_id, created=self.created
        )


class _Chat(_Format):
    def __init__(self, state: ServerState, include_usage: bool) -> None:
        self.model, self.response_id, self.created = state.model_name, wire.new_id(), _now()
        self.include_usage = include_usage

    def _chunk(self, **kw: Any) -> dict[str, Any]:
        return wire.chat_chunk(
            model=self.model, response_id=self.response_id, created=self.created, **kw
        )

    def head(self) -> list[dict[str, Any]]:
        return [self._chunk(role=True)]

    def piece(self, text: str, n: int) -> dict[str, Any]:
        return self._chunk(content=text)

    def tail(self, cost: wire.Cost) -> list[dict[str, Any]]:
        out = [self._chunk(finish_reason=cost.finish_reason)]
        if self.include_usage:
            out.append(self._chunk(cost=cost))
        return out

    def whole(self, content: str, cost: wire.Cost) -> dict[str, Any]:
        return wire.chat_response(
            content, cost, model=self.model, response_id=self.response_id, created=self.created
        )


def _now() -> int:
    return int(time.time())


def _settings(req: GenerationRequest, gen: Generation) -> dict[str, Any]:
    """``generation_settings``: the sampling used, under llama-server's names."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(req.sampling):
        value = getattr(req.sampling, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    out["logit_bias"] = [[k, v] for k, v in dict(out.get("logit_bias", {})).items()]
    out.update(n_predict=gen.n_predict, max_tokens=gen.n_predict, stream=gen.stream)
    out["stop"] = list(gen.stops)
    return out


def _start(session: Session, req: GenerationRequest) -> AsyncReplyStream:
    try:
        return session.agenerate(req)
    except ContextOverflowError as e:
        n = (
            len(req.tokens)
            if req.tokens is not None
            else len(session.tokenize(session.render(req)))
        )
        raise ApiError(
            400,
            str(e),
            "exceed_context_size_error",
            n_prompt_tokens=n,
            n_ctx=session.model_info.n_ctx,
        ) from None


async def _events(
    state: ServerState, stream: AsyncReplyStream, fmt: _Format
) -> AsyncIterator[bytes]:
    try:
        for event in fmt.head():
            yield wire.sse_event(event)
        n = 0
        async for piece in stream:
            n += 1
            yield wire.sse_event(fmt.piece(piece, n))
        reply = stream.reply
        assert reply is not None
        state.record(reply)
        for event in fmt.tail(cost_of(reply)):
            yield wire.sse_event(event)
        if fmt.done_marker:
            yield wire.SSE_DONE
    except Exception as e:  # after the 200: the error travels as an event
        yield wire.sse_event(translate(e).body())
    finally:
        await stream.aclose()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _whole(request: Request, stream: AsyncReplyStream) -> tuple[str, Reply] | None:
    """The joined pieces and the reply; None when the client left first (generation stopped)."""
    parts: list[str] = []

    async def consume() -> None:
        async with stream:
            async for piece in stream:
                parts.append(piece)

    task = asyncio.ensure_future(consume())
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():  # the client left, or this handler was cancelled
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        return None
    task.result()
    assert stream.reply is not None
    return "".join(parts), stream.reply


async def _answer(
    request: Request, state: ServerState, stream: AsyncReplyStream, gen: Generation, fmt: _Format
) -> Response:
    if gen.stream:
        return StreamingResponse(
            _events(state, stream, fmt),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    done = await _whole(request, stream)
    if done is None:
        return Response(status_code=499)
    content, reply = done
    state.record(reply)
    return JSONResponse(fmt.whole(content, cost_of(reply)))


@guarded
async def completion(request: Request) -> Response:
    """llama.cpp's ``/completion`` (also ``/completions``)."""
    state = _state(request)
    body = parse_json(await request.body())
    session = state.ready()
    prompt = parse_prompt(body)
    gen = parse_generation(body, state.settings.defaults)
    req = completion_request(session, prompt, gen.sampling, gen.stops)
    stream = _start(session, req)
    return await _answer(request, state, stream, gen, _Native(state, session, req, gen))


@guarded
async def oai_completions(request: Request) -> Response:
    """OpenAI's ``/v1/completions``."""
    state = _state(request)
    body = parse_json(await request.body())
    session = state.ready()
    prompt = parse_prompt(body)
    gen = parse_generation(body, state.settings.defaults)
    req = completion_request(session, prompt, gen.sampling, gen.stops)
    stream = _start(session, req)
    return await _answer(request, state, stream, gen, _OaiCompletion(state))


@guarded
async def chat_completions(request: Request) -> Response:
    """OpenAI's ``/v1/chat/completions``."""
    state = _state(request)
    body = parse_json(await request.body())
    session = state.ready()
    messages = parse_messages(body)
    gen = parse_generation(body, state.settings.defaults)
    req = chat_request(session, messages, gen.sampling, gen.stops, state.settings.chat_template)
    stream = _start(session, req)
    return await _answer(request, state, stream, gen, _Chat(state, gen.include_usage))
