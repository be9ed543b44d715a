"""A finished reply and what it cost, and the streams that deliver it.

One pure core (:class:`_Assembly`) cleans pieces and builds the :class:`Reply`;
:class:`ReplyStream` (threads) and :class:`AsyncReplyStream` (asyncio) only wait
for the next raw item, so both paths give the same text and the same numbers.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from types import TracebackType
from typing import Any

from .backends.base import FinishReason, GenerationRequest, Outcome, RawItem
from .backends.stream import RawStream
from .errors import RequestTimeoutError
from .metrics import TokenPerformance
from .prompting.encoding import ReplyCleaner
from .sampling import TokenProb
from .tools.types import ToolCall

__all__ = ["AsyncReplyStream", "Reply", "ReplyStream"]


@dataclass(frozen=True)
class Reply:
    """The model's reply to one prompt, with what it cost."""

    text: str
    """The reply, cleaned of end-of-turn markers and stripped of surrounding whitespace."""
    finish_reason: FinishReason
    """``"stop"``: the model ended its turn (or a stop marker); ``"length"``: the
    ``max_tokens`` budget or the context ran out; ``"cancelled"``: the caller stopped it;
    ``"tool_calls"``: the model called tools (:attr:`tool_calls`)."""
    prompt: TokenPerformance = field(default_factory=TokenPerformance)
    """Prompt tokens evaluated for this request and the time they took."""
    cached_tokens: int = 0
    """Prompt tokens reused from the KV cache (not evaluated again)."""
    generated: TokenPerformance = field(default_factory=TokenPerformance)
    """Tokens generated and the time from the first to the last."""
    time_to_first_token: timedelta = field(default_factory=timedelta)
    """From the call to the first generated token, queueing included."""
    logprobs: tuple[TokenProb, ...] | None = None
    """Per generated token: its probability and the ``Sampling.n_probs`` most likely
    alternatives, when ``n_probs`` > 0; otherwise None."""
    drafted: int = 0
    """Tokens drafted by speculative decoding (``Options.speculative``); 0 without it."""
    draft_accepted: int = 0
    """Of those, the ones the model agreed with: each saved a step."""
    tool_calls: tuple[ToolCall, ...] = ()
    """The tools the model called, when the request offered ``tools=``; :attr:`text` is
    then only what it wrote for the user beside them (often empty)."""
    reasoning: str | None = None
    """The model's thinking, split from :attr:`text` with ``Options.reasoning_format=
    "deepseek"`` where the chat template thinks; None otherwise (or when it thought
    nothing)."""


class _Assembly:
    """Cleans raw pieces as they come and builds the Reply from the final Outcome; with a
    tool format, keeps call markup out of the text and reads the calls at the end."""

    __slots__ = ("_cancel", "_cleaner", "_parts", "_thinking", "_thoughts", "_tools", "reply")

    def __init__(self, request: GenerationRequest, cancel: Any) -> None:
        self._cleaner = ReplyCleaner(request.stops)
        self._cancel = cancel
        self._parts: list[str] = []
        fmt, tools = request.tool_format, request.tools
        self._tools = fmt.stream(tools) if fmt is not None and tools is not None else None
        split = request.thinking
        self._thinking = split.start() if split is not None and self._tools is None else None
        self._thoughts: list[str] = []
        self.reply: Reply | None = None

    @property
    def stopped_by(self) -> str:
        return self._cleaner.matched

    def feed(self, item: RawItem) -> str:
        """Text to show for ``item`` (maybe empty); sets :attr:`reply` on the outcome."""
        cleaner = self._cleaner
        if isinstance(item, str):
            was_stopped = cleaner.stopped
            text = "" if was_stopped else cleaner.feed(item)
            if cleaner.stopped and not was_stopped:
                self._cancel()  # a stop marker in the text: no need to generate more
            text = self._shown(text)
        else:
            text = self._shown(cleaner.finish())
            reason: FinishReason = "stop" if cleaner.stopped else item.finish_reason
            calls = item.tool_calls
            if self._tools is not None:
                content, calls = self._tools.finish()
                self.reply = _reply(content, reason, item, calls)
            else:
                if self._thinking is not None:
                    text += self._answer(*self._thinking.flush())
                thought = "".join(self._thoughts).strip() or None
                whole = "".join(self._parts) + text
                self.reply = _reply(whole, reason, item, calls, thought)
        if text:
            self._parts.append(text)
        return text

    def _shown(self, text: str) -> str:
        """The part of cleaned ``text`` the caller sees: without call markup (tools), or
        without the thinking (kept aside for :attr:`Reply.reasoning`)."""
        if not text:
            return text
        if self._tools is not None:
            return self._tools.feed(text)
        if self._thinking is not None:
            return self._answer(*self._thinking.feed(text))
        return text

    def _answer(self, thought: str, answer: str) -> str:
        if thought:
            self._thoughts.append(thought)
        return answer


