"""Build llama.cpp's ``rpc-server`` from the same sources as llama-server, and find it.

The binary lends a machine's devices to a model loaded elsewhere (``--rpc``); it must speak
the RPC protocol version of the in-process library, so it is compiled from the sdist that
the installed llama-cpp-python vendors, with a preset's flags plus ``GGML_RPC=ON``, and
cached like llama-server: ``<cache_dir>/llama-server/<version>/rpc-server-<preset>/bin/``
with a ``build.json``, assembled in a temporary directory and renamed into place.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import InvalidInputError, LLMError
from .presets import DEFAULT_PRESET, load_presets
from .python import BuildLog, OutputCallback, installed_llama_cpp_version
from .servers import _EXE, _build_locked, _root, _sources, find_executable

__all__ = [
    "RPC_SERVER_TARGET",
    "build_rpc_server",
    "cached_rpc_server",
    "find_rpc_server",
    "rpc_server_dir",
]


RPC_SERVER_TARGET = "ggml-rpc-server"
"""The CMake target (and binary) of llama.cpp's ``tools/rpc``: ``rpc-server`` before it was
renamed; the name in the vendored sources is used when they say otherwise."""


def rpc_server_dir(
    cache_dir: str | os.PathLike[str], preset: str = DEFAULT_PRESET, *, version: str | None = None
) -> Path:
    """``<cache_dir>/llama-server/<version>/rpc-server-<preset>``, built or not."""
    return _root(cache_dir) / (version or installed_llama_cpp_version()) / f"rpc-server-{preset}"


def cached_rpc_server(
    cache_dir: str | os.PathLike[str], preset: str = DEFAULT_PRESET, *, version: str | None = None
) -> Path | None:
    """The cached rpc-server binary of ``preset`` for the installed (or given) version."""
    directory = rpc_server_dir(cache_dir, preset, version=version)
    if not (directory / "build.json").is_file():
        return None
    found = sorted((directory / "bin").glob(f"*rpc-server{_EXE}"))
    return found[0] if found else None


def find_rpc_server(cache_dir: str | os.PathLike[str], preset: str = DEFAULT_PRESET) -> Path | None:
    """An rpc-server binary: ``$RPC_SERVER``, then ``PATH``, then the build cache."""
    return find_executable(
        "RPC_SERVER",
        ("rpc-server", RPC_SERVER_TARGET),
        "llama.cpp's rpc-server",
        lambda: cached_rpc_server(cache_dir, preset),
    )


def build_rpc_server(
    cache_dir: str | os.PathLike[str],
    preset: str = DEFAULT_PRESET,
    *,
    jobs: int | None = None,
    force: bool = False,
    on_output: OutputCallback | None = None,
) -> Path:
    """Build (or find cached) llama.cpp's rpc-server from the same sources as llama-server,
    with ``preset``'s flags plus ``GGML_RPC=ON``; its path."""
    load_presets().get(preset)
    if jobs is not None and jobs < 1:
        raise InvalidInputError(f"jobs must be at least 1, got {jobs}; omit it to use every CPU")
    version = installed_llama_cpp_version()
    if not force and (found := cached_rpc_server(cache_dir, preset, version=version)):
        return found
    from filelock import FileLock

    version_dir = _root(cache_dir) / version
    version_dir.mkdir(parents=True, exist_ok=True)
    name = f"rpc-server-{preset}"
    with FileLock(str(version_dir / f".{name}.lock")):
        if not force and (found := cached_rpc_server(cache_dir, preset, version=version)):
            return found
        with BuildLog(version_dir / f"{name}.log", on_output) as blog:
            target = _rpc_target(_sources(version_dir, version, blog))
        _build_locked(
            version_dir,
            version,
            preset,
            jobs,
            on_output,
            name=name,
            binaries=(target,),
            extra_flags=("-DGGML_RPC=ON",),
        )
    found = cached_rpc_server(cache_dir, preset, version=version)
    if found is None:  # pragma: no cover - _build_locked raises first
        raise LLMError(f"rpc-server build left no binary in {rpc_server_dir(cache_dir, preset)}")
    return found


def _rpc_target(source: Path) -> str:
    """The rpc-server target's name in these sources (``set(TARGET …)`` in tools/rpc)."""
    try:
        text = (source / "vendor" / "llama.cpp" / "tools" / "rpc" / "CMakeLists.txt").read_text()
    except OSError:
        return RPC_SERVER_TARGET
    m = re.search(r"set\(TARGET\s+([\w-]+)\)", text)
    return m.group(1) if m else RPC_SERVER_TARGET
