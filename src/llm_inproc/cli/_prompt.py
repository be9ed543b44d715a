"""``llm-inproc prompt``: one prompt, the reply streamed to stdout."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from . import add_common_model_flags
from ._common import metrics_dict, session_from_args

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "prompt",
        help="send one prompt and print the reply",
        description="Send one prompt to the model and stream the reply to stdout.",
    )
    p.add_argument("text", nargs="*", help="the prompt; read from stdin when absent or '-'")
    p.add_argument("--system", default=None, help="system prompt ({{.Now}}, {{.Model}} expand)")
    p.add_argument(
        "--max-tokens",
        type=int,
        default=512,
        help="reply length limit (default 512; 0: until the model stops or the context is full)",
    )
    p.add_argument("--temperature", type=float, default=1.0, help="0 is greedy")
    p.add_argument("--seed", type=int, default=0, help="0 is random; fix it to repeat a reply")
    p.add_argument("--json", action="store_true", help="print the reply and metrics as JSON")
    add_common_model_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import InvalidInputError
    from ..messages import Message, Role

    text = " ".join(args.text)
    if not args.text or text == "-":
        text = sys.stdin.read()
    if not text.strip():
        raise InvalidInputError("empty prompt; pass the text as an argument or on stdin")
    messages = [Message(Role.USER, text)]
    if args.system:
        messages.insert(0, Message(Role.SYSTEM, args.system))
    kw = {"max_tokens": args.max_tokens, "seed": args.seed, "temperature": args.temperature}
    with session_from_args(args) as session:
        if args.json:
            reply = session.prompt(messages, **kw)
            out = {
                "model": str(session.model),
                "reply": reply,
                "metrics": metrics_dict(session.get_metrics()),
            }
            print(json.dumps(out, ensure_ascii=False, indent=2))  # noqa: T201
            return 0
        started = False
        for piece in session.prompt_streaming(messages, **kw):
            if not started:
                piece = piece.lstrip()
                started = bool(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
    return 0
