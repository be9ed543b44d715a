"""The agent loop: ask, run the Python functions the model calls, hand their results
back, and ask again until the model answers in text.

Each round appends to the caller's list of messages, so a bot keeps the whole exchange
(calls and results included) in its :class:`~llm_inproc.Memory`. The first round uses the
caller's ``tool_choice``; later rounds let the model decide (``"auto"``: a ``"required"``
that held on every round would never end). A model that only repeats calls it already has
the results of, and the round after ``max_rounds`` rounds of calls, are asked with
``"none"``, so the loop always ends in a text reply.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError
from ..prompting.messages import Message, Role
from .functions import call_tool
from .types import Tool, ToolCall, as_tools

if TYPE_CHECKING:
    from ..reply import Reply
    from ..session import Session

__all__ = ["arun_tools", "run_tools"]


def _prepare(messages: Any, tools: Iterable[Any] | None, max_rounds: int) -> dict[str, Tool]:
    if not isinstance(messages, list):
        raise InvalidInputError(
            "run_tools appends the calls, their results and the answer to the conversation: "
            "pass messages as a list"
        )
    found = as_tools(tools)
    if not found:
        raise InvalidInputError(
            "run_tools needs tools: pass Python functions (or Tools made from them)"
        )
    bare = [t.name for t in found if t.function is None]
    if bare:
        raise InvalidInputError(
            f"tool {bare[0]!r} has no Python function to run; give the function itself "
            "(or Tool.from_function(fn)), or call complete(..., tools=...) and run the calls"
        )
    if not isinstance(max_rounds, int) or isinstance(max_rounds, bool) or max_rounds < 1:
        raise InvalidInputError(f"max_rounds must be a positive integer, not {max_rounds!r}")
    return {t.name: t for t in found}


class _Rounds:
    """What both loops share: the tools by name, which ``tool_choice`` each round asks
    with, and the conversation the rounds append to."""

    def __init__(
        self, messages: Any, tools: Iterable[Any] | None, max_rounds: int, first: Any
    ) -> None:
        self.by_name = _prepare(messages, tools, max_rounds)
        self.messages: list[Message] = messages
        self._offered = list(self.by_name.values())
        self._max, self._first = max_rounds, first
        self._round = 0
        self._seen: set[tuple[str, str]] = set()
        self._stuck = False

    def ask(self) -> dict[str, Any]:
        """The tools arguments of the next request."""
        last = self._round >= self._max or self._stuck
        choice = "none" if last else self._first if self._round == 0 else "auto"
        return {"tools": self._offered, "tool_choice": choice}

    def calls(self, reply: Reply) -> tuple[ToolCall, ...]:
        """Append the model's turn; the calls to run (none: ``reply`` is the answer)."""
        if not reply.tool_calls:
            self.messages.append(Message(Role.ASSISTANT, reply.text))
            return ()
        if self._round >= self._max:
            raise AssertionError("unreachable: the last round offers no tools")
        self.messages.append(Message(Role.TOOL_CALL, reply.text, tool_calls=reply.tool_calls))
        # Every call made before: their results are in the history already.
        keys = [(c.name, json.dumps(dict(c.arguments), sort_keys=True)) for c in reply.tool_calls]
        self._stuck = all(k in self._seen for k in keys)
        self._seen.update(keys)
        self._round += 1
        return reply.tool_calls

    def answer(self, call: ToolCall, result: str) -> None:
        self.messages.append(Message.result(call, result))

    def unknown(self, call: ToolCall) -> str:
        names = ", ".join(self.by_name)
        return f"error: there is no tool named {call.name!r}; the tools are: {names}"


def run_tools(
    session: Session,
    messages: list[Message],
    tools: Iterable[Any] | None,
    *,
    max_rounds: int = 8,
    tool_choice: Any = None,
    **prompt: Any,
) -> Reply:
    """:meth:`Session.run_tools`."""
    rounds = _Rounds(messages, tools, max_rounds, tool_choice)
    while True:
        reply = session.complete(messages, **rounds.ask(), **prompt)
        calls = rounds.calls(reply)
        if not calls:
            return reply
        for call in calls:
            tool = rounds.by_name.get(call.name)
            rounds.answer(call, call_tool(tool, call.arguments) if tool else rounds.unknown(call))


async def arun_tools(
    session: Session,
    messages: list[Message],
    tools: Iterable[Any] | None,
    *,
    max_rounds: int = 8,
    tool_choice: Any = None,
    **prompt: Any,
) -> Reply:
    """:meth:`Session.arun_tools`: plain functions run in a worker thread, coroutine
    functions are awaited."""
    rounds = _Rounds(messages, tools, max_rounds, tool_choice)
    while True:
        reply = await session.acomplete(messages, **rounds.ask(), **prompt)
        calls = rounds.calls(reply)
        if not calls:
            return reply
        for call in calls:
            tool = rounds.by_name.get(call.name)
            if tool is None:
                result = rounds.unknown(call)
            elif inspect.iscoroutinefunction(tool.function):
                result = await _acall(tool, call.arguments)
            else:
                result = await asyncio.to_thread(call_tool, tool, call.arguments)
            rounds.answer(call, result)


async def _acall(tool: Tool, arguments: Mapping[str, Any]) -> str:
    """An async tool, awaited; what it raises becomes the result's text, as for plain
    functions (see :func:`~.functions.call_tool`)."""
    assert tool.function is not None
    try:
        result = await tool.function(**dict(arguments))
    except Exception as e:  # the model's mistake or the tool's: it reads what failed
        return f"error: {type(e).__name__}: {e}"
    return (
        result if isinstance(result, str) else json.dumps(result, ensure_ascii=False, default=str)
    )
