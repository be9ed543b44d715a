"""``llm-inproc chat``: an interactive conversation whose history is kept in a Memory.

This module owns the flags and the start (which conversation, which system prompt);
``_chat_loop`` the turns, ``_chat_store`` the memory file, ``_chat_input`` the prompt.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..prompting.messages import Message, Role
from . import add_common_model_flags
from ._common import add_sampling_flags, sampling_kwargs, session_from_args

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "chat",
        help="talk with the model; the conversation is kept between runs",
        description=(
            "Interactive chat, one line per turn (also from a pipe: replies on stdout, "
            "notices on stderr). The conversation is saved in the cache dir after every "
            "turn, per channel and model, and the next run continues it. Type /help for "
            "commands; Ctrl-C stops a reply; Ctrl-D, /bye or Ctrl-C at the prompt quits."
        ),
    )
    start = p.add_mutually_exclusive_group()
    start.add_argument(
        "--new",
        action="store_true",
        help="start a new conversation in this channel (the saved one is replaced; a "
        "corrupt memory file is moved aside, never deleted)",
    )
    start.add_argument(
        "--continue",
        dest="new",
        action="store_false",
        default=False,
        help="continue the saved conversation of this channel and model (the default: "
        "keeping a conversation across runs, as a bot's Memory does, is what chat is for; "
        "a notice says when it resumes)",
    )
    p.add_argument(
        "--system",
        default=None,
        help="system prompt; it replaces the one of a resumed conversation, and you are "
        "told (default: none, or the resumed conversation's)",
    )
    p.add_argument(
        "--channel",
        default="cli",
        help="conversation name (default: cli); each model has its own conversation in it",
    )
    add_sampling_flags(p)
    add_common_model_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..paths import resolve_cache_dir
    from ._chat_input import LineReader
    from ._chat_loop import ChatLoop, notice
    from ._chat_store import ChatStore

    # The memory is read before the model loads: a corrupt file fails at once.
    cache_dir = resolve_cache_dir(args.cache_dir)
    store, moved = ChatStore.load(cache_dir, fresh=args.new)
    if moved:
        notice(moved)
    kw = sampling_kwargs(args)
    with session_from_args(args) as session:
        conv = store.open(args.channel, str(session.model))
        if args.new or not conv.messages:
            if conv.messages:
                notice(
                    f"new conversation; the saved one in channel {args.channel!r} "
                    f"({len(conv.messages)} messages) is replaced"
                )
            store.restart(args.system)
        else:
            _resume(conv.messages, args.system, args.channel)
        store.save()
        reader = LineReader(session.cache_dir / "chat-history")
        if reader.interactive:
            notice(f"chatting with {session.model}; /help for commands, /bye or Ctrl-D to quit")
        try:
            return ChatLoop(session, store, reader, kw, args.system).run()
        finally:
            reader.close()


def _resume(messages: list[Message], system: str | None, channel: str) -> None:
    """Say that a saved conversation continues, and put ``--system`` in it."""
    from ._chat_loop import notice

    notice(
        f"resuming the conversation in channel {channel!r} ({len(messages)} messages); "
        "--new or /new starts over"
    )
    if not system:
        return
    has = messages[0].role is Role.SYSTEM
    if has and messages[0].content == system:
        return
    if has:
        messages[0] = Message(Role.SYSTEM, system)
        notice("--system replaces the system prompt of the resumed conversation")
    else:
        messages.insert(0, Message(Role.SYSTEM, system))
        notice("--system added to the resumed conversation")
