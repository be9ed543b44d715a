"""``llm-inproc prompt``: one prompt, the reply streamed to stdout; with ``--tool``, the
calls the model makes printed as JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import add_common_model_flags
from ._common import (
    add_sampling_flags,
    metrics_dict,
    sampling_kwargs,
    session_options,
    stream_to_stdout,
)

if TYPE_CHECKING:
    from ..reply import ReplyStream
    from ..tools.types import Tool, ToolCall, ToolRequest

__all__ = ["add_parser"]


def _tool_file(path: str) -> tuple[Tool, ...]:
    """``--tool FILE``: an OpenAI tool object (or its bare ``function``), or a list of
    them; checked while the command line is parsed, so a bad file is a usage error."""
    from ..errors import InvalidInputError
    from ..tools.types import as_tools

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise argparse.ArgumentTypeError(f"{path}: no such file; check the path") from None
    except OSError as e:
        raise argparse.ArgumentTypeError(f"{path}: cannot read it ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise argparse.ArgumentTypeError(f"{path}: not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(
            f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"
        ) from None
    items = data if isinstance(data, list) else [data]
    if not items:
        raise argparse.ArgumentTypeError(f"{path}: the list holds no tool")
    try:
        return as_tools(items)
    except InvalidInputError as e:
        raise argparse.ArgumentTypeError(
            f'{path}: {e} (a tool is {{"type": "function", "function": {{"name", '
            '"description", "parameters"}}}, or a list of them)'
        ) from None


_tool_file.__name__ = "tool file"  # argparse's "invalid tool file value"


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "prompt",
        help="send one prompt and print the reply",
        description="Send one prompt to the model and stream the reply to stdout. With "
        "--tool, the model may call the tools instead: its calls are printed as one JSON "
        'array of {"id", "name", "arguments"} (after any text it wrote).',
    )
    p.add_argument(
        "text", nargs="*", help="the prompt (default: read from stdin when absent or '-')"
    )
    p.add_argument(
        "--system", default=None, help="system prompt; {{.Now}}, {{.Model}} expand (default: none)"
    )
    add_sampling_flags(p)
    t = p.add_argument_group("tools")
    t.add_argument(
        "--tool",
        action="append",
        type=_tool_file,
        metavar="FILE",
        help="a JSON file with an OpenAI tool object or a list of them; repeat for several "
        "files (default: none)",
    )
    t.add_argument(
        "--tool-choice",
        default=None,
        metavar="CHOICE",
        help="auto (the model decides), none, required (at least one call), or a tool's name "
        "(that tool must be called) (default: auto)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the reply, its tool calls, why it ended and the metrics as JSON",
    )
    add_common_model_flags(p)
    p.set_defaults(func=run, usage_error=p.error)


def _tools(args: argparse.Namespace) -> ToolRequest | None:
    """The tools of all ``--tool`` files with ``--tool-choice``; a duplicate name or a
    choice that names no tool is a usage error (exit status 2)."""
    from ..errors import InvalidInputError
    from ..tools.types import tool_request

    tools = [t for group in args.tool or () for t in group]
    try:
        return tool_request(tools, args.tool_choice)
    except InvalidInputError as e:
        flag = "--tool" if "two tools" in str(e) else "--tool-choice"
        args.usage_error(f"argument {flag}: {e}")
        raise  # usage_error exits; this is never reached


def _call_json(calls: tuple[ToolCall, ...]) -> list[dict[str, Any]]:
    return [{"id": c.id, "name": c.name, "arguments": dict(c.arguments)} for c in calls]


def _stream_with_tools(stream: ReplyStream) -> None:
    """The text meant for the user as it comes, then the calls as one JSON array (alone
    on stdout when the model wrote no text)."""
    wrote = False
    with stream:
        for piece in stream:
            if not wrote:
                piece = piece.lstrip()
                if not piece:
                    continue
            wrote = True
            sys.stdout.write(piece)
            sys.stdout.flush()
    calls = stream.reply.tool_calls if stream.reply is not None else ()
    if wrote:
        sys.stdout.write("\n")
    if calls:
        sys.stdout.write(json.dumps(_call_json(calls), ensure_ascii=False) + "\n")
    sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    from ..errors import InvalidInputError
    from ..prompting.messages import Message, Role
    from ..session import Session

    # Bad flags, files and config are reported before stdin is read or the model loads.
    kw = sampling_kwargs(args)
    tools = _tools(args)
    if tools is not None:
        kw.update(
            tools=list(tools.tools),
            tool_choice=tools.name or tools.choice,
            parallel_tool_calls=tools.parallel,
        )
    opts, known_llms = session_options(args)
    text = " ".join(args.text)
    if not args.text or text == "-":
        if sys.stdin.isatty():
            end = "Ctrl-Z then Enter" if os.name == "nt" else "Ctrl-D"
            note = f"llm-inproc: reading the prompt from stdin; end it with {end}"
            print(note, file=sys.stderr)  # noqa: T201
        text = sys.stdin.read()
    if not text.strip():
        raise InvalidInputError("empty prompt; pass the text as an argument or on stdin")
    messages = [Message(Role.USER, text)]
    if args.system:
        messages.insert(0, Message(Role.SYSTEM, args.system))
    with Session(opts, cache_dir=args.cache_dir, known_llms=known_llms) as session:
        if args.json:
            reply = session.complete(messages, **kw)
            out = {
                "model": str(session.model),
                "reply": reply.text,
                "tool_calls": _call_json(reply.tool_calls),
                "finish_reason": reply.finish_reason,
                "metrics": metrics_dict(session.get_metrics()),
            }
            print(json.dumps(out, ensure_ascii=False, indent=2))  # noqa: T201
            return 0
        if tools is not None:
            _stream_with_tools(session.prompt_streaming(messages, **kw))
        else:
            stream_to_stdout(session.prompt_streaming(messages, **kw))
    return 0
