"""Answering a conversation that came in another API's shape (Anthropic's Messages,
OpenAI's Responses): once its request is read into our :class:`Message` list, tools and
:class:`Generation`, it runs through the chat machinery and the one loop, as llama-server
converts both into a chat completion. Also counts a conversation's prompt tokens, which
both APIs report (a stream's first event, their ``count_tokens``/``input_tokens`` routes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from ..backends.base import GenerationRequest
from ..prompting.messages import Message
from ..prompting.reasoning import Thinking, ThinkingSplit
from ..sampling import Sampling
from ..session import Session
from ..tools.types import ToolRequest
from .errors import invalid
from .loop import Format, answer, submit
from .parse import Generation
from .state import ServerState

__all__ = ["answer_conversation", "chat_request", "count_conversation", "template_kwargs"]


def chat_request(
    state: ServerState,
    session: Session,
    messages: Sequence[Message],
    sampling: Sampling,
    tools: ToolRequest | None,
    template_kwargs: Mapping[str, Any] | None = None,
) -> GenerationRequest:
    """The request for a conversation through the served chat template (``--chat-template``
    or the model's), with the request's own ``template_kwargs`` over the session's
    (``--chat-template-kwargs``): every chat-shaped route builds it here."""
    template = state.settings.chat_template
    req = session.chat_request(
        messages, sampling, template=template, tools=tools, template_kwargs=template_kwargs
    )
    # The routes split the thinking themselves (reasoning_format), from the text as written.
    return req if req.thinking is None else dataclasses.replace(req, thinking=None)


def template_kwargs(body: Mapping[str, Any]) -> dict[str, Any]:
    """A chat body's ``chat_template_kwargs`` (an object), checked."""
    kwargs = body.get("chat_template_kwargs")
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict):
        raise invalid(
            "Field 'chat_template_kwargs': must be an object, such as {\"enable_thinking\": false}"
        )
    return kwargs


def _prompt_tokens(session: Session, req: GenerationRequest) -> int:
    """Tokens of the prompt as the model reads it (BOS and control tokens included, as
    llama-server counts them)."""
    return len(session.tokenize(session.render(req)))


async def answer_conversation(
    request: Request,
    state: ServerState,
    session: Session,
    messages: Sequence[Message],
    tools: ToolRequest | None,
    gen: Generation,
    make_format: Callable[[int, Thinking | None], Format],
) -> Response:
    """Generate the reply; ``make_format`` gets the prompt's token count (counted only for
    a stream, whose first event reports it before generation ends; 0 otherwise) and where
    the reply's thinking goes (``--reasoning-format``; None: the template does not think,
    or a tool format reads the reply)."""

    def build() -> tuple[GenerationRequest, int, Thinking | None]:
        # In a worker thread: rendering, tokenizing and a tools grammar take a while.
        req = chat_request(state, session, messages, gen.sampling, tools)
        markers = None
        if req.tool_format is None:  # (a tool format reads the reply and drops the thinking)
            markers = session.thinking_markers(state.settings.chat_template)
        prompt = session.render(req) if gen.stream or markers is not None else ""
        n_prompt = len(session.tokenize(prompt)) if gen.stream else 0
        if markers is None:
            return req, n_prompt, None
        split = ThinkingSplit.of(markers, prompt, state.settings.reasoning_format)
        return req, n_prompt, split.start()

    req, n_prompt, thinking = await anyio.to_thread.run_sync(build)

    def make(_: Any) -> GenerationRequest:
        return req

    choices = await submit(gen, make, [None], session)
    return await answer(request, state, choices, gen, make_format(n_prompt, thinking))


async def count_conversation(
    state: ServerState,
    session: Session,
    messages: Sequence[Message],
    tools: ToolRequest | None,
) -> int:
    """The prompt tokens the conversation would take, generating nothing."""

    def count() -> int:
        return _prompt_tokens(session, chat_request(state, session, messages, Sampling(), tools))

    return await anyio.to_thread.run_sync(count)
