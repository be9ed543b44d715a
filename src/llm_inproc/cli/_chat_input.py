"""Reading the user's lines for ``llm-inproc chat``: readline editing and history on a
terminal, one line per turn from a pipe."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["LineReader"]

_HISTORY_LINES = 1000


def _readline() -> ModuleType | None:
    try:
        import readline  # (absent on Windows and some builds; only for terminals)
    except ImportError:
        return None
    return readline


class LineReader:
    """``read()`` returns the next line without its newline, or None when the user
    leaves: end of input (Ctrl-D) or Ctrl-C at the prompt."""

    def __init__(self, history_file: Path) -> None:
        self.interactive = sys.stdin.isatty()
        self._history_file = history_file
        self._readline = _readline() if self.interactive else None
        if self.interactive and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            # A parent that ignores SIGINT (a launcher that starts it in the background
            # without job control, say) passes that on, and Python keeps it: Ctrl-C at the
            # prompt would do nothing. On a terminal, the user's Ctrl-C is meant for the chat.
            signal.signal(signal.SIGINT, signal.default_int_handler)
        if self._readline is not None:
            self._readline.set_history_length(_HISTORY_LINES)
            with contextlib.suppress(OSError):
                self._readline.read_history_file(history_file)

    def read(self) -> str | None:
        if not self.interactive:
            try:
                line = sys.stdin.readline()
            except KeyboardInterrupt:
                return None
            return line.rstrip("\r\n") if line else None
        # input() edits with readline only when stdout is the terminal too; otherwise the
        # prompt would land in the reply output, so it goes to stderr.
        to_stdout = sys.stdout.isatty()
        prompt_stream = sys.stdout if to_stdout else sys.stderr
        try:
            if to_stdout:
                return input("> ")
            print("> ", end="", file=sys.stderr, flush=True)  # noqa: T201
            return input()
        except (EOFError, KeyboardInterrupt):
            print(file=prompt_stream, flush=True)  # (end the prompt's line)
            return None

    def close(self) -> None:
        if self._readline is not None:
            with contextlib.suppress(OSError):
                self._history_file.parent.mkdir(parents=True, exist_ok=True)
                self._readline.write_history_file(self._history_file)
                os.chmod(self._history_file, 0o600)  # what you typed is as private as the chat
