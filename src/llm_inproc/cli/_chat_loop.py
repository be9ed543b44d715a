"""The turns of ``llm-inproc chat``: slash commands, fitting the history in the context,
streaming a reply that Ctrl-C stops, saving after every turn.

Replies go to stdout; everything else (notices, help) to stderr, so a piped chat's
stdout holds only the model's words.
"""

from __future__ import annotations

import itertools
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

from ..errors import ContextOverflowError
from ..prompting.messages import Message, Role
from ._chat_fit import fit_history, reply_reserve
from ._common import stream_to_stdout

if TYPE_CHECKING:
    from ..session import Session
    from ._chat_input import LineReader
    from ._chat_store import ChatStore

__all__ = ["COMMANDS_HELP", "ChatLoop", "notice"]

COMMANDS_HELP = """\
commands:
  /help          this list
  /new           start a new conversation (keeps a system prompt set by --system or /system)
  /system TEXT   set the system prompt (/system alone shows it)
  /bye, /exit    quit (so do Ctrl-D and Ctrl-C at an empty prompt)
  //TEXT         send a line that starts with /
Ctrl-C during a reply stops it; the partial reply is kept in the conversation."""

_COMMANDS = ("/help", "/new", "/system", "/bye", "/exit")


def notice(text: str) -> None:
    print(f"({text})", file=sys.stderr, flush=True)  # noqa: T201


class ChatLoop:
    """One chat run over an open conversation of ``store``."""

    def __init__(
        self,
        session: Session,
        store: ChatStore,
        reader: LineReader,
        sampling: dict[str, Any],
        system: str | None,
    ) -> None:
        self.session = session
        self.store = store
        self.reader = reader
        self.sampling = sampling
        self.system = system
        """The system prompt this run was given (--system, then /system); /new keeps it."""
        self._stop_requested = False

    def run(self) -> int:
        while True:
            line = self.reader.read()
            if line is None:
                return 0
            text = line.strip()
            if not text:
                continue
            if text.startswith("/") and not text.startswith("//"):
                if not self._command(text):
                    return 0
                continue
            self._turn(text[1:] if text.startswith("//") else text)

    # -- slash commands ----------------------------------------------------------------------

    def _command(self, text: str) -> bool:
        """Run a slash command; False means quit."""
        name, _, arg = text.partition(" ")
        arg = arg.strip()
        if name in ("/bye", "/exit"):
            return False
        if name == "/help":
            print(COMMANDS_HELP, file=sys.stderr, flush=True)  # noqa: T201
        elif name in ("/new", "/reset"):  # /reset: this command's old name
            self.store.restart(self.system)
            self.store.save()
            kept = " with the system prompt" if self.system else ""
            notice(f"new conversation{kept}")
        elif name == "/system":
            self._set_system(arg)
        else:
            notice(
                f"unknown command {name}, not sent to the model; commands: {' '.join(_COMMANDS)}"
            )
        return True

    def _set_system(self, text: str) -> None:
        messages = self.store.conversation.messages
        has = bool(messages) and messages[0].role is Role.SYSTEM
        if not text:
            notice(f"system prompt: {messages[0].content}" if has else "no system prompt")
            return
        self.system = text
        if has:
            messages[0] = Message(Role.SYSTEM, text)
        else:
            messages.insert(0, Message(Role.SYSTEM, text))
        self.store.save()
        notice("system prompt set; it applies from the next reply")

    # -- a turn ------------------------------------------------------------------------------

    def _turn(self, text: str) -> None:
        conv = self.store.conversation
        with self._ctrl_c_stops_reply():
            fitted = self._fit([*conv.messages, Message(Role.USER, text)])
            if fitted is None:
                return
            reply, stopped = self._reply(fitted)
            if stopped and not reply:
                notice("stopped before the reply began; your message is dropped")
                conv.messages[:] = fitted[:-1]
            else:
                if stopped:
                    notice("stopped; the partial reply is kept in the conversation")
                conv.messages[:] = [*fitted, Message(Role.ASSISTANT, reply)]
            self.store.save()

    def _fit(self, messages: list[Message]) -> list[Message] | None:
        """``messages`` less their oldest turns, so that prompt and reply fit the context;
        None (and the user told) when the new message alone is too long."""
        n_ctx = self.session.model_info.n_ctx
        if n_ctx is None:  # a server that does not say: it refuses what does not fit
            return messages
        budget = n_ctx - reply_reserve(n_ctx, int(self.sampling.get("max_tokens", 0)))
        fitted, dropped, used = fit_history(messages, self.session.count_tokens, budget)
        if used > budget:
            notice(
                f"your message does not fit in the {n_ctx}-token context with room for the "
                "reply; not sent. Send a shorter one, or raise --context-length"
            )
            return None
        if dropped:
            kept = " (the system prompt is kept)" if fitted[0].role is Role.SYSTEM else ""
            notice(
                f"the conversation outgrew the {n_ctx}-token context: dropped its "
                f"{dropped} oldest messages{kept}"
            )
        return fitted

    def _reply(self, messages: list[Message]) -> tuple[str, bool]:
        """Stream the reply to stdout; the text (stripped) and whether Ctrl-C stopped it."""
        while True:
            try:
                return self._stream(messages)
            except ContextOverflowError:
                # The backend counted more than we did (a remote server): one turn less.
                fitted, dropped, _ = fit_history(messages, len, len(messages) - 1)
                if not dropped:
                    raise
                notice(f"the context is full: dropped the {dropped} oldest messages")
                messages[:] = fitted

    def _stream(self, messages: list[Message]) -> tuple[str, bool]:
        with self.session.prompt_streaming(messages, **self.sampling) as stream:
            # Ctrl-C is checked between pieces; leaving the block stops the generation.
            going = itertools.takewhile(lambda _: not self._stop_requested, stream)
            text = stream_to_stdout(going)
        return text, self._stop_requested

    @contextmanager
    def _ctrl_c_stops_reply(self) -> Iterator[None]:
        """While a turn runs, the first Ctrl-C asks the reply to stop (checked between
        pieces, so generation ends cleanly through the stream); a second one quits."""
        self._stop_requested = False

        def on_sigint(signum: int, frame: FrameType | None) -> None:
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
