"""An agent: the model calls Python functions to answer.

    pip install 'llm-inproc[demo]'     # the default model, SmolLM2-135M-Instruct
    python examples/agent.py ["What is 37 times 91?"]

Plain functions are the tools: their type hints become the JSON Schema the model's calls
must follow, their docstrings tell the model what they do. ``Session.run_tools`` asks the
model, runs the calls it makes, hands the results back and asks again until it answers
in text, appending every turn to the conversation (so a bot can keep it in ``Memory``).

A 135M model is a weak agent; ``tool_choice="required"`` makes its first turn a call.
Point ``Options(model=...)`` at a bigger instruct model (Qwen 2.5, Llama 3.x, Mistral,
Hermes) and it will choose its tools itself: each is called in its own template's format.
"""

from __future__ import annotations

import ast
import datetime as dt
import operator
import sys
from typing import Any

from llm_inproc import Message, Options, Role, Session

_OPERATORS: dict[type, Any] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
}


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.operand))
    raise ValueError("only numbers and + - * / ** are allowed")


def calculator(expression: str) -> float:
    """Evaluate an arithmetic expression.

    Args:
        expression: The expression, with numbers and + - * / **, e.g. "37 * 91".
    """
    return _evaluate(ast.parse(expression.replace("x", "*"), mode="eval").body)


def clock(timezone_offset_hours: int = 0) -> str:
    """The current date and time.

    Args:
        timezone_offset_hours: Hours east of UTC (0 for UTC).
    """
    zone = dt.timezone(dt.timedelta(hours=timezone_offset_hours))
    return dt.datetime.now(zone).strftime("%A %Y-%m-%d %H:%M")


def main() -> None:
    question = sys.argv[1] if len(sys.argv) > 1 else "What is 37 times 91?"
    messages = [
        Message(Role.SYSTEM, "You are a helpful assistant. Use the tools to answer exactly."),
        Message(Role.USER, question),
    ]
    with Session(Options(context_length=4096)) as session:
        reply = session.run_tools(
            messages,
            [calculator, clock],
            tool_choice="required",
            max_rounds=3,
            temperature=0,
            max_tokens=96,
        )
    for message in messages[2:]:
        for call in message.tool_calls:
            print(f"call    {call.name}({call.raw})")
        if message.role is Role.TOOL_CALL_RESULT:
            print(f"result  {message.content}")
    print(f"answer  {reply.text}")


if __name__ == "__main__":
    main()
