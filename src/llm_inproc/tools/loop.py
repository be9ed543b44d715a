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


def _choice(round_: int, max_rounds: int, first: Any, stuck: bool) -> Any:
    if round_ >= max_rounds or stuck:
        return "none"
    return first if round_ == 0 else "auto"


def _repeats(calls: tuple[ToolCall, ...], seen: set[tuple[str, str]]) -> bool:
    """Whether every call was made before (then their results are already in the history);
    records them."""
    keys = [(c.name, json.dumps(dict(c.arguments), sort_keys=True)) for c in calls]
    old = all(k in seen for k in keys)
    seen.update(keys)
    return old


def _unknown(call: ToolCall, tools: Mapping[str, Tool]) -> str:
    return f"error: there is no tool named {call.name!r}; the tools are: {', '.join(tools)}"


def _record(messages: list[Message], reply: Reply) -> bool:
    """Append the model's turn; whether it called tools."""
    if not reply.tool_calls:
        messages.append(Message(Role.ASSISTANT, reply.text))
        return False
    messages.append(Message(Role.TOOL_CALL, reply.text, tool_calls=reply.tool_calls))
    return True


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
    by_name = _prepare(messages, tools, max_rounds)
    offered = list(by_name.values())
    seen: set[tuple[str, str]] = set()
    stuck = False
    for round_ in range(max_rounds + 1):
        choice = _choice(round_, max_rounds, tool_choice, stuck)
        reply = session.complete(messages, tools=offered, tool_choice=choice, **prompt)
        if not _record(messages, reply):
            return reply
        stuck = _repeats(reply.tool_calls, seen)
        for call in reply.tool_calls:
            tool = by_name.get(call.name)
            result = call_tool(tool, call.arguments) if tool else _unknown(call, by_name)
            messages.append(Message.result(call, result))
    raise AssertionError("unreachable: the last round offers no tools")


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
    by_name = _prepare(messages, tools, max_rounds)
    offered = list(by_name.values())
    seen: set[tuple[str, str]] = set()
    stuck = False
    for round_ in range(max_rounds + 1):
        choice = _choice(round_, max_rounds, tool_choice, stuck)
        reply = await session.acomplete(messages, tools=offered, tool_choice=choice, **prompt)
        if not _record(messages, reply):
            return reply
        stuck = _repeats(reply.tool_calls, seen)
        for call in reply.tool_calls:
            tool = by_name.get(call.name)
            if tool is None:
                result = _unknown(call, by_name)
            elif inspect.iscoroutinefunction(tool.function):
                result = await _acall(tool, call.arguments)
            else:
                result = await asyncio.to_thread(call_tool, tool, call.arguments)
            messages.append(Message.result(call, result))
    raise AssertionError("unreachable: the last round offers no tools")


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
