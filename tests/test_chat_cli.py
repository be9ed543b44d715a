"""``llm-inproc chat`` run as a real subprocess on the default model (SmolLM2-135M-Instruct):
resuming, --new, --system, slash commands, a corrupt memory file, a history longer than the
context, and Ctrl-C / Ctrl-D on a real terminal (a pty)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import re
import select
import shutil
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from llm_inproc import DEFAULT_MODEL, Conversation, Memory, Message, Role
from llm_inproc.cli._chat_fit import fit_history, reply_reserve
from subproc import child_env, run_cli

# One thread: on a machine shared with other jobs, llama.cpp's threads waiting on each
# other cost far more than they gain (a 16-token turn took 57 s with two, 1.4 s with one).
# Four tokens: what is checked is the conversation kept, not what the replies say.
FAST = ("--temperature", "0", "--max-tokens", "4", "--context-length", "1024", "--threads", "1")


@pytest.fixture
def cache(tmp_path: Path, cache_dir: Path, repack_flags: list[str]) -> Path:
    """A fresh cache for one test's chats, with what the suite's cache already knows about
    this machine and model: the repacking probe's verdict (``repack_flags`` saw to it) and
    the default model's checked checksum. Else each test's first chat would probe and hash
    again (0.45 s), which no test here checks."""
    for known in ("probes", "verified"):
        if (cache_dir / known).is_dir():
            shutil.copytree(cache_dir / known, tmp_path / known)
    return tmp_path


def chat(cache: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = child_env(HF_HUB_OFFLINE="1", LLM_INPROC_CACHE=str(cache))
    return run_cli("chat", *FAST, *args, stdin=stdin, env=env, timeout=120)


def saved(cache: Path, model: str = str(DEFAULT_MODEL), channel: str = "cli") -> Conversation:
    memory = Memory()
    memory.load_file(cache / "chat-memory.json")
    (conv,) = [c for c in memory if c.channel == f"{channel}@{model}"]
    return conv


def roles(conv: Conversation) -> list[Role]:
    return [m.role for m in conv.messages]


# --- the memory file (no model) ------------------------------------------------------------------


def test_two_chats_at_once_keep_each_others_conversations(tmp_path: Path) -> None:
    from llm_inproc.cli._chat_store import MEMORY_FILE, ChatStore

    a, _ = ChatStore.load(tmp_path, fresh=False)
    b, _ = ChatStore.load(tmp_path, fresh=False)  # both read the (missing) file first
    a.open("cli", "model-a").messages.append(Message(Role.USER, "from a"))
    b.open("work", "model-b").messages.append(Message(Role.USER, "from b"))
    a.save()
    b.save()  # must not drop a's conversation, which b never saw
    a.conversation.messages.append(Message(Role.ASSISTANT, "a again"))
    a.save()
    saved = Memory()
    saved.load_file(tmp_path / MEMORY_FILE)
    texts = {c.channel: [m.content for m in c.messages] for c in saved}
    assert texts == {"cli@model-a": ["from a", "a again"], "work@model-b": ["from b"]}


# --- fitting the history (pure) ----------------------------------------------------------------


def test_fit_history_drops_whole_oldest_turns_and_keeps_the_system_prompt() -> None:
    sys_msg = Message(Role.SYSTEM, "s" * 10)
    turns = [Message(Role.USER if i % 2 == 0 else Role.ASSISTANT, "x" * 10) for i in range(6)]
    count = lambda ms: sum(len(m.content) for m in ms)  # noqa: E731
    kept, dropped, _ = fit_history([sys_msg, *turns, Message(Role.USER, "new")], count, 35)
    assert kept[0] is sys_msg and kept[-1].content == "new"
    assert dropped == 4 and roles(Conversation("", "", messages=kept[1:]))[0] is Role.USER
    assert count(kept) <= 35
    kept, dropped, _ = fit_history([Message(Role.USER, "y" * 99)], count, 10)
    assert len(kept) == 1 and dropped == 0  # the new message stays; the caller says it is long
    assert reply_reserve(512, 16) == 16 and reply_reserve(512, 0) == 128
    assert reply_reserve(512, 10_000) == 256


# --- piped stdin -------------------------------------------------------------------------------


@pytest.mark.model
def test_resume_is_announced_and_new_starts_over(chat_model_path: Path, cache: Path) -> None:
    r = chat(cache, "--system", "You are a pirate.", stdin="Hello\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and "resuming" not in r.stderr
    conv = saved(cache)
    assert roles(conv) == [Role.SYSTEM, Role.USER, Role.ASSISTANT]
    assert conv.messages[0].content == "You are a pirate." and conv.messages[1].content == "Hello"

    r = chat(cache, stdin="Again\n")
    assert r.returncode == 0, r.stderr
    assert "resuming the conversation in channel 'cli' (3 messages)" in r.stderr
    assert "--new" in r.stderr
    assert [m.content for m in saved(cache).messages][:4] == [
        "You are a pirate.", "Hello", conv.messages[2].content, "Again",
    ]  # fmt: skip

    # A different --system replaces the saved one, and says so.
    r = chat(cache, "--system", "You are a cat.", stdin="Meow\n")
    assert "replaces the system prompt" in r.stderr
    assert saved(cache).messages[0] == Message(Role.SYSTEM, "You are a cat.")
    assert len(saved(cache).messages) == 7

    r = chat(cache, "--new", stdin="Fresh\n")
    assert r.returncode == 0, r.stderr
    assert "resuming" not in r.stderr
    assert "the saved one in channel 'cli' (7 messages) is replaced" in r.stderr
    assert [m.content for m in saved(cache).messages][:1] == ["Fresh"]
    assert roles(saved(cache)) == [Role.USER, Role.ASSISTANT]
    assert sorted(p.name for p in cache.glob("chat-memory*")) == ["chat-memory.json"]


@pytest.mark.model
def test_another_model_does_not_continue_the_conversation(
    chat_model_path: Path, cache: Path
) -> None:
    assert chat(cache, stdin="Hello\n").returncode == 0
    # The same weights named by path are another model as far as the memory knows.
    r = chat(cache, "--model", str(chat_model_path), stdin="Hi\n")
    assert r.returncode == 0, r.stderr
    assert "resuming" not in r.stderr
    assert [m.content for m in saved(cache, str(chat_model_path)).messages][:1] == ["Hi"]
    assert saved(cache).messages[0].content == "Hello"  # the first one is untouched


@pytest.mark.model
def test_slash_commands_are_never_sent(chat_model_path: Path, cache: Path) -> None:
    stdin = "/help\n/frobnicate now\n/system Be terse.\n//etc is a folder\n/bye\nNever sent\n"
    r = chat(cache, stdin=stdin)
    assert r.returncode == 0, r.stderr
    assert "/new" in r.stderr and "/system TEXT" in r.stderr  # /help
    assert "unknown command /frobnicate, not sent to the model" in r.stderr
    assert "/bye" in r.stderr.split("unknown command", 1)[1]  # the list comes with it
    assert "system prompt set" in r.stderr
    conv = saved(cache)
    assert [m.content for m in conv.messages][:2] == ["Be terse.", "/etc is a folder"]
    assert roles(conv) == [Role.SYSTEM, Role.USER, Role.ASSISTANT]
    assert len(r.stdout.strip().splitlines()) >= 1

    # /new keeps a system prompt set in this run; without one it empties the conversation.
    r = chat(cache, stdin="/system Be brief.\n/new\n/system\n")
    assert "new conversation with the system prompt" in r.stderr
    assert "system prompt: Be brief." in r.stderr
    assert saved(cache).messages == [Message(Role.SYSTEM, "Be brief.")]
    assert r.stdout == ""
    r = chat(cache, stdin="/new\n/exit\n")
    assert r.returncode == 0 and saved(cache).messages == []


@pytest.mark.model
def test_corrupt_memory_is_named_and_moved_aside_on_new(chat_model_path: Path, cache: Path) -> None:
    path = cache / "chat-memory.json"
    path.write_text('{"v": 1, "c": [', encoding="utf-8")
    r = chat(cache, stdin="Hello\n")
    assert r.returncode == 1
    assert str(path) in r.stderr and "--new" in r.stderr and "Traceback" not in r.stderr
    assert path.read_text(encoding="utf-8") == '{"v": 1, "c": ['

    r = chat(cache, "--new", stdin="Hello\n")
    assert r.returncode == 0, r.stderr
    (aside,) = cache.glob("chat-memory.json.corrupt-*")
    assert aside.read_text(encoding="utf-8") == '{"v": 1, "c": ['
    assert str(aside) in r.stderr
    assert [m.content for m in saved(cache).messages][:1] == ["Hello"]


@pytest.mark.model
def test_long_history_drops_oldest_turns_keeps_system(chat_model_path: Path, cache: Path) -> None:
    # 256 is the smallest context (llama.cpp rounds less up to it). Four turns of about 80
    # tokens: the third and the fourth each outgrow it, so the oldest turn goes twice.
    lines = [f"Turn {i}: " + "please remember these words " * 16 for i in range(4)]
    r = chat(
        cache, "--context-length", "256", "--system", "You are terse.",
        stdin="".join(line + "\n" for line in lines),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "outgrew the 256-token context" in r.stderr and "system prompt is kept" in r.stderr
    conv = saved(cache)
    assert conv.messages[0] == Message(Role.SYSTEM, "You are terse.")
    users = [m.content for m in conv.messages if m.role is Role.USER]
    assert users[-1] == lines[-1].strip()
    assert lines[0].strip() not in users and len(users) < len(lines)
    assert conv.messages[1].role is Role.USER  # whole turns were dropped
    assert len(r.stdout.strip().splitlines()) >= len(lines) // 2  # every turn was answered


@pytest.mark.model
def test_sigint_stops_a_piped_reply_and_the_chat_goes_on(
    chat_model_path: Path, cache: Path
) -> None:
    env = child_env(HF_HUB_OFFLINE="1", LLM_INPROC_CACHE=str(cache))
    cmd = [sys.executable, "-m", "llm_inproc.cli", "chat", *FAST, "--max-tokens", "0"]
    p = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env,
    )  # fmt: skip
    try:
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write("Count from 1 to 500, one number per line.\n")
        p.stdin.flush()
        first = p.stdout.read(3)  # the reply is coming
        p.send_signal(signal.SIGINT)
        out, err = p.communicate("Say hi.\n", timeout=60)
    finally:
        p.kill()
    assert p.returncode == 0, err
    assert "stopped; the partial reply is kept in the conversation" in err
    conv = saved(cache)
    assert roles(conv) == [Role.USER, Role.ASSISTANT, Role.USER, Role.ASSISTANT]
    assert conv.messages[1].content.startswith(first.strip())
    assert conv.messages[3].content and conv.messages[3].content in out


# --- a real terminal ---------------------------------------------------------------------------


# The system calls a process waits for terminal input in: read, poll, select, pselect6, ppoll.
_WAITING_FOR_INPUT = {"x86_64": {0, 7, 23, 270, 271}, "aarch64": {63, 72, 73}}


class Terminal:
    """``llm-inproc chat`` on a pty, read as the user sees it. ``sigint`` is how the chat
    finds SIGINT when it starts: as a shell leaves it (SIG_DFL), or ignored, as a parent
    that starts it in the background without job control leaves it (and CI's did)."""

    def __init__(self, cache: Path, *args: str, sigint: signal.Handlers = signal.SIG_DFL) -> None:
        def take_terminal() -> None:
            # In the child after setsid: the pty becomes its controlling terminal, so ^C
            # sends SIGINT.
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            signal.signal(signal.SIGINT, sigint)

        self.master, slave = os.openpty()
        env = child_env(HF_HUB_OFFLINE="1", LLM_INPROC_CACHE=str(cache), TERM="dumb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llm_inproc.cli", "chat", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
            preexec_fn=take_terminal,  # (the test runs no threads that fork)
        )
        os.close(slave)
        self.seen = ""

    def expect(self, pattern: str, timeout: float = 60) -> str:
        """Read until ``pattern`` (a regex) appears in what came after the last match."""
        deadline = time.monotonic() + timeout
        while (m := re.search(pattern, self.seen)) is None:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.master], [], [], max(0.0, left))
            if not ready:
                raise AssertionError(f"no {pattern!r} in {self.seen!r}")
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # the child closed the terminal
                chunk = b""
            if not chunk:
                raise AssertionError(f"ended without {pattern!r}: {self.seen!r}")
            self.seen += chunk.decode("utf-8", "replace")
        before, self.seen = self.seen[: m.end()], self.seen[m.end() :]
        return before

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def waiting_for_a_key(self, timeout: float = 30) -> bool:
        """Wait until the chat's main thread is blocked waiting for input; False where
        that cannot be seen (no ``/proc/<pid>/syscall``). CPython's readline looks for a
        signal only when that wait is interrupted: one that lands between writing the
        prompt and waiting for a key is lost until the next key, a window no typist hits
        and a test does."""
        waits = _WAITING_FOR_INPUT.get(platform.machine())
        path = Path(f"/proc/{self.proc.pid}/syscall")
        if waits is None or not path.exists():
            return False
        deadline = time.monotonic() + timeout
        while True:
            number = path.read_text().split(" ", 1)[0]
            if number.isdigit() and int(number) in waits:
                return True
            assert time.monotonic() < deadline, f"not waiting for a key: syscall {number}"
            time.sleep(0.005)

    def exited(self, timeout: float) -> bool:
        """Whether the chat ends within ``timeout`` seconds."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def close(self) -> int:
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(AssertionError):
                self.expect(r"\Z.", timeout=1)  # whatever else it wrote
            raise AssertionError(f"still running; the terminal shows {self.seen!r}") from None
        os.close(self.master)
        return rc


@pytest.mark.model
def test_terminal_ctrl_c_stops_a_reply_and_ctrl_d_quits(chat_model_path: Path, cache: Path) -> None:
    ask = "Count from 1 to 500, one number per line."
    term = Terminal(cache, *FAST, "--max-tokens", "0", sigint=signal.SIG_IGN)
    try:
        term.expect(r"/help for commands.*\n")
        term.expect(r"> ")
        term.send(ask + "\r")
        term.expect(re.escape(ask) + r"\s*\r?\n")
        term.expect(r"\d+\D+\d+\D+\d+")  # the reply is coming
        term.send("\x03")
        term.expect(r"stopped; the partial reply is kept in the conversation")
        term.expect(r"> ")
        if term.waiting_for_a_key():
            # Only the main thread may take SIGINT: one taken by another thread never
            # interrupts readline's wait (CI saw five presses in a row ignored).
            tasks = Path(f"/proc/{term.proc.pid}/task")
            for task in tasks.iterdir():
                if task.name != str(term.proc.pid):
                    status = (task / "status").read_text()
                    blocked = int(re.search(r"SigBlk:\s*([0-9a-f]+)", status)[1], 16)
                    assert blocked & (1 << (signal.SIGINT - 1)), f"thread {task.name} takes SIGINT"
            # Ctrl-C at an empty prompt quits, though the chat started with SIGINT ignored.
            # A SIGINT that lands just before readline's select() waits only wakes it on the
            # next key (CPython's readline), so a typist presses again; so does the test.
            for _ in range(3):
                term.send("\x03")
                if term.exited(timeout=10):
                    break
                term.waiting_for_a_key()
            else:
                raise AssertionError(f"Ctrl-C at the prompt did not quit: {term.seen!r}")
        else:
            term.send("\x04")  # (where the wait cannot be seen, Ctrl-D, which is data)
        assert term.close() == 0
    finally:
        term.proc.kill()
    conv = saved(cache)
    assert [m.role for m in conv.messages] == [Role.USER, Role.ASSISTANT]
    assert conv.messages[0].content == ask and re.search(r"\d", conv.messages[1].content)
    history = cache / "chat-history"  # readline's, for the arrow keys of the next run
    assert ask in history.read_text(encoding="utf-8")
    assert history.stat().st_mode & 0o077 == 0

    term = Terminal(cache, *FAST)
    try:
        term.expect(r"resuming the conversation in channel 'cli' \(2 messages\)")
        term.expect(r"> ")
        term.send("\x04")  # Ctrl-D: the prompt's line is ended, and the chat quits
        term.expect(r"\n")
        assert term.close() == 0
    finally:
        term.proc.kill()
