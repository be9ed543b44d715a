"""``llm-inproc chat``: an interactive conversation whose history is kept in a Memory."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from . import add_common_model_flags
from ._common import add_sampling_flags, sampling_kwargs, session_from_args, stream_to_stdout

__all__ = ["add_parser"]

_HELP = "commands: /reset forgets this conversation, /exit (or Ctrl-D) quits"


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "chat",
        help="talk with the model; history is kept between runs",
        description="Interactive chat. The conversation is saved in the cache dir. " + _HELP,
    )
    p.add_argument("--system", default=None, help="system prompt for a new conversation")
    p.add_argument("--channel", default="cli", help="conversation name (default: cli)")
    add_sampling_flags(p)
    add_common_model_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..memory import Memory
    from ..messages import Message, Role

    kw = sampling_kwargs(args)
    with session_from_args(args) as session:
        path = session.cache_dir / "chat-memory.json"
        memory = Memory()
        if path.exists():
            memory.load_file(path)
        conv = memory.get(getpass.getuser(), args.channel)
        if args.system and not conv.messages:
            conv.messages.append(Message(Role.SYSTEM, args.system))
        interactive = sys.stdin.isatty()
        if interactive:
            print(f"chatting with {session.model} ({_HELP})", file=sys.stderr)  # noqa: T201
        while True:
            if interactive:
                print("> ", end="", file=sys.stderr, flush=True)  # noqa: T201
            line = sys.stdin.readline()
            if not line:
                break
            text = line.strip()
            if not text:
                continue
            if text == "/exit":
                break
            if text == "/reset":
                conv.messages.clear()
                memory.save_file(path)
                print("(conversation forgotten)", file=sys.stderr)  # noqa: T201
                continue
            conv.messages.append(Message(Role.USER, text))
            reply = stream_to_stdout(session.prompt_streaming(conv.messages, **kw))
            conv.messages.append(Message(Role.ASSISTANT, reply))
            memory.save_file(path)
    return 0
