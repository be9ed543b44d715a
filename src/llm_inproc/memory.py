"""A chat bot's conversations, kept per user and channel, saved as JSON.

Bots serve many users from several threads and restart often, so :class:`Memory`
is thread-safe, loads all-or-nothing, and saves files atomically. The file
format is version 1 of the Go reference, so memories move between the two::

    {"v":1,"c":[{"u":user,"c":channel,"s":started,"l":last_update,
                 "m":[{"r":role,"c":content}]}]}

Times are RFC 3339 (nanoseconds accepted, truncated to microseconds). Roles are
integers: system 0, user 1, assistant 2, available_tools 3, tool_call 4,
tool_call_result 5. Empty values (role 0, empty strings and lists) are omitted
as Go's ``omitempty`` does, and omitted or null values read as empty.

Tool turns add two keys the reference never wrote (so its files still load): a
``tool_call`` turn's calls ``"t":[{"i":id,"n":name,"a":arguments JSON text}]`` and a
``tool_call_result`` turn's ``"i"``, the id of the call it answers.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from .errors import InvalidInputError, MemoryFileNotFoundError
from .prompting.messages import Message, Role
from .tools.types import ToolCall

__all__ = ["Conversation", "Memory"]

_VERSION = 1
_ROLE_CODES: dict[Role, int] = {
    Role.SYSTEM: 0,
    Role.USER: 1,
    Role.ASSISTANT: 2,
    Role.AVAILABLE_TOOLS: 3,
    Role.TOOL_CALL: 4,
    Role.TOOL_CALL_RESULT: 5,
}
_ROLES_BY_CODE = {code: role for role, code in _ROLE_CODES.items()}
_ZERO_TIME = _dt.datetime(1, 1, 1, tzinfo=_dt.timezone.utc)  # Go's zero time.Time
_HINT = "the file is corrupt or from an incompatible version; fix it or start from an empty memory"


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


@dataclass
class Conversation:
    """The messages exchanged with one user in one channel.

    Do not change ``user`` or ``channel`` of a conversation held by a
    :class:`Memory`: they are its key.
    """

    user: str
    """Who the bot talks to."""
    channel: str
    """Where the conversation happens."""
    started: _dt.datetime = field(default_factory=_now)
    """When the conversation began (timezone-aware)."""
    last_update: _dt.datetime = field(default_factory=_now)
    """When :meth:`Memory.get` last returned it (timezone-aware)."""
    messages: list[Message] = field(default_factory=list)
    """The turns so far, oldest first."""

    def __post_init__(self) -> None:
        for name in ("user", "channel"):
            if not isinstance(getattr(self, name), str):
                raise InvalidInputError(f"Conversation.{name} must be a string")
        for name in ("started", "last_update"):
            _check_aware(getattr(self, name), f"Conversation.{name}")


def _check_aware(value: object, where: str) -> None:
    if not isinstance(value, _dt.datetime) or value.utcoffset() is None:
        raise InvalidInputError(
            f"{where} must be a timezone-aware datetime, got {value!r}; "
            "use datetime.now(timezone.utc) or attach a tzinfo"
        )


class Memory:
    """Conversations by ``(user, channel)``; every method is thread-safe.

    The internal lock is never held while calling a stream's methods.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conversations: dict[tuple[str, str], Conversation] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._conversations)

    def __iter__(self) -> Iterator[Conversation]:
        return iter(self.conversations())

    def conversations(self) -> list[Conversation]:
        """A snapshot list of the (live) conversations, in memory order."""
        with self._lock:
            return list(self._conversations.values())

    def get(self, user: str, channel: str) -> Conversation:
        """Return the conversation with ``user`` in ``channel``, touched, or a new one."""
        if not isinstance(user, str) or not isinstance(channel, str):
            raise InvalidInputError(
                f"Memory.get needs two strings (user, channel), got {user!r}, {channel!r}"
            )
        now = _now()
        with self._lock:
            conversation = self._conversations.get((user, channel))
            if conversation is None:
                conversation = Conversation(user, channel, now, now)
                self._conversations[(user, channel)] = conversation
            else:
                conversation.last_update = now
            return conversation

    def forget(
        self,
        *,
        max_age: _dt.timedelta = _dt.timedelta(hours=24),
        now: _dt.datetime | None = None,
    ) -> None:
        """Drop conversations not updated within ``max_age`` of ``now`` (default: 24 h ago).

        The remaining ones are kept sorted most-recent first.
        """
        when = _now() if now is None else now
        _check_aware(when, "forget(now=...)")
        cutoff = when - max_age
        with self._lock:
            for c in self._conversations.values():
                _check_aware(c.last_update, f"conversation {c.user!r}/{c.channel!r} last_update")
            kept = [c for c in self._conversations.values() if c.last_update >= cutoff]
            kept.sort(key=lambda c: c.last_update, reverse=True)
            self._conversations = {(c.user, c.channel): c for c in kept}

    def save(self, fp: IO[str]) -> None:
        """Write every conversation to the text stream ``fp`` as a version 1 document."""
        fp.write(self._dumps())

    def load(self, fp: IO[str]) -> None:
        """Replace the whole content of the memory with the document read from ``fp``.

        The document is parsed completely first: on any error
        (:class:`InvalidInputError`) the memory is left unchanged.
        """
        conversations = _parse(fp.read())
        with self._lock:
            self._conversations = conversations

    def save_file(self, path: str | os.PathLike[str]) -> None:
        """Save to ``path`` atomically: the old file stays intact if anything fails.

        The document goes to a temporary file in the same directory, which is
        flushed to disk and then renamed over ``path``. A new file is created
        readable by its owner only (conversations are private); an existing
        file keeps its permissions.
        """
        text = self._dumps()
        target = os.path.realpath(os.fspath(path))
        directory, name = os.path.split(target)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
                with contextlib.suppress(FileNotFoundError):
                    os.chmod(tmp, os.stat(target).st_mode & 0o7777)
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_directory(directory)

    def load_file(self, path: str | os.PathLike[str]) -> None:
        """Replace the memory's content with the file at ``path`` (see :meth:`load`).

        A missing file raises :class:`MemoryFileNotFoundError` (a ``FileNotFoundError``);
        another unreadable one the usual :class:`OSError`; a corrupt one
        :class:`InvalidInputError` naming the file. The memory is then left unchanged.
        """
        try:
            f = open(path, encoding="utf-8")  # noqa: SIM115 (closed below; open's error is ours)
        except FileNotFoundError:
            raise MemoryFileNotFoundError(
                errno.ENOENT,
                "no memory file there; save one first with Memory.save_file, "
                "or start from an empty Memory() when there is nothing to load",
                os.fspath(path),
            ) from None
        with f:
            try:
                text = f.read()
            except UnicodeDecodeError as exc:
                raise InvalidInputError(f"memory file {path}: not UTF-8 text; {_HINT}") from exc
        try:
            conversations = _parse(text)
        except InvalidInputError as exc:
            raise InvalidInputError(f"memory file {path}: {exc}") from None
        with self._lock:
            self._conversations = conversations

    def _dumps(self) -> str:
        """Encode a snapshot taken under the lock; the stream is written outside it."""
        with self._lock:
            snapshot = [
                (c.user, c.channel, c.started, c.last_update, list(c.messages))
                for c in self._conversations.values()
            ]
        items: list[dict[str, Any]] = []
        for user, channel, started, last_update, messages in snapshot:
            item: dict[str, Any] = {}
            if user:
                item["u"] = user
            if channel:
                item["c"] = channel
            item["s"] = _format_time(started, f"conversation {user!r}/{channel!r} started")
            item["l"] = _format_time(last_update, f"conversation {user!r}/{channel!r} last_update")
            encoded = [_encode_message(m) for m in messages]
            if encoded:
                item["m"] = encoded
            items.append(item)
        document: dict[str, Any] = {"v": _VERSION}
        if items:
            document["c"] = items
        return json.dumps(document, separators=(",", ":")) + "\n"


