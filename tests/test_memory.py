"""Tests for llm_inproc.memory: conversations, forgetting, the v1 file format, atomic saves."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import threading
import time
from pathlib import Path

import pytest

from llm_inproc.errors import InvalidInputError
from llm_inproc.memory import Conversation, Memory
from llm_inproc.prompting.messages import Message, Role
from subproc import child_env, run_python

UTC = dt.timezone.utc

# Written by hand in the reference's encoding: system role (0) and empty values omitted.
REFERENCE_DOC = {
    "v": 1,
    "c": [
        {
            "u": "alice",
            "c": "general",
            "s": "2024-07-01T12:34:56Z",
            "l": "2024-07-01T14:40:00.5+02:00",
            "m": [
                {"c": "You are a helpful bot. It is {{.Now}}."},
                {"r": 1, "c": "hi ✨"},
                {"r": 2, "c": "hello!"},
                {"r": 3, "c": "[tools]"},
                {"r": 4, "c": "call"},
                {"r": 5, "c": "result"},
                {"r": 2},
            ],
        },
        {"u": "bob", "s": "2024-06-30T00:00:00.000001Z", "l": "2024-06-30T23:59:59.99-07:30"},
    ],
}


def _dump(memory: Memory) -> str:
    out = io.StringIO()
    memory.save(out)
    return out.getvalue()


def _loaded(doc: object) -> Memory:
    memory = Memory()
    memory.load(io.StringIO(json.dumps(doc)))
    return memory


def _sample_memory() -> Memory:
    memory = Memory()
    c = memory.get("carol", "dm")
    c.messages.extend([Message(Role.SYSTEM, "sys"), Message(Role.USER, "question")])
    memory.get("dave", "#random").messages.append(Message(Role.ASSISTANT, 'ünïcode \n\t"quoted"'))
    return memory


# --- get ---------------------------------------------------------------------------------------


def test_get_creates_a_new_conversation() -> None:
    memory = Memory()
    before = dt.datetime.now(UTC)
    c = memory.get("alice", "general")
    assert (c.user, c.channel, c.messages) == ("alice", "general", [])
    assert c.started == c.last_update
    assert c.started.utcoffset() == dt.timedelta(0)
    assert before <= c.started <= dt.datetime.now(UTC)
    assert len(memory) == 1
    assert memory.get("alice", "other") is not c
    assert memory.get("bob", "general") is not c
    assert len(memory) == 3


def test_get_returns_the_existing_conversation_touched() -> None:
    memory = Memory()
    c = memory.get("alice", "general")
    c.messages.append(Message(Role.USER, "hi"))
    old = dt.datetime(2020, 1, 1, tzinfo=UTC)
    c.started = c.last_update = old
    again = memory.get("alice", "general")
    assert again is c
    assert again.messages == [Message(Role.USER, "hi")]
    assert again.started == old
    assert again.last_update > old + dt.timedelta(days=365)
    assert len(memory) == 1
    assert memory.conversations() == [c]
    assert list(memory) == [c]


def test_get_refuses_non_strings() -> None:
    with pytest.raises(InvalidInputError, match="two strings"):
        Memory().get(42, "general")  # type: ignore[arg-type]


def test_conversation_requires_aware_datetimes() -> None:
    with pytest.raises(InvalidInputError, match="timezone-aware"):
        Conversation("a", "b", dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 1, tzinfo=UTC))


def test_conversations_is_a_snapshot() -> None:
    memory = _sample_memory()
    snapshot = memory.conversations()
    memory.get("erin", "x")
    assert len(snapshot) == 2
    assert len(memory) == 3


# --- forget ------------------------------------------------------------------------------------


def test_forget_drops_old_and_sorts_most_recent_first() -> None:
    now = dt.datetime(2024, 7, 2, 12, 0, tzinfo=UTC)
    ages = {
        "a": dt.timedelta(hours=25),
        "b": dt.timedelta(hours=1),
        "c": dt.timedelta(days=30),
        "d": dt.timedelta(hours=23, minutes=59),
        "e": dt.timedelta(hours=2),
        "f": dt.timedelta(hours=24, seconds=1),
        "g": dt.timedelta(hours=-1),  # clock skew: in the future, kept
    }
    doc = {
        "v": 1,
        "c": [
            {"u": user, "s": "2024-01-01T00:00:00Z", "l": (now - age).isoformat()}
            for user, age in ages.items()
        ],
    }
    memory = _loaded(doc)
    memory.forget(now=now)
    assert [c.user for c in memory.conversations()] == ["g", "b", "e", "d"]
    assert len(memory) == 4


def test_forget_with_the_real_clock() -> None:
    memory = Memory()
    memory.get("old", "x").last_update = dt.datetime.now(UTC) - dt.timedelta(days=2)
    memory.get("older", "x").last_update = dt.datetime(2001, 1, 1, tzinfo=UTC)
    recent = memory.get("recent", "x")
    newest = memory.get("newest", "x")
    memory.forget()
    assert memory.conversations() == [newest, recent]
    assert memory.get("old", "x").messages == []  # forgotten, so it starts afresh


def test_forget_refuses_naive_times() -> None:
    memory = Memory()
    with pytest.raises(InvalidInputError, match="timezone-aware"):
        memory.forget(now=dt.datetime(2024, 1, 1))
    memory.get("a", "b").last_update = dt.datetime(2024, 1, 1)
    with pytest.raises(InvalidInputError, match="'a'/'b' last_update must be a timezone-aware"):
        memory.forget()
    assert len(memory) == 1


# --- the v1 document ---------------------------------------------------------------------------


def test_reference_document_loads() -> None:
    memory = _loaded(REFERENCE_DOC)
    alice, bob = memory.conversations()
    assert (alice.user, alice.channel) == ("alice", "general")
    assert alice.started == dt.datetime(2024, 7, 1, 12, 34, 56, tzinfo=UTC)
    assert alice.last_update == dt.datetime(2024, 7, 1, 12, 40, 0, 500000, tzinfo=UTC)
    assert alice.last_update.utcoffset() == dt.timedelta(hours=2)
    assert [m.role for m in alice.messages] == [
        Role.SYSTEM,
        Role.USER,
        Role.ASSISTANT,
        Role.AVAILABLE_TOOLS,
        Role.TOOL_CALL,
        Role.TOOL_CALL_RESULT,
        Role.ASSISTANT,
    ]
    assert alice.messages[1].content == "hi ✨"
    assert alice.messages[-1].content == ""
    assert (bob.channel, bob.messages) == ("", [])
    assert bob.last_update.utcoffset() == -dt.timedelta(hours=7, minutes=30)


def test_reference_document_saves_back_equal() -> None:
    saved = _dump(_loaded(REFERENCE_DOC))
    assert json.loads(saved) == REFERENCE_DOC
    assert saved.endswith("\n")
    assert ": " not in saved.split('"c":"You')[0]  # compact, as Go writes it


def test_nanoseconds_are_truncated_to_microseconds() -> None:
    doc = {
        "v": 1,
        "c": [
            {
                "u": "a",
                "s": "2024-07-01T12:34:56.123456789Z",
                "l": "2024-07-01t12:34:56.000000999-05:00",
            }
        ],
    }
    (c,) = _loaded(doc).conversations()
    assert c.started == dt.datetime(2024, 7, 1, 12, 34, 56, 123456, tzinfo=UTC)
    assert c.last_update.microsecond == 0
    saved = json.loads(_dump(_loaded(doc)))["c"][0]
    assert saved["s"] == "2024-07-01T12:34:56.123456Z"
    assert saved["l"] == "2024-07-01T12:34:56-05:00"


def test_omitted_fields_read_as_zero_values() -> None:
    memory = _loaded({"v": 1, "c": [{"m": [{}]}]})
    (c,) = memory.conversations()
    assert (c.user, c.channel) == ("", "")
    assert c.started == dt.datetime(1, 1, 1, tzinfo=UTC)  # Go's zero time
    assert c.messages == [Message(Role.SYSTEM, "")]
    assert json.loads(_dump(memory)) == {
        "v": 1,
        "c": [{"s": "0001-01-01T00:00:00Z", "l": "0001-01-01T00:00:00Z", "m": [{}]}],
    }
    assert json.loads(_dump(Memory())) == {"v": 1}
    assert len(_loaded({"v": 1, "c": None})) == 0


def test_round_trip_through_a_file(tmp_path: Path) -> None:
    memory = _sample_memory()
    odd = memory.get("frank", "")
    odd.started = dt.datetime(2024, 1, 1, 8, 0, 0, 1, tzinfo=dt.timezone(dt.timedelta(hours=5)))
    path = tmp_path / "memory.json"
    memory.save_file(path)
    again = Memory()
    again.load_file(str(path))
    assert again.conversations() == memory.conversations()
    assert _dump(again) == _dump(memory) == path.read_text(encoding="utf-8")


def test_offsets_with_seconds_are_written_in_utc() -> None:
    memory = Memory()
    zone = dt.timezone(dt.timedelta(hours=1, seconds=30))
    memory.get("a", "b").started = dt.datetime(2024, 1, 1, 1, 0, 30, tzinfo=zone)
    assert json.loads(_dump(memory))["c"][0]["s"] == "2024-01-01T00:00:00Z"


BAD_DOCUMENTS = {
    "garbage": "this is not json",
    "empty": "",
    "truncated": json.dumps(REFERENCE_DOC)[:-7],
    "not an object": "[1]",
    "unknown version": '{"v":2,"c":[]}',
    "missing version": '{"c":[]}',
    "version as string": '{"v":"1"}',
    "version as bool": '{"v":true}',
    "version as float": '{"v":1.0}',
    "unknown top key": '{"v":1,"x":1}',
    "unknown conversation key": '{"v":1,"c":[{"u":"a","z":1}]}',
    "unknown message key": '{"v":1,"c":[{"u":"a","m":[{"r":1,"c":"x","t":0}]}]}',
    "unknown role": '{"v":1,"c":[{"u":"a","m":[{"r":6,"c":"x"}]}]}',
    "negative role": '{"v":1,"c":[{"u":"a","m":[{"r":-1}]}]}',
    "float role": '{"v":1,"c":[{"u":"a","m":[{"r":1.0}]}]}',
    "bool role": '{"v":1,"c":[{"u":"a","m":[{"r":true}]}]}',
    "string role": '{"v":1,"c":[{"u":"a","m":[{"r":"user"}]}]}',
    "NaN": '{"v":1,"c":[{"u":"a","m":[{"r":NaN}]}]}',
    "deep nesting": "[" * 100_000 + "]" * 100_000,
    "huge number": '{"v":1' + "0" * 5000 + "}",
    "conversations not a list": '{"v":1,"c":{}}',
    "messages not a list": '{"v":1,"c":[{"m":"hi"}]}',
    "user not a string": '{"v":1,"c":[{"u":5}]}',
    "content not a string": '{"v":1,"c":[{"m":[{"c":["x"]}]}]}',
    "time not a string": '{"v":1,"c":[{"s":1719830096}]}',
    "time not rfc3339": '{"v":1,"c":[{"s":"yesterday"}]}',
    "time without zone": '{"v":1,"c":[{"s":"2024-07-01T12:34:56"}]}',
    "impossible date": '{"v":1,"c":[{"s":"2024-02-30T00:00:00Z"}]}',
    "leap second": '{"v":1,"c":[{"s":"2016-12-31T23:59:60Z"}]}',
    "time out of range": '{"v":1,"c":[{"s":"0001-01-01T00:00:00+01:00"}]}',
    "duplicate conversation": '{"v":1,"c":[{"u":"a","c":"b"},{"u":"a","c":"b"}]}',
    # The first conversation is fine; nothing of it may be loaded.
    "bad second conversation": '{"v":1,"c":[{"u":"new","c":"x"},{"u":"b","m":[{"r":9}]}]}',
}


@pytest.mark.parametrize("text", BAD_DOCUMENTS.values(), ids=BAD_DOCUMENTS.keys())
def test_bad_documents_are_refused_and_nothing_changes(text: str) -> None:
    memory = _sample_memory()
    before = _dump(memory)
    conversations = memory.conversations()
    with pytest.raises(InvalidInputError, match=r"cannot load memory: .*; .*fix it") as info:
        memory.load(io.StringIO(text))
    assert isinstance(info.value, ValueError)
    assert _dump(memory) == before
    assert memory.conversations() == conversations


def test_error_names_the_place() -> None:
    with pytest.raises(InvalidInputError, match=r"c\[1\]\.m\[0\]\.r: unknown role 9"):
        _loaded({"v": 1, "c": [{"u": "a"}, {"u": "b", "m": [{"r": 9}]}]})
    with pytest.raises(InvalidInputError, match=r"c\[0\]: unknown key 'z'"):
        _loaded({"v": 1, "c": [{"u": "a", "z": 1}]})
    with pytest.raises(InvalidInputError, match="unsupported version 2"):
        _loaded({"v": 2})


def test_load_replaces_everything() -> None:
    memory = _sample_memory()
    memory.load(io.StringIO(json.dumps(REFERENCE_DOC)))
    assert [c.user for c in memory] == ["alice", "bob"]


def test_load_file_refuses_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "memory.json"
    path.write_bytes(b'{"v":1,"c":[{"u":"\xff"}]}')
    memory = _sample_memory()
    before = _dump(memory)
    with pytest.raises(InvalidInputError, match="UTF-8"):
        memory.load_file(path)
    assert _dump(memory) == before


def test_load_file_missing_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Memory().load_file(tmp_path / "absent.json")


# --- atomic save -------------------------------------------------------------------------------


def _old_file(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "memory.json"
    _sample_memory().save_file(path)
    return path, path.read_bytes()


def test_save_failing_mid_write_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    """A real short write: the child may not grow files past 4 KiB (RLIMIT_FSIZE → EFBIG)."""
    pytest.importorskip("resource")
    path, old = _old_file(tmp_path)
    assert len(old) < 4096
    script = f"""
