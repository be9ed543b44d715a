"""The generating routes: ``/completion`` (llama.cpp's own), ``/v1/completions`` and
``/v1/chat/completions``, whole or streamed as Server-Sent Events.

One loop serves the three; each route only says how its bodies look (a ``_Format``).
Streamed pieces are exactly the pieces the whole reply is joined from, so a stream's
text equals the non-streaming reply. A client that goes away stops its generation:
streams are closed by the ASGI server cancelling them, whole replies by a watcher on
the connection.

One request may ask for several results (``n`` choices of each prompt, several prompts
on the completion routes): each is its own request to the Session, generated at once in
the parallel slots; streams interleave their events, told apart by ``index``.
Token probabilities come with the whole reply; a stream sends them, for all its tokens,
in one event before its last.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from .. import wire
from ..backends.base import GenerationRequest
from ..errors import ContextOverflowError
from ..reply import AsyncReplyStream, Reply
from ..sampling import TokenProb
from ..session import Session
from .chat import parse_messages, parse_tools
from .errors import ApiError, translate
from .parse import (
    Generation,
    Route,
    choice_seed,
    parse_generation,
    parse_json,
    parse_prompts,
)
from .prompts import completion_request
from .state import ServerState

__all__ = ["chat_completions", "completion", "oai_completions"]

Handler = Callable[[Request], Awaitable[Response]]


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.llm
    return state


def cost_of(reply: Reply) -> wire.Cost:
    return wire.Cost(
        reply.finish_reason,
        reply.prompt,
        reply.cached_tokens,
        reply.generated,
        reply.drafted,
        reply.draft_accepted,
    )


def _total(dones: Sequence[_Done]) -> wire.Cost:
    """What all the choices of one request cost together (OpenAI's ``usage``)."""
    costs = [cost_of(d.reply) for d in dones]
    out = costs[0]
    for c in costs[1:]:
        out = wire.Cost(
            out.finish_reason,
            out.prompt + c.prompt,
            out.cached_tokens + c.cached_tokens,
            out.generated + c.generated,
            out.drafted + c.drafted,
            out.draft_accepted + c.draft_accepted,
        )
    return out


@dataclass
class _Choice:
    """One result being generated: a prompt's choice, with the text sent so far."""

    index: int
    req: GenerationRequest
    stream: AsyncReplyStream
    parts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Done:
    """One finished result."""

    index: int
    content: str
    reply: Reply
    stopping_word: str
    """The caller's stop string that ended it, or empty."""
    probs: tuple[TokenProb, ...] | None

    @property
    def cost(self) -> wire.Cost:
        return cost_of(self.reply)


def _shown(probs: tuple[TokenProb, ...], n_chars: int) -> tuple[TokenProb, ...]:
    """The tokens that gave the text shown: a stop string and what came after it are not."""
    out: list[TokenProb] = []
    at = 0
    for t in probs:
        if at >= n_chars:
            break
        out.append(t)
        at += len(t.text)
    return tuple(out)


def _finished(c: _Choice, gen: Generation) -> _Done:
    reply = c.stream.reply
    assert reply is not None
    content = "".join(c.parts)
    marker = c.stream.stopped_by
    word = {s.replace("\u2581", " "): s for s in gen.stops}.get(marker, "") if marker else ""
    probs = reply.logprobs
    if probs is not None and marker:
        probs = _shown(probs, len(content))
    return _Done(c.index, content, reply, word, probs)


class _Format:
    """How one route writes its bodies; the defaults are OpenAI's ``[DONE]`` framing."""

    done_marker = True

    def __init__(self, gen: Generation) -> None:
        self.gen = gen

    def head(self, index: int) -> list[dict[str, Any]]:
        return []

    def piece(self, text: str, n: int, index: int) -> dict[str, Any]:
        raise NotImplementedError

    def tail(self, done: _Done) -> list[dict[str, Any]]:
        """The events that end one result's stream."""
        raise NotImplementedError

    def end(self, dones: Sequence[_Done]) -> list[dict[str, Any]]:
        """Events after every result's tail."""
        return []

    def whole(self, done: _Done) -> dict[str, Any]:
        raise NotImplementedError

    def combine(self, bodies: list[dict[str, Any]], dones: Sequence[_Done]) -> Any:
        """Several results as one body: OpenAI's choices, as llama-server merges them,
        with the usage of them all."""
        if len(bodies) == 1:
            return bodies[0]
        out = bodies[0]
        out["choices"] = [b["choices"][0] for b in bodies]
        out["usage"] = wire.usage(_total(dones))
        return out


class _Native(_Format):
    done_marker = False

    def __init__(
        self,
        state: ServerState,
        session: Session,
        choices: Sequence[_Choice],
        gen: Generation,
    ) -> None:
        super().__init__(gen)
        self.model = state.model_name
        self.n_ctx = session.model_info.n_ctx or 0
        self.prompts = {c.index: session.render(c.req) for c in choices}
        self.settings = {c.index: _settings(c.req, gen) for c in choices}

    def _probs(self, done: _Done) -> list[dict[str, Any]] | None:
        return None if done.probs is None else wire.token_probs(done.probs, self.gen.n_top)

    def piece(self, text: str, n: int, index: int) -> dict[str, Any]:
        return wire.completion_chunk(text, n, 0, index=index)

    def tail(self, done: _Done) -> list[dict[str, Any]]:
        out = []
        probs = self._probs(done)
        if probs is not None:
            n = done.reply.generated.count
            out.append(wire.completion_chunk("", n, 0, index=done.index, probs=probs))
        last = dataclasses.replace(done, content="", probs=None)
        return [*out, self.whole(last)]

    def whole(self, done: _Done) -> dict[str, Any]:
        return wire.completion_response(
            done.content,
            done.cost,
            model=self.model,
            prompt=self.prompts[done.index],
            settings=self.settings[done.index],
            n_ctx=self.n_ctx,
            stopping_word=done.stopping_word,
            probs=self._probs(done),
            index=done.index,
        )

    def combine(self, bodies: list[dict[str, Any]], dones: Sequence[_Done]) -> Any:
        return bodies[0] if len(bodies) == 1 else bodies  # llama-server: an array


class _OaiCompletion(_Format):
    def __init__(self, state: ServerState, gen: Generation) -> None:
        super().__init__(gen)
        self.model, self.response_id, self.created = state.model_name, wire.new_id(), _now()

    def _logprobs(self, done: _Done) -> dict[str, Any] | None:
        return None if done.probs is None else wire.legacy_logprobs(done.probs, self.gen.n_top)

    def _chunk(self, text: str, index: int, **kw: Any) -> dict[str, Any]:
        return wire.oai_completion_chunk(
            text,
            model=self.model,
            response_id=self.response_id,
            created=self.created,
            index=index,
            **kw,
        )

    def piece(self, text: str, n: int, index: int) -> dict[str, Any]:
        return self._chunk(text, index)

    def tail(self, done: _Done) -> list[dict[str, Any]]:
        out = []
        logprobs = self._logprobs(done)
        if logprobs is not None:
            out.append(self._chunk("", done.index, logprobs=logprobs))
        return [*out, self._chunk("", done.index, cost=done.cost)]

    def whole(self, done: _Done) -> dict[str, Any]:
        return wire.oai_completion_response(
            done.content,
            done.cost,
            model=self.model,
            response_id=self.response_id,
            created=self.created,
            logprobs=self._logprobs(done),
            index=done.index,
        )


class _Chat(_Format):
    def __init__(self, state: ServerState, gen: Generation) -> None:
        super().__init__(gen)
        self.model, self.response_id, self.created = state.model_name, wire.new_id(), _now()

    def _chunk(self, **kw: Any) -> dict[str, Any]:
        return wire.chat_chunk(
            model=self.model, response_id=self.response_id, created=self.created, **kw
        )

    def _logprobs(self, done: _Done) -> list[dict[str, Any]] | None:
        return None if done.probs is None else wire.token_probs(done.probs, self.gen.n_top)

    def head(self, index: int) -> list[dict[str, Any]]:
        return [self._chunk(role=True, index=index)]

    def piece(self, text: str, n: int, index: int) -> dict[str, Any]:
        return self._chunk(content=text, index=index)

    def tail(self, done: _Done) -> list[dict[str, Any]]:
        """The calls (once the reply is whole: the model's markup is read at its end), the
        probabilities, then the finish reason."""
        out = [
            self._chunk(tool_call=delta, index=done.index)
            for delta in wire.tool_call_deltas(done.reply.tool_calls)
        ]
        logprobs = self._logprobs(done)
        if logprobs is not None:
            out.append(self._chunk(content="", logprobs=logprobs, index=done.index))
        return [*out, self._chunk(finish_reason=done.cost.finish_reason, index=done.index)]

    def end(self, dones: Sequence[_Done]) -> list[dict[str, Any]]:
        return [self._chunk(cost=_total(dones))] if self.gen.include_usage else []

    def whole(self, done: _Done) -> dict[str, Any]:
        return wire.chat_response(
            done.content,
            done.cost,
            model=self.model,
            response_id=self.response_id,
            created=self.created,
            logprobs=self._logprobs(done),
            index=done.index,
            tool_calls=done.reply.tool_calls,
        )


def _now() -> int:
    return int(time.time())


def _settings(req: GenerationRequest, gen: Generation) -> dict[str, Any]:
    """``generation_settings``: the sampling used, under llama-server's names."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(req.sampling):
        value = getattr(req.sampling, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    out["logit_bias"] = [
        [k, v if math.isfinite(v) else None]  # JSON has no -inf; llama-server writes null
        for k, v in dict(out.get("logit_bias", {})).items()
    ]
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


def _start_all(session: Session, reqs: Sequence[GenerationRequest]) -> list[_Choice]:
    """Submit every result's request at once; when one is refused, stop the others."""
    choices: list[_Choice] = []
    try:
        for i, req in enumerate(reqs):
            choices.append(_Choice(i, req, _start(session, req)))
    except BaseException:
        for c in choices:
            c.stream.cancel()
        raise
    return choices


async def _submit(
    gen: Generation,
    make: Callable[[Any], GenerationRequest],
    prompts: Sequence[Any],
    session: Session,
) -> list[_Choice]:
    """Build and submit the requests in a worker thread: rendering a template, tokenizing a
    long prompt and turning a JSON Schema into a grammar would otherwise stall every other
    stream this event loop serves."""
    return await anyio.to_thread.run_sync(
        lambda: _start_all(session, _requests(gen, make, prompts))
    )


def _requests(
    gen: Generation, make: Callable[[Any], GenerationRequest], prompts: Sequence[Any]
) -> list[GenerationRequest]:
    """One request per prompt and choice; choices of a seeded request get their own seeds."""
    out: list[GenerationRequest] = []
    for prompt in prompts:
        first = make(prompt)
        for i in range(gen.n_choices):
            seed = choice_seed(first.sampling.seed, i)
            sampling = dataclasses.replace(first.sampling, seed=seed)
            out.append(dataclasses.replace(first, sampling=sampling))
    return out


async def _pieces(choices: Sequence[_Choice]) -> AsyncIterator[tuple[_Choice, str | None]]:
    """Every result's pieces as they come, then ``(choice, None)`` as each one ends."""
    if len(choices) == 1:
        only = choices[0]
        async for piece in only.stream:
            yield only, piece
        yield only, None
        return
    queue: asyncio.Queue[tuple[_Choice, str | None] | BaseException] = asyncio.Queue()

    async def pump(c: _Choice) -> None:
        try:
            async for piece in c.stream:
                queue.put_nowait((c, piece))
            queue.put_nowait((c, None))
        except Exception as e:
            queue.put_nowait(e)

    tasks = [asyncio.ensure_future(pump(c)) for c in choices]
    try:
        left = len(choices)
        while left:
            item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            if item[1] is None:
                left -= 1
            yield item
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _events(
    state: ServerState, choices: Sequence[_Choice], fmt: _Format
) -> AsyncIterator[bytes]:
    try:
        for c in choices:
            for event in fmt.head(c.index):
                yield wire.sse_event(event)
        dones: list[_Done] = []
        async for choice, piece in _pieces(choices):
            if piece is None:
                done = _finished(choice, fmt.gen)
                state.record(done.reply)
                dones.append(done)
                for event in fmt.tail(done):
                    yield wire.sse_event(event)
                continue
            choice.parts.append(piece)
            yield wire.sse_event(fmt.piece(piece, len(choice.parts), choice.index))
        for event in fmt.end(sorted(dones, key=lambda d: d.index)):
            yield wire.sse_event(event)
        if fmt.done_marker:
            yield wire.SSE_DONE
    except Exception as e:  # after the 200: the error travels as an event
        yield wire.sse_event(translate(e).body())
    finally:
        for c in choices:
            await c.stream.aclose()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _whole(request: Request, choices: Sequence[_Choice]) -> bool:
    """Generate every result to its end; False when the client left first (all stopped)."""

    async def consume(c: _Choice) -> None:
        async with c.stream:
            async for piece in c.stream:
                c.parts.append(piece)

    tasks = [asyncio.ensure_future(consume(c)) for c in choices]
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        pending = set(tasks)
        while pending:
            done, _ = await asyncio.wait(pending | {watch}, return_when=asyncio.FIRST_COMPLETED)
            if watch in done:
                return False
            pending -= done
            for t in done:
                t.result()  # the first error ends them all
        return True
    finally:
        watch.cancel()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _answer(
    request: Request,
    state: ServerState,
    choices: list[_Choice],
    gen: Generation,
    fmt: _Format,
) -> Response:
    if gen.stream:
        return StreamingResponse(
            _events(state, choices, fmt),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    if not await _whole(request, choices):
        return Response(status_code=499)
    dones = [_finished(c, gen) for c in choices]
    for d in dones:
        state.record(d.reply)
    return JSONResponse(fmt.combine([fmt.whole(d) for d in dones], dones))


async def _completion(request: Request, route: Route) -> Response:
    state = _state(request)
    body = parse_json(await request.body())
    session = state.ready()
    prompts = parse_prompts(body)
    gen = parse_generation(body, state.settings.defaults, route, session.model_info.parallel)

    def make(prompt: Any) -> GenerationRequest:
        return completion_request(session, prompt, gen.sampling, gen.stops)

    choices = await _submit(gen, make, prompts, session)
    fmt: _Format
    if route == "completion":
        fmt = _Native(state, session, choices, gen)
    else:
        fmt = _OaiCompletion(state, gen)
    return await _answer(request, state, choices, gen, fmt)


async def completion(request: Request) -> Response:
    """llama.cpp's ``/completion`` (also ``/completions``)."""
    return await _completion(request, "completion")


async def oai_completions(request: Request) -> Response:
    """OpenAI's ``/v1/completions``."""
    return await _completion(request, "oai_completion")


async def chat_completions(request: Request) -> Response:
    """OpenAI's ``/v1/chat/completions``."""
    state = _state(request)
    body = parse_json(await request.body())
    session = state.ready()
    messages = parse_messages(body)
    tools = parse_tools(body)
    gen = parse_generation(body, state.settings.defaults, "chat", session.model_info.parallel)

    def make(_: Any) -> GenerationRequest:
        template = state.settings.chat_template
        return session.chat_request(messages, gen.sampling, template=template, tools=tools)

    choices = await _submit(gen, make, [None], session)
    return await _answer(request, state, choices, gen, _Chat(state, gen))
