"""Where ``llm-inproc chat`` keeps its conversations: one Memory file in the cache dir.

A conversation is keyed by the user's login and a channel that names both the
``--channel`` and the model (``cli@<model>``), so switching models never continues
another model's conversation, and switching back resumes it. A corrupt file is
never deleted: starting fresh moves it aside, next to the original.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from ..errors import InvalidInputError
from ..memory import Conversation, Memory
from ..prompting.messages import Message, Role

__all__ = ["ChatStore", "channel_key", "move_aside"]

MEMORY_FILE = "chat-memory.json"


def channel_key(channel: str, model: str) -> str:
    """The Memory channel of ``channel`` with ``model``."""
    return f"{channel}@{model}"


def move_aside(path: Path) -> Path:
    """Rename ``path`` to ``<name>.corrupt-<local time>`` (never over another file)."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    os.replace(path, aside)
    return aside


def _login() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no $USER and no passwd entry (some containers)
        return "user"


class ChatStore:
    """The chat's Memory file and the one conversation this run talks in."""

    def __init__(self, path: Path, memory: Memory) -> None:
        self.path = path
        self.memory = memory
        self.conversation = Conversation("", "")

    @classmethod
    def load(cls, cache_dir: Path, *, fresh: bool) -> tuple[ChatStore, str]:
        """Read ``chat-memory.json`` (none yet: an empty memory).

        A corrupt file raises :class:`InvalidInputError` naming it, unless ``fresh``:
        then it is moved aside and the second value says where.
        """
        path = cache_dir / MEMORY_FILE
        memory = Memory()
        moved = ""
        try:
            memory.load_file(path)
        except FileNotFoundError:
            pass
        except InvalidInputError as exc:
            if not fresh:
                raise InvalidInputError(
                    f"{exc}. Run `llm-inproc chat --new` to move it aside "
                    f"(to {path.name}.corrupt-<time>, kept) and start a new conversation"
                ) from None
            aside = move_aside(path)
            moved = f"{path} could not be read, moved it to {aside} and started an empty memory"
        return cls(path, memory), moved

    def open(self, channel: str, model: str) -> Conversation:
        """The conversation in ``channel`` with ``model`` (saved or new) becomes current."""
        self.conversation = self.memory.get(_login(), channel_key(channel, model))
        return self.conversation

    def restart(self, system: str | None) -> None:
        """Replace the current conversation's turns with nothing (but ``system``)."""
        conv = self.conversation
        conv.messages[:] = [Message(Role.SYSTEM, system)] if system else []
        conv.started = conv.last_update = datetime.now(timezone.utc)

    def save(self) -> None:
        """Write this run's conversation into the file, keeping what other chats (other
        channels or models, perhaps running now) saved there since we read it."""
        conv = self.conversation
        conv.last_update = datetime.now(timezone.utc)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(self.path.with_name(f".{self.path.name}.lock")):
            on_disk = Memory()
            try:
                on_disk.load_file(self.path)
            except FileNotFoundError:
                pass
            except InvalidInputError:  # spoilt since we read it: keep it, write ours
                move_aside(self.path)
                on_disk = Memory()
            saved = on_disk.get(conv.user, conv.channel)
            saved.messages[:] = conv.messages
            saved.started, saved.last_update = conv.started, conv.last_update
            on_disk.save_file(self.path)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` between processes (POSIX; elsewhere none)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