def _encode_message(message: Message) -> dict[str, Any]:
    encoded: dict[str, Any] = {}
    code = _ROLE_CODES[Role(message.role)]
    if code:
        encoded["r"] = code
    if message.content:
        encoded["c"] = str(message.content)
    if message.tool_calls:
        encoded["t"] = [{"i": c.id, "n": c.name, "a": c.raw} for c in message.tool_calls]
    if message.tool_call_id:
        encoded["i"] = message.tool_call_id
    return encoded


def _fsync_directory(directory: str) -> None:
    """Make the rename durable; best effort (not possible on every platform)."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _format_time(value: _dt.datetime, where: str) -> str:
    """RFC 3339 as Go's time.RFC3339Nano writes it (no trailing zeros, 'Z' for UTC)."""
    _check_aware(value, where)
    offset = value.utcoffset() or _dt.timedelta(0)
    if offset % _dt.timedelta(minutes=1):
        value, offset = value.astimezone(_dt.timezone.utc), _dt.timedelta(0)
    text = (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
        f"T{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
    )
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    if not offset:
        return text + "Z"
    minutes = offset // _dt.timedelta(minutes=1)
    sign = "-" if minutes < 0 else "+"
    hours, minutes = divmod(abs(minutes), 60)
    return f"{text}{sign}{hours:02d}:{minutes:02d}"


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)


