"""The one loop that serves every generating route: submit a request's results to the
Session, then answer whole or as Server-Sent Events. Each route says only how its bodies
and events look (a :class:`Format`): llama.cpp's ``/completion``, OpenAI's completions,
chat and Responses APIs, and Anthropic's Messages API all run through here, so they
cancel, record metrics and report errors alike.

Streamed pieces are exactly the pieces the whole reply is joined from, so a stream's
text equals the non-streaming reply. A client that goes away stops its generation:
streams are closed by the ASGI server cancelling them, whole replies by a watcher on
the connection.

One request may ask for several results (``n`` choices of each prompt, several prompts
on the completion routes): each is its own request to the Session, generated at once in
the parallel slots; streams interleave their events, told apart by ``index``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
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
from .errors import ApiError, translate
from .parse import Generation, choice_seed
from .state import ServerState, state_of

__all__ = [
    "Choice",
    "Done",
    "Format",
    "NamedEvents",
    "answer",
    "cost_of",
    "finished",
    "state_of",
    "submit",
    "total",
]


def cost_of(reply: Reply) -> wire.Cost:
    return wire.Cost(
        reply.finish_reason,
        reply.prompt,
        reply.cached_tokens,
        reply.generated,
        reply.drafted,
        reply.draft_accepted,
    )


def total(dones: Sequence[Done]) -> wire.Cost:
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
class Choice:
    """One result being generated: a prompt's choice, with the text sent so far."""

    index: int
    req: GenerationRequest
    stream: AsyncReplyStream
    parts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Done:
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


def finished(c: Choice, gen: Generation) -> Done:
    reply = c.stream.reply
    assert reply is not None
    content = "".join(c.parts)
    marker = c.stream.stopped_by
    word = {s.replace("\u2581", " "): s for s in gen.stops}.get(marker, "") if marker else ""
    probs = reply.logprobs
    if probs is not None and marker:
        probs = _shown(probs, len(content))
    return Done(c.index, content, reply, word, probs)


class Format:
    """How one route writes its bodies; the defaults are OpenAI's ``[DONE]`` framing."""

    done_marker = True

    def __init__(self, gen: Generation) -> None:
        self.gen = gen

    def head(self, index: int) -> list[dict[str, Any]]:
        return []

    def piece(self, text: str, n: int, index: int) -> list[dict[str, Any]]:
        """The events that send one piece of text (the ``n``-th) of result ``index``."""
        raise NotImplementedError

    def tail(self, done: Done) -> list[dict[str, Any]]:
        """The events that end one result's stream."""
        raise NotImplementedError

    def end(self, dones: Sequence[Done]) -> list[dict[str, Any]]:
        """Events after every result's tail."""
        return []

    def whole(self, done: Done) -> dict[str, Any]:
        raise NotImplementedError

    def combine(self, bodies: list[dict[str, Any]], dones: Sequence[Done]) -> Any:
        """Several results as one body: OpenAI's choices, as llama-server merges them,
        with the usage of them all."""
        if len(bodies) == 1:
            return bodies[0]
        out = bodies[0]
        out["choices"] = [b["choices"][0] for b in bodies]
        out["usage"] = wire.usage(total(dones))
        return out

    def frame(self, event: dict[str, Any]) -> bytes:
        """One event on the wire: a ``data:`` line."""
        return wire.sse_event(event)

    def error(self, exc: BaseException) -> bytes:
        """An error after the 200: the error body as one more event."""
        return wire.sse_event(translate(exc).body())


class NamedEvents(Format):
    """Streams of typed events (Anthropic's, OpenAI's Responses): each event is framed
    ``event: TYPE`` before its data, and the stream ends without ``[DONE]``, as
    llama-server sends them."""

    done_marker = False

    def frame(self, event: dict[str, Any]) -> bytes:
        return wire.sse_named_event(event["type"], event)


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


def _start_all(session: Session, reqs: Sequence[GenerationRequest]) -> list[Choice]:
    """Submit every result's request at once; when one is refused, stop the others."""
    choices: list[Choice] = []
    try:
        for i, req in enumerate(reqs):
            choices.append(Choice(i, req, _start(session, req)))
    except BaseException:
        for c in choices:
            c.stream.cancel()
        raise
    return choices


async def submit(
    gen: Generation,
    make: Callable[[Any], GenerationRequest],
    prompts: Sequence[Any],
    session: Session,
) -> list[Choice]:
    """Build and submit the requests in a worker thread: rendering a template, tokenizing a
    long prompt and turning a JSON Schema into a grammar would otherwise stall every other
    stream this event loop serves."""
    return await anyio.to_thread.run_sync(
        lambda: _start_all(session, _requests(gen, make, prompts))
    )


def _requests(
    gen: Generation, make: Callable[[Any], GenerationRequest], prompts: Sequence[Any]
) -> list[GenerationRequest]:
    """One request per prompt and choice; choices of a seeded request get their own seeds;
    ``cache_prompt: false`` asks each to evaluate its whole prompt."""
    out: list[GenerationRequest] = []
    for prompt in prompts:
        first = make(prompt)
        for i in range(gen.n_choices):
            seed = choice_seed(first.sampling.seed, i)
            sampling = dataclasses.replace(first.sampling, seed=seed)
            out.append(dataclasses.replace(first, sampling=sampling, cache_prompt=gen.cache_prompt))
    return out


async def _pieces(choices: Sequence[Choice]) -> AsyncIterator[tuple[Choice, str | None]]:
    """Every result's pieces as they come, then ``(choice, None)`` as each one ends."""
    if len(choices) == 1:
        only = choices[0]
        async for piece in only.stream:
            yield only, piece
        yield only, None
        return
    queue: asyncio.Queue[tuple[Choice, str | None] | BaseException] = asyncio.Queue()

    async def pump(c: Choice) -> None:
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
    state: ServerState, choices: Sequence[Choice], fmt: Format
) -> AsyncIterator[bytes]:
    try:
        for c in choices:
            for event in fmt.head(c.index):
                yield fmt.frame(event)
        dones: list[Done] = []
        async for choice, piece in _pieces(choices):
            if piece is None:
                done = finished(choice, fmt.gen)
                state.record(done.reply)
                dones.append(done)
                for event in fmt.tail(done):
                    yield fmt.frame(event)
                continue
            choice.parts.append(piece)
            for event in fmt.piece(piece, len(choice.parts), choice.index):
                yield fmt.frame(event)
        for event in fmt.end(sorted(dones, key=lambda d: d.index)):
            yield fmt.frame(event)
        if fmt.done_marker:
            yield wire.SSE_DONE
    except Exception as e:  # after the 200: the error travels as an event
        yield fmt.error(e)
    finally:
        for c in choices:
            await c.stream.aclose()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _whole(request: Request, choices: Sequence[Choice]) -> bool:
    """Generate every result to its end; False when the client left first (all stopped)."""

    async def consume(c: Choice) -> None:
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


async def answer(
    request: Request,
    state: ServerState,
    choices: list[Choice],
    gen: Generation,
    fmt: Format,
) -> Response:
    if gen.stream:
        return StreamingResponse(
            _events(state, choices, fmt),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    if not await _whole(request, choices):
        return Response(status_code=499)
    dones = [finished(c, gen) for c in choices]
    for d in dones:
        state.record(d.reply)
    return JSONResponse(fmt.combine([fmt.whole(d) for d in dones], dones))