import errno, resource, signal, sys
from llm_inproc.memory import Memory
from llm_inproc.prompting.messages import Message, Role
memory = Memory()
memory.get("big", "x").messages.extend(Message(Role.USER, "y" * 1000) for _ in range(200))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
try:
    memory.save_file({str(path)!r})
except OSError as exc:
    print("failed", errno.errorcode[exc.errno])
"""
    done = run_python(script, env=child_env(PYTHONDONTWRITEBYTECODE="1"), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "failed EFBIG"
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["memory.json"]


def test_save_killed_before_rename_leaves_old_file(tmp_path: Path) -> None:
    """The process dies (os._exit) after writing the temp file, before the rename."""
    path, old = _old_file(tmp_path)
    script = f"""
import os, sys
from llm_inproc.memory import Memory
memory = Memory()
memory.get("new", "x")
os.fsync = lambda fd: os._exit(3)
memory.save_file({str(path)!r})
"""
    done = run_python(script, timeout=60)
    assert done.returncode == 3, done.stderr
    assert path.read_bytes() == old
    leftovers = [p for p in os.listdir(tmp_path) if p != "memory.json"]
    assert all(p.startswith(".memory.json.") and p.endswith(".tmp") for p in leftovers)
    # A later save still works and replaces the file.
    memory = Memory()
    memory.get("later", "x")
    memory.save_file(path)
    again = Memory()
    again.load_file(path)
    assert [c.user for c in again] == ["later"]


def test_save_rename_failure_removes_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, old = _old_file(tmp_path)

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    memory = Memory()
    memory.get("new", "x")
    with pytest.raises(OSError, match="No space"):
        memory.save_file(path)
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["memory.json"]


def test_save_of_invalid_conversation_writes_nothing(tmp_path: Path) -> None:
    path, old = _old_file(tmp_path)
    memory = Memory()
    memory.get("a", "b").last_update = dt.datetime(2024, 1, 1)  # naive, set after creation
    with pytest.raises(InvalidInputError, match="timezone-aware"):
        memory.save_file(path)
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["memory.json"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_save_file_permissions(tmp_path: Path) -> None:
    path = tmp_path / "new.json"
    Memory().save_file(path)
    assert path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o640)
    _sample_memory().save_file(path)
    assert path.stat().st_mode & 0o777 == 0o640


# --- threads -----------------------------------------------------------------------------------


def test_concurrent_get_save_load_forget(tmp_path: Path) -> None:
    memory = Memory()
    errors: list[BaseException] = []
    snapshots: list[str] = []
    per_thread = 100
    users = [f"user{i}" for i in range(6)]

    def chat(user: str) -> None:
        try:
            for i in range(per_thread):
                memory.get(user, "general").messages.append(Message(Role.USER, f"{user} {i}"))
                if i % 10 == 0:
                    snapshots.append(_dump(memory))
                    memory.save_file(tmp_path / f"{user}.json")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def housekeeping() -> None:
        try:
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:
                memory.forget()
                snapshots.append(_dump(memory))
                len(memory)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=chat, args=(u,)) for u in users]
    threads.append(threading.Thread(target=housekeeping))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert sorted(c.user for c in memory) == users
    for c in memory:
        assert [m.content for m in c.messages] == [f"{c.user} {i}" for i in range(per_thread)]
    assert len(snapshots) >= len(users) * per_thread // 10
    for text in snapshots:
        _loaded(json.loads(text))  # every snapshot is a complete, valid document
    for user in users:
        loaded = Memory()
        loaded.load_file(tmp_path / f"{user}.json")
        assert user in {c.user for c in loaded}
    assert sorted(os.listdir(tmp_path)) == sorted(f"{u}.json" for u in users)


# --- load_file errors name the file ------------------------------------------------------------


def test_load_file_missing_is_our_error_and_still_file_not_found(tmp_path: Path) -> None:
    from llm_inproc import LLMError, MemoryFileNotFoundError

    path = tmp_path / "absent.json"
    memory = _sample_memory()
    before = _dump(memory)
    with pytest.raises(MemoryFileNotFoundError) as info:
        memory.load_file(path)
    err = info.value
    assert isinstance(err, LLMError) and isinstance(err, FileNotFoundError)
    assert err.filename == str(path) and err.errno == 2
    assert str(path) in str(err) and "Memory.save_file" in str(err)
    assert _dump(memory) == before


def test_load_file_corrupt_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "memory.json"
    path.write_text('{"v": 1, "c": [{"u": "x", "oops": 1}]}', encoding="utf-8")
    with pytest.raises(InvalidInputError) as info:
        Memory().load_file(path)
    message = str(info.value)
    assert str(path) in message and "'oops'" in message and "c[0]" in message