def _parse_time(value: object, where: str) -> _dt.datetime:
    if value is None:
        return _ZERO_TIME
    if not isinstance(value, str):
        raise _bad(where, f"expected an RFC 3339 time string, got {_kind(value)}")
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise _bad(where, f"{value!r} is not an RFC 3339 time like 2024-07-01T12:34:56Z")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    micro = int((match[7] or "").ljust(6, "0")[:6])
    try:
        if match[8]:
            zone = _dt.timezone.utc
        else:
            delta = _dt.timedelta(hours=int(match[10]), minutes=int(match[11]))
            zone = _dt.timezone(-delta if match[9] == "-" else delta)
        parsed = _dt.datetime(year, month, day, hour, minute, second, micro, tzinfo=zone)
        parsed.astimezone(_dt.timezone.utc)  # representable when compared with others
    except (ValueError, OverflowError) as exc:
        raise _bad(where, f"{value!r} is not a valid time ({exc})") from None
    return parsed


def _parse(text: object) -> dict[tuple[str, str], Conversation]:
    """Parse a whole version 1 document into new objects, or raise InvalidInputError."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise _bad("document", "not UTF-8 text") from None
    if not isinstance(text, str):
        raise _bad("document", f"the stream returned {_kind(text)} instead of text")
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, NaN, huge ints, deep nesting
        raise _bad("document", f"not valid JSON ({exc})") from None
    top = _object(document, "document", {"v", "c"})
    version = top.get("v")
    if type(version) is not int or version != _VERSION:  # not 1.0 or true, as Go refuses them
        raise _bad("v", f"unsupported version {version!r}, this library reads version 1")
    result: dict[tuple[str, str], Conversation] = {}
    for i, raw in enumerate(_array(top.get("c"), "c")):
        where = f"c[{i}]"
        item = _object(raw, where, {"u", "c", "s", "l", "m"})
        user = _string(item.get("u"), f"{where}.u")
        channel = _string(item.get("c"), f"{where}.c")
        if (user, channel) in result:
            raise _bad(where, f"a second conversation for user {user!r} in channel {channel!r}")
        messages = [
            _parse_message(m, f"{where}.m[{j}]")
            for j, m in enumerate(_array(item.get("m"), f"{where}.m"))
        ]
        started = _parse_time(item.get("s"), f"{where}.s")
        last_update = _parse_time(item.get("l"), f"{where}.l")
        result[(user, channel)] = Conversation(user, channel, started, last_update, messages)
    return result


def _parse_message(raw: object, where: str) -> Message:
    item = _object(raw, where, {"r", "c", "t", "i"})
    code = item.get("r")
    if code is None:
        code = 0
    if not isinstance(code, int) or isinstance(code, bool):
        raise _bad(f"{where}.r", f"expected an integer role, got {_kind(code)}")
    role = _ROLES_BY_CODE.get(code)
    if role is None:
        known = ", ".join(f"{c} ({r.value})" for r, c in _ROLE_CODES.items())
        raise _bad(f"{where}.r", f"unknown role {code}; known roles: {known}")
    calls = [
        _parse_call(c, f"{where}.t[{j}]") for j, c in enumerate(_array(item.get("t"), f"{where}.t"))
    ]
    call_id = _string(item.get("i"), f"{where}.i")
    try:
        return Message(
            role, _string(item.get("c"), f"{where}.c"), tool_calls=calls, tool_call_id=call_id
        )
    except InvalidInputError as e:
        raise _bad(where, str(e)) from None


def _parse_call(raw: object, where: str) -> ToolCall:
    item = _object(raw, where, {"i", "n", "a"})
    text = _string(item.get("a"), f"{where}.a") or "{}"
    try:
        arguments = json.loads(text)
    except json.JSONDecodeError as e:
        raise _bad(f"{where}.a", f"the arguments are not JSON ({e.msg})") from None
    if not isinstance(arguments, dict):
        raise _bad(f"{where}.a", "the arguments must be a JSON object")
    try:
        return ToolCall(
            _string(item.get("i"), f"{where}.i"),
            _string(item.get("n"), f"{where}.n"),
            arguments,
            text,
        )
    except InvalidInputError as e:
        raise _bad(where, str(e)) from None


class _ConstantError(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _ConstantError(f"{name} is not allowed in JSON")


def _object(value: object, where: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(where, f"expected a JSON object, got {_kind(value)}")
    unknown = sorted(set(value) - keys)
    if unknown:
        raise _bad(where, f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(keys))})")
    return value


def _array(value: object, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad(where, f"expected a JSON array, got {_kind(value)}")
    return value


def _string(value: object, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _bad(where, f"expected a string, got {_kind(value)}")
    return value


def _kind(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if type(value) in (int, float):
        return f"the number {value!r}"
    return names.get(type(value), type(value).__name__)


def _bad(where: str, problem: str) -> InvalidInputError:
    return InvalidInputError(f"cannot load memory: {where}: {problem}; {_HINT}")
