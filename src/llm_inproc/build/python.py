"""Build llama.cpp with a preset: the shared parts and the ``python`` target.

Both build targets take their flags from ``CMakePresets.json`` (see :mod:`.presets`)
and both use the llama.cpp commit the *installed* llama-cpp-python vendors, so
the in-process backend, ``llama-server`` and ``llama-bench`` compare like with like:

- ``python`` (here): reinstall that llama-cpp-python version from source with
  ``CMAKE_ARGS`` set to the preset's flags.
- ``llama-server``: see :mod:`.servers`.

Each step's output goes to a log file (and to ``on_output`` if given); a failed
step raises :class:`~llm_inproc.errors.LLMError` naming the step and the log.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO

from ..errors import LLMError
from .presets import DEFAULT_PRESET, load_presets

__all__ = [
    "DIST_NAME",
    "BuildLog",
    "OutputCallback",
    "PythonBuildPlan",
    "build_python",
    "installed_llama_cpp_version",
    "python_build_plan",
]

logger = logging.getLogger(__name__)

OutputCallback = Callable[[str], None]
"""Receives each line of a build's output (without the newline)."""

DIST_NAME = "llama-cpp-python"
"""The distribution rebuilt and whose sdist vendors llama.cpp."""


def installed_llama_cpp_version() -> str:
    """The installed llama-cpp-python version (read from metadata, nothing imported)."""
    try:
        return metadata.version(DIST_NAME)
    except metadata.PackageNotFoundError as e:
        raise LLMError(f"{DIST_NAME} is not installed; pip install {DIST_NAME}") from e


@dataclass(frozen=True)
class PythonBuildPlan:
    """The exact pip command that rebuilds llama-cpp-python with a preset."""

    preset: str
    """The preset the flags come from."""
    version: str
    """The llama-cpp-python version reinstalled (the installed one)."""
    command: list[str]
    """argv of the pip run."""
    env: dict[str, str]
    """Variables added to the current environment (``CMAKE_ARGS``, ``FORCE_CMAKE``)."""

    def shell(self) -> str:
        """The plan as one POSIX shell line, ready to paste."""
        assignments = [f"{k}={shlex.quote(v)}" for k, v in self.env.items()]
        return " ".join([*assignments, shlex.join(self.command)])


def python_build_plan(
    preset: str = DEFAULT_PRESET, *, version: str | None = None
) -> PythonBuildPlan:
    """What ``build --target python`` runs, without running it."""
    flags = load_presets().get(preset).cmake_args()
    version = version or installed_llama_cpp_version()
    command = [
        sys.executable, "-m", "pip", "install", "--force-reinstall", "--no-deps",
        "--no-binary", DIST_NAME, "--no-cache-dir", f"{DIST_NAME}=={version}",
    ]  # fmt: skip
    env = {"CMAKE_ARGS": " ".join(flags), "FORCE_CMAKE": "1"}
    return PythonBuildPlan(preset, version, command, env)


def build_python(
    preset: str = DEFAULT_PRESET,
    *,
    log_dir: str | os.PathLike[str] | None = None,
    on_output: OutputCallback | None = None,
) -> PythonBuildPlan:
    """Reinstall llama-cpp-python from source with ``preset``'s flags; returns the plan run.

    ``on_output`` first receives ``==>`` lines (what is rebuilt, the exact command, the
    log file), then pip's output.
    """
    plan = python_build_plan(preset)
    logs = Path(log_dir) if log_dir is not None else Path(tempfile.gettempdir())
    with BuildLog(logs / f"python-{plan.version}-{plan.preset}.log", on_output) as log:
        log.step(f"rebuilding {DIST_NAME} {plan.version} with preset {plan.preset}")
        log.step(plan.shell())
        log.step(f"log in {log.path}")
        log.run("pip install", plan.command, env=plan.env)
    return plan


class BuildLog:
    """A build's log file and the caller's live view of it.

    :meth:`step` records a ``==>`` heading; :meth:`run` runs one command, copying its
    output line by line to the log and to ``on_output``. Use it as a context manager.
    """

    def __init__(self, path: Path, on_output: OutputCallback | None = None) -> None:
        self.path = path
        self._on_output = on_output
        self._file: IO[str] | None = None

    def __enter__(self) -> BuildLog:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w", encoding="utf-8")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._file is not None
        self._file.close()

    def _line(self, line: str) -> None:
        assert self._file is not None, "use BuildLog as a context manager"
        self._file.write(line + "\n")
        if self._on_output is not None:
            self._on_output(line)

    def step(self, text: str) -> None:
        """A heading: what happens next."""
        logger.info("%s", text)
        self._line(f"==> {text}")
        assert self._file is not None
        self._file.flush()

    def run(self, step: str, command: Sequence[str], *, env: dict[str, str] | None = None) -> None:
        """Run one step's command; raise LLMError naming ``step`` and the log on failure.

        No time limit: a compile legitimately takes many minutes; pip applies its own
        network timeouts.
        """
        assert self._file is not None, "use BuildLog as a context manager"
        self._file.write(f"$ {shlex.join(command)}\n")
        self._file.flush()
        try:
            proc = subprocess.Popen(
                list(command),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **env} if env else None,
                text=True,
                errors="replace",
                bufsize=1,
            )
        except OSError as e:
            raise LLMError(f"{step} step could not start {command[0]}: {e}; see {self.path}") from e
        assert proc.stdout is not None
        with proc:
            try:
                for line in proc.stdout:
                    self._line(line.rstrip("\n"))
            except BaseException:
                proc.kill()
                raise
            code = proc.wait()
        self._file.flush()
        if code != 0:
            raise LLMError(f"{step} step failed (exit status {code}); full log: {self.path}")
