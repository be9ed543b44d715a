"""``llm-inproc prompt``: one prompt, the reply streamed to stdout."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from . import add_common_model_flags
from ._common import (
    add_sampling_flags,
    metrics_dict,
    sampling_kwargs,
    session_options,
    stream_to_stdout,
)

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "prompt",
        help="send one prompt and print the reply",
        description="Send one prompt to the model and stream the reply to stdout.",
    )
    p.add_argument(
        "text", nargs="*", help="the prompt (default: read from stdin when absent or '-')"
    )
    p.add_argument(
        "--system", default=None, help="system prompt; {{.Now}}, {{.Model}} expand (default: none)"
    )
    add_sampling_flags(p)
    p.add_argument(
        "--json", action="store_true", help="print the reply, why it ended and the metrics as JSON"
    )
    add_common_model_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import InvalidInputError
    from ..prompting.messages import Message, Role
    from ..session import Session

    # Bad flags, files and config are reported before stdin is read or the model loads.
    kw = sampling_kwargs(args)
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
                "finish_reason": reply.finish_reason,
                "metrics": metrics_dict(session.get_metrics()),
            }
            print(json.dumps(out, ensure_ascii=False, indent=2))  # noqa: T201
            return 0
        stream_to_stdout(session.prompt_streaming(messages, **kw))
    return 0
