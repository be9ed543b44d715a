"""One place that imports llama_cpp, owns its log callback and collects what it says,
and keeps process signals away from the threads llama.cpp starts.

llama.cpp reports load failures only through its log. The callback runs in the
thread that called into llama.cpp, so each load captures the lines logged by its
own thread: two sessions loading at once never read each other's errors or
offload counts.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import re
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

__all__ = ["LoadLog", "capture", "lib", "signals_blocked"]

logger = logging.getLogger("llm_inproc.llama_cpp")

# ggml_log_level: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5 (continues the last line).
_CONT = 5
_LEVELS = {
    0: logging.DEBUG,
    1: logging.DEBUG,
    2: logging.DEBUG,
    3: logging.WARNING,
    4: logging.ERROR,
}
_OFFLOADED = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")
_ASSIGNED = re.compile(r"layer +(\d+) assigned to device ([^,]+),")


@dataclass
class LoadLog:
    """What llama.cpp said to one thread while it was being watched."""

    errors: list[str] = field(default_factory=list)
    offloaded: tuple[int, int] | None = None
    layers: dict[int, str] = field(default_factory=dict)
    """Layer index -> the device llama.cpp assigned it to (its debug log)."""

    def reason(self, default: str) -> str:
        """The error lines, most telling first, or ``default`` when there were none."""
        lines = [e for e in self.errors if e]
        # llama.cpp logs the precise cause first, then "failed to load model" wrappers.
        return "; ".join(dict.fromkeys(lines)) if lines else default


class _ThreadLog(threading.local):
    partial: str = ""
    level: int = logging.DEBUG
    watcher: LoadLog | None = None


_local = _ThreadLog()


def _handle(level: int, text: str) -> None:
    if level != _CONT:
        _local.level = _LEVELS.get(level, logging.DEBUG)
    _local.partial += text
    if not _local.partial.endswith("\n"):
        return
    lines, _local.partial = _local.partial.rstrip("\n"), ""
    lvl = _local.level
    watcher = _local.watcher
    for line in lines.splitlines():
        if watcher is not None:
            if lvl >= logging.ERROR:
                watcher.errors.append(line.strip())
            m = _OFFLOADED.search(line)
            if m:
                watcher.offloaded = (int(m.group(1)), int(m.group(2)))
            assigned = _ASSIGNED.search(line)
            if assigned:
                watcher.layers[int(assigned.group(1))] = assigned.group(2)
        # llama.cpp's chatter is about its internals; keep the user's stderr quiet.
        logger.log(logging.DEBUG if lvl < logging.ERROR else logging.INFO, "%s", line)


@contextlib.contextmanager
def capture() -> Iterator[LoadLog]:
    """Collect what llama.cpp logs from this thread inside the ``with`` block."""
    previous, _local.watcher = _local.watcher, LoadLog()
    try:
        yield _local.watcher
    finally:
        _local.watcher = previous


_lib: ModuleType | None = None
_callback: Any = None
_init_lock = threading.Lock()


def lib() -> ModuleType:
    """Import llama_cpp once, route its logs through :mod:`logging`, init the backend."""
    global _lib, _callback
    if _lib is not None:
        return _lib
    # Importing llama_cpp starts a native thread: it must leave SIGINT to the main thread
    # too, or Ctrl-C at a chat prompt went unheard (CI saw five presses ignored).
    with _init_lock, signals_blocked():
        if _lib is None:
            import llama_cpp

            @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
            def _on_log(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
                _handle(level, text.decode("utf-8", errors="replace"))

            _callback = _on_log
            llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))
            llama_cpp.llama_backend_init()
            _lib = llama_cpp
    return _lib


@contextlib.contextmanager
def signals_blocked() -> Iterator[None]:
    """Threads started in here (ours, and the workers llama.cpp and OpenMP start) inherit a
    mask that leaves SIGINT and SIGTERM to the main thread, where Python handles them: a
    signal the kernel hands a worker would leave the main thread asleep (in ``readline``,
    say) and Ctrl-C unheard."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no such signal routing
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
