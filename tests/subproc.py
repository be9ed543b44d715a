"""Run llm_inproc in a child process, the way a user does: the command line, or a snippet.

A child process is also how tests survive a crash inside llama.cpp: it fails the test
instead of killing the run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

__all__ = ["SRC", "child_env", "run_cli", "run_python"]


def child_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """``base`` (default: this environment) with the checkout's ``src`` importable."""
    return {**(os.environ if base is None else base), "PYTHONPATH": str(SRC), **extra}


def run_cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """``python -m llm_inproc.cli ARGS``; never raises on a non-zero exit."""
    return run_python(None, *args, env=env, stdin=stdin, timeout=timeout)


def run_python(
    code: str | None,
    *args: str,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """``python -c CODE ARGS`` (or the CLI when ``code`` is None), output captured as text."""
    head = ["-m", "llm_inproc.cli"] if code is None else ["-c", code]
    return subprocess.run(
        [sys.executable, *head, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=dict(env) if env is not None else child_env(),
        timeout=timeout,
        check=False,
    )