def _reply(
    text: str,
    reason: FinishReason,
    outcome: Outcome,
    calls: tuple[ToolCall, ...],
    reasoning: str | None = None,
) -> Reply:
    if calls and reason == "stop":
        reason = "tool_calls"
    return Reply(
        text=text.strip(),
        reasoning=reasoning,
        tool_calls=calls,
        finish_reason=reason,
        prompt=outcome.prompt,
        cached_tokens=outcome.cached_tokens,
        generated=outcome.generated,
        time_to_first_token=outcome.time_to_first_token,
        logprobs=outcome.logprobs,
        drafted=outcome.drafted,
        draft_accepted=outcome.draft_accepted,
    )


class _Deadline:
    __slots__ = ("_at", "timeout")

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self._at = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        return None if self._at is None else max(0.0, self._at - time.monotonic())

    def error(self) -> RequestTimeoutError:
        return RequestTimeoutError(
            f"the request ran past its timeout of {self.timeout:g} s and was stopped; "
            "raise timeout= or ask for fewer tokens (max_tokens)"
        )


class ReplyStream(Iterator[str]):
    """Text pieces of a reply as they are generated; :attr:`reply` once exhausted.

    Closing it (or leaving a ``with`` block, or breaking out and calling ``close``)
    stops generation at the next step.
    """

    def __init__(self, raw: RawStream, request: GenerationRequest, timeout: float | None) -> None:
        self._raw = raw
        self._asm = _Assembly(request, raw.cancel)
        self._deadline = _Deadline(timeout)
        self._done = False
        # A stream dropped without close() must not keep the model generating for nobody.
        weakref.finalize(self, raw.cancel)

    @property
    def reply(self) -> Reply | None:
        """The whole reply and its cost, once the stream is exhausted."""
        return self._asm.reply

    @property
    def stopped_by(self) -> str:
        """The stop string or end-of-turn marker that ended the reply, as it appeared in the
        text; empty when none did (the model's end token, the budget, or cancelling)."""
        return self._asm.stopped_by

    def __iter__(self) -> ReplyStream:
        return self

    def __next__(self) -> str:
        while not self._done:
            try:
                item = self._raw.next_item(self._deadline.remaining())
            except TimeoutError:
                self.close()
                raise self._deadline.error() from None
            except BaseException:
                self._done = True
                raise
            text = self._asm.feed(item)
            if self._asm.reply is not None:
                self._done = True
            if text:
                return text
        raise StopIteration

    def close(self) -> None:
        """Stop generating; the text so far stays with the caller."""
        if not self._done:
            self._done = True
            self._raw.cancel()

    def __enter__(self) -> ReplyStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncReplyStream(AsyncIterator[str]):
    """:class:`ReplyStream` for asyncio: cancelling the consuming task stops generation."""

    def __init__(self, raw: RawStream, request: GenerationRequest, timeout: float | None) -> None:
        self._raw = raw
        self._asm = _Assembly(request, raw.cancel)
        self._deadline = _Deadline(timeout)
        self._done = False
        weakref.finalize(self, raw.cancel)

    @property
    def reply(self) -> Reply | None:
        """The whole reply and its cost, once the stream is exhausted."""
        return self._asm.reply

    @property
    def stopped_by(self) -> str:
        """The stop string or end-of-turn marker that ended the reply, as it appeared in the
        text; empty when none did (the model's end token, the budget, or cancelling)."""
        return self._asm.stopped_by

    def __aiter__(self) -> AsyncReplyStream:
        return self

    async def __anext__(self) -> str:
        while not self._done:
            try:
                item = await self._raw.anext_item(self._deadline.remaining())
            except TimeoutError:
                await self.aclose()
                raise self._deadline.error() from None
            except BaseException:  # CancelledError included: stop the request
                self._raw.cancel()
                self._done = True
                raise
            text = self._asm.feed(item)
            if self._asm.reply is not None:
                self._done = True
            if text:
                return text
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Stop generating."""
        self.cancel()

    def cancel(self) -> None:
        """Stop generating, from any thread (what :meth:`aclose` does)."""
        if not self._done:
            self._done = True
            self._raw.cancel()

    async def __aenter__(self) -> AsyncReplyStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
