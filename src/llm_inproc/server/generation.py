"""The generating routes: ``/completion`` (llama.cpp's own), ``/v1/completions`` and
``/v1/chat/completions``, whole or streamed as Server-Sent Events.

Each route only says how its bodies look (a :class:`~.loop.Format`); the loop that
submits, streams and cancels is :mod:`.loop`, shared with the Messages and Responses APIs.
Token probabilities come with the whole reply; a stream sends them, for all its tokens,
in one event before its last.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from .. import wire
from ..backends.base import GenerationRequest
from ..prompting.messages import Role
from ..prompting.reasoning import Thinking, ThinkingSplit
from ..session import Session
from .chat import parse_messages, parse_tools
from .conversation import chat_request, template_kwargs
from .loop import Choice, Done, Format, answer, state_of, submit, total
from .parse import Generation, Route, parse_generation, parse_json, parse_prompts
from .prompts import completion_request
from .state import ServerState
from .thinking import reasoning_style

__all__ = ["chat_completions", "completion", "oai_completions"]


class _Native(Format):
    done_marker = False

    def __init__(
        self,
        state: ServerState,
        session: Session,
        choices: Sequence[Choice],
        gen: Generation,
    ) -> None:
        super().__init__(gen)
        self.model = state.model_name
        self.n_ctx = session.model_info.n_ctx or 0
        self.prompts = {c.index: session.render(c.req) for c in choices}
        self.settings = {c.index: _settings(c.req, gen) for c in choices}

    def _probs(self, done: Done) -> list[dict[str, Any]] | None:
        return None if done.probs is None else wire.token_probs(done.probs, self.gen.n_top)

    def piece(self, text: str, n: int, index: int) -> list[dict[str, Any]]:
        return [wire.completion_chunk(text, n, 0, index=index)]

    def tail(self, done: Done) -> list[dict[str, Any]]:
        out = []
        probs = self._probs(done)
        if probs is not None:
            n = done.reply.generated.count
            out.append(wire.completion_chunk("", n, 0, index=done.index, probs=probs))
        last = dataclasses.replace(done, content="", probs=None)
        return [*out, self.whole(last)]

    def whole(self, done: Done) -> dict[str, Any]:
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

    def combine(self, bodies: list[dict[str, Any]], dones: Sequence[Done]) -> Any:
        return bodies[0] if len(bodies) == 1 else bodies  # llama-server: an array


class _OaiCompletion(Format):
    def __init__(self, state: ServerState, gen: Generation) -> None:
        super().__init__(gen)
        self.model, self.response_id, self.created = state.model_name, wire.new_id(), _now()

    def _logprobs(self, done: Done) -> dict[str, Any] | None:
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

    def piece(self, text: str, n: int, index: int) -> list[dict[str, Any]]:
        return [self._chunk(text, index)]

    def tail(self, done: Done) -> list[dict[str, Any]]:
        out = []
        logprobs = self._logprobs(done)
        if logprobs is not None:
            out.append(self._chunk("", done.index, logprobs=logprobs))
        return [*out, self._chunk("", done.index, cost=done.cost)]

    def whole(self, done: Done) -> dict[str, Any]:
        return wire.oai_completion_response(
            done.content,
            done.cost,
            model=self.model,
            response_id=self.response_id,
            created=self.created,
            logprobs=self._logprobs(done),
            index=done.index,
        )


class _Chat(Format):
    def __init__(
        self,
        state: ServerState,
        gen: Generation,
        prefill: str = "",
        thinking: dict[int, Thinking] | None = None,
    ) -> None:
        super().__init__(gen)
        self.model, self.response_id, self.created = state.model_name, wire.new_id(), _now()
        self.prefill = prefill
        """A continued last assistant message: llama-server's whole reply starts with it
        (its stream sends only what follows)."""
        self.thinking = thinking or {}
        """Per result to split: where its thinking goes."""

    def _chunk(self, **kw: Any) -> dict[str, Any]:
        return wire.chat_chunk(
            model=self.model, response_id=self.response_id, created=self.created, **kw
        )

    def _logprobs(self, done: Done) -> list[dict[str, Any]] | None:
        return None if done.probs is None else wire.token_probs(done.probs, self.gen.n_top)

    def head(self, index: int) -> list[dict[str, Any]]:
        return [self._chunk(role=True, index=index)]

    def piece(self, text: str, n: int, index: int) -> list[dict[str, Any]]:
        thinking = self.thinking.get(index)
        if thinking is None:
            return [self._chunk(content=text, index=index)]
        return self._split(index, *thinking.feed(text))

    def _split(self, index: int, thought: str, text: str) -> list[dict[str, Any]]:
        """A reasoning delta, then a content delta, each where there is one."""
        out = [self._chunk(reasoning=thought, index=index)] if thought else []
        return [*out, self._chunk(content=text, index=index)] if text else out

    def tail(self, done: Done) -> list[dict[str, Any]]:
        """What a reasoning split held back, the calls (once the reply is whole: the
        model's markup is read at its end), the probabilities, then the finish reason, with
        the timings unless a usage chunk comes last (llama-server puts them on the stream's
        last chunk)."""
        thinking = self.thinking.get(done.index)
        out = [] if thinking is None else self._split(done.index, *thinking.flush())
        out += [
            self._chunk(tool_call=delta, index=done.index)
            for delta in wire.tool_call_deltas(done.reply.tool_calls)
        ]
        logprobs = self._logprobs(done)
        if logprobs is not None:
            out.append(self._chunk(content="", logprobs=logprobs, index=done.index))
        last = self._chunk(finish_reason=done.cost.finish_reason, index=done.index)
        if not self.gen.include_usage:
            last["timings"] = wire.timings(done.cost)
        return [*out, last]

    def end(self, dones: Sequence[Done]) -> list[dict[str, Any]]:
        return [self._chunk(cost=total(dones))] if self.gen.include_usage else []

    def whole(self, done: Done) -> dict[str, Any]:
        content, reasoning = self.prefill + done.content, None
        thinking = self.thinking.get(done.index)
        if thinking is not None:
            reasoning, content = thinking.whole(content)
        return wire.chat_response(
            content,
            done.cost,
            model=self.model,
            response_id=self.response_id,
            created=self.created,
            logprobs=self._logprobs(done),
            index=done.index,
            tool_calls=done.reply.tool_calls,
            reasoning=reasoning,
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


async def _completion(request: Request, route: Route) -> Response:
    state = state_of(request)
    body = parse_json(await request.body())
    session = state.ready()
    prompts = parse_prompts(body)
    gen = parse_generation(body, state.settings.defaults, route, session.model_info.parallel)

    def make(prompt: Any) -> GenerationRequest:
        return completion_request(session, prompt, gen.sampling, gen.stops)

    choices = await submit(gen, make, prompts, session)
    fmt: Format
    if route == "completion":
        fmt = _Native(state, session, choices, gen)
    else:
        fmt = _OaiCompletion(state, gen)
    return await answer(request, state, choices, gen, fmt)


async def completion(request: Request) -> Response:
    """llama.cpp's ``/completion`` (also ``/completions``)."""
    return await _completion(request, "completion")


async def oai_completions(request: Request) -> Response:
    """OpenAI's ``/v1/completions``."""
    return await _completion(request, "oai_completion")


async def chat_completions(request: Request) -> Response:
    """OpenAI's ``/v1/chat/completions``."""
    state = state_of(request)
    body = parse_json(await request.body())
    session = state.ready()
    messages = parse_messages(body)
    tools = parse_tools(body)
    kwargs = template_kwargs(body)
    style = reasoning_style(body.get("reasoning_format", state.settings.reasoning_format))
    gen = parse_generation(body, state.settings.defaults, "chat", session.model_info.parallel)

    def make(_: Any) -> GenerationRequest:
        return chat_request(state, session, messages, gen.sampling, tools, kwargs)

    choices = await submit(gen, make, [None], session)
    last = messages[-1]
    prefill = last.content if last.role is Role.ASSISTANT else ""
    thinking: dict[int, Thinking] = {}
    markers = None if prefill else session.thinking_markers(state.settings.chat_template)
    if markers is not None:
        # Replies whose tool format reads the calls already leave the thinking out.
        plain = [c for c in choices if c.req.tool_format is None]
        prompts = await anyio.to_thread.run_sync(lambda: [session.render(c.req) for c in plain])
        for c, prompt in zip(plain, prompts, strict=True):
            thinking[c.index] = ThinkingSplit.of(markers, prompt, style).start()
    return await answer(request, state, choices, gen, _Chat(state, gen, prefill, thinking))
