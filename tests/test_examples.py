"""The examples run as a user runs them (a child process) and do what they say."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from llm_inproc import Memory, Role
from subproc import child_env

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

pytestmark = pytest.mark.model

_ROW = re.compile(r"^(\w+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+[\d.]+s$")


def _load(name: str) -> ModuleType:
    """The example as a module (its ``__main__`` block does not run)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python examples/NAME.py ARGS`` as a user runs it; it must exit 0."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_bot_serves_every_user_at_once_and_remembers_each_conversation(
    tmp_path: Path, chat_model_path: Path
) -> None:
    bot = _load("bot")
    memory_file = tmp_path / "memory.json"
    proc = _run("bot", str(memory_file))
    out = proc.stdout.splitlines()

    # Every user's messages were shown, and the bot streamed a non-empty reply to each.
    streamed: dict[str, list[str]] = {}
    for line in out:
        m = re.match(r"^bot to (\w+): (.*)$", line)
        if m:
            streamed.setdefault(m[1], []).append(m[2])
    users = {user for user, _ in bot.USERS}
    assert set(streamed) == users, proc.stdout
    for (user, _), turns in bot.USERS.items():
        for text in turns:
            assert f"{user} says: {text}" in out

    # The memory file holds each conversation: system prompt, then user/assistant turns.
    assert memory_file.is_file()
    memory = Memory()
    memory.load_file(memory_file)
    assert len(memory) == len(bot.USERS)
    for conversation in memory:
        turns = bot.USERS[conversation.user, conversation.channel]
        roles = [m.role for m in conversation.messages]
        assert roles == [Role.SYSTEM] + [Role.USER, Role.ASSISTANT] * len(turns)
        assert conversation.messages[0].content == bot.SYSTEM
        assert [m.content for m in conversation.messages[1::2]] == turns
        answers = [m.content for m in conversation.messages[2::2]]
        assert all(a.strip() for a in answers), answers
        # What was streamed to the user is what the memory kept (sentence breaks aside).
        assert _squash("".join(streamed[conversation.user])) == _squash("".join(answers))

    # The summary: every turn generated tokens; each next turn reused its conversation's
    # cache (at least the whole previous prompt) and evaluated less than it reused.
    rows: dict[tuple[str, int], tuple[int, int, int]] = {}
    for line in out:
        m = _ROW.match(line)
        if m:
            rows[m[1], int(m[2])] = (int(m[3]), int(m[4]), int(m[5]))
    assert len(rows) == sum(len(t) for t in bot.USERS.values()), proc.stdout
    for (user, turn), (evaluated, reused, generated) in rows.items():
        assert generated > 0
        if turn == 1:
            assert reused == 0 and evaluated > 0
        else:
            first_prompt = rows[user, 1][0]
            assert reused >= first_prompt, (user, rows)
            assert evaluated < reused
    assert f"memory saved to {memory_file}" in out


def test_agent_calls_the_calculator_and_answers(chat_model_path: Path) -> None:
    proc = _run("agent", "What is 37 times 91?")
    lines = proc.stdout.splitlines()
    calls = [line for line in lines if line.startswith("call    calculator(")]
    results = [line.removeprefix("result  ") for line in lines if line.startswith("result  ")]
    answer = [line for line in lines if line.startswith("answer  ")]
    assert calls and len(results) == len(calls), proc.stdout
    assert "3367" in results[0], proc.stdout  # the function ran on the model's arguments
    assert len(answer) == 1 and answer[0].removeprefix("answer  ").strip(), proc.stdout


def test_search_finds_the_passage_about_plants(chat_model_path: Path) -> None:
    proc = _run("search", "How do plants make their food?")
    matches = [line for line in proc.stdout.splitlines() if line.startswith("match   ")]
    assert len(matches) == 3, proc.stdout
    # A 135M chat model is a weak embedder; a plant passage is still among its best three.
    assert any("plant" in line for line in matches), proc.stdout
